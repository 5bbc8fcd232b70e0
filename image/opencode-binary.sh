#!/bin/sh
# Prints the path of OpenCode's native binary inside an npm prefix that holds
# `opencode-ai@VERSION` (`npm install --prefix PREFIX opencode-ai@VERSION`): the first
# platform package whose binary runs here and reports VERSION. The binary is a self-contained
# executable, so the runtime layer needs neither node nor the npm wrapper.
#
#   image/opencode-binary.sh PREFIX VERSION
#
# Used by image/Dockerfile and image/assemble-rootfs.sh alike.
set -eu

if [ $# -ne 2 ]; then
    echo "usage: $0 PREFIX VERSION" >&2
    exit 2
fi
prefix=$1
version=$2

case "$(uname -m)" in
    x86_64 | amd64) arch=x64 ;;
    aarch64 | arm64) arch=arm64 ;;
    *) arch=$(uname -m) ;;
esac

home=$(mktemp -d)
trap 'rm -rf "$home"' EXIT
for package in "opencode-linux-$arch" "opencode-linux-$arch-baseline" \
    "opencode-linux-$arch-musl" "opencode-linux-$arch-baseline-musl"; do
    bin=$prefix/node_modules/$package/bin/opencode
    if [ -x "$bin" ] && [ "$(HOME=$home "$bin" --version 2>/dev/null)" = "$version" ]; then
        echo "$bin"
        exit 0
    fi
done
echo "$0: no OpenCode $version binary that runs here under $prefix/node_modules" >&2
exit 1
