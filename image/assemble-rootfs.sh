#!/usr/bin/env bash
# Assembles the runtime layer of image/Dockerfile into a directory, without a container
# engine, so that `kortix server --isolation namespaces --sandbox-root DIR` boots sessions on
# exactly the image's layout (see image/README.md for how the two correspond).
#
#   image/assemble-rootfs.sh [--agent PATH] [--opencode PREFIX] [--base-only] OUT_DIR
#
#   --agent PATH       the kortix-agent binary to install [default: build a static one with
#                      cargo, as the Dockerfile's build stage does]
#   --opencode PREFIX  an npm prefix holding opencode-ai@1.18.33 (the directory above
#                      node_modules) [default: npm install it into a temporary prefix]
#   --base-only        only the Debian part (steps 1-4 and 7): a base image to import into a
#                      container engine that has no registry to pull debian:bookworm-slim from
#
# The Dockerfile's runtime stage is debian:bookworm-slim plus `apt-get install
# --no-install-recommends git ca-certificates`. This script takes the same Debian packages —
# the essential/required set, git and ca-certificates, and everything they depend on — from
# this host's dpkg database (so the host must be Debian-based; bookworm matches the image),
# minus documentation as in the slim image, then adds what those packages' maintainer scripts
# would have generated (passwd, the CA bundle, alternatives, ld.so.cache), the agent, OpenCode
# and the mount points.
set -euo pipefail

OPENCODE_VERSION=1.18.33
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname "$here")

usage() { sed -n '2,14p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }
die() {
    echo "assemble-rootfs: $*" >&2
    exit 1
}

agent=""
opencode=""
out=""
base_only=""
while [ $# -gt 0 ]; do
    case "$1" in
        --agent) agent=${2:?--agent needs a path}; shift 2 ;;
        --opencode) opencode=${2:?--opencode needs a prefix}; shift 2 ;;
        --base-only) base_only=1; shift ;;
        -h | --help) usage; exit 0 ;;
        -*) usage >&2; exit 2 ;;
        *) [ -z "$out" ] || die "one output directory only"; out=$1; shift ;;
    esac
done
[ -n "$out" ] || { usage >&2; exit 2; }
command -v dpkg-query >/dev/null || die "needs a Debian-based host (dpkg-query not found)"
if [ -e "$out" ] && [ -n "$(ls -A "$out" 2>/dev/null)" ]; then
    die "$out exists and is not empty"
fi
mkdir -p "$out"
out=$(cd "$out" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# --- 1. The packages: essential/required ones, git, ca-certificates, and their dependencies.
dpkg-query -W -f='${Package}\t${db:Status-Abbrev}\t${Essential}\t${Priority}\t${Provides}\t${Pre-Depends}, ${Depends}\n' \
    >"$work/db"
awk -F'\t' '
    function name(dep) { sub(/^[ \t]+/, "", dep); sub(/[ \t(:].*$/, "", dep); return dep }
    $2 ~ /^ii/ {
        installed[$1] = 1; deps[$1] = $6
        n = split($5, provides, ",")
        for (i = 1; i <= n; i++) { p = name(provides[i]); if (p != "" && !(p in provider)) provider[p] = $1 }
        if ($3 == "yes" || $4 == "required") queue[++tail] = $1
    }
    END {
        queue[++tail] = "git"; queue[++tail] = "ca-certificates"
        for (head = 1; head <= tail; head++) {
            pkg = queue[head]
            if (!(pkg in installed)) { if (pkg in provider) pkg = provider[pkg]; else { missing[queue[head]] = 1; continue } }
            if (pkg in seen) continue
            seen[pkg] = 1; print pkg
            n = split(deps[pkg], groups, ",")
            for (i = 1; i <= n; i++) {
                # The first alternative that is installed (or provided) wins.
                m = split(groups[i], alts, "|"); pick = ""
                for (j = 1; j <= m; j++) {
                    a = name(alts[j])
                    if (a in installed || a in provider) { pick = a; break }
                }
                if (pick != "") queue[++tail] = pick
            }
        }
        for (p in missing) print "missing: " p > "/dev/stderr"
    }' "$work/db" >"$work/packages"
for required in git ca-certificates libc6; do
    grep -qx "$required" "$work/packages" || die "$required is not installed on this host (apt-get install $required)"
done
echo "assemble-rootfs: $(wc -l <"$work/packages") packages" >&2

# --- 2. Their files, with merged-/usr links resolved and documentation left out.
sed_args=()
for d in bin sbin lib lib32 lib64 libx32; do
    if [ -L "/$d" ]; then
        ln -s "$(readlink "/$d")" "$out/$d"
        target=$(readlink -f "/$d")
        sed_args+=(-e "s|^/$d/|$target/|" -e "\\|^/$d\$|d")
    fi
done
merged_usr() { if [ ${#sed_args[@]} -gt 0 ]; then sed "${sed_args[@]}"; else cat; fi; }
xargs -a "$work/packages" dpkg-query -L 2>/dev/null |
    grep '^/' |
    grep -Ev '^/\.$|^/usr/share/(doc|man|info|locale|lintian|linda|groff)(/|$)' |
    merged_usr |
    sort -u >"$work/files"
tar -C / --no-recursion --ignore-failed-read -cf - -T "$work/files" 2>/dev/null | tar -C "$out" -xpf -

# --- 3. What the packages' maintainer scripts generate on installation.
mkdir -p "$out/etc/ssl" "$out/etc/alternatives"
cat >"$out/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/bash
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin
EOF
cat >"$out/etc/group" <<'EOF'
root:x:0:
tty:x:5:
staff:x:50:
users:x:100:
nogroup:x:65534:
EOF
if [ -f "$out/usr/share/base-files/nsswitch.conf" ]; then
    cp "$out/usr/share/base-files/nsswitch.conf" "$out/etc/nsswitch.conf"
elif [ -f /etc/nsswitch.conf ]; then
    cp /etc/nsswitch.conf "$out/etc/nsswitch.conf"
fi
# update-ca-certificates' output: the bundle and the hashed links into /usr/share.
if [ -d /etc/ssl/certs ]; then cp -a /etc/ssl/certs "$out/etc/ssl/"; fi
if [ -f /etc/ca-certificates.conf ]; then cp /etc/ca-certificates.conf "$out/etc/"; fi
# update-alternatives' links (awk -> mawk, ...) for the programs the layer has.
for link in /etc/alternatives/*; do
    target=$(readlink "$link") || continue
    if [ -e "$out$target" ] || [ -L "$out$target" ]; then
        cp -P "$link" "$out/etc/alternatives/"
    fi
done
for dir in /usr/bin /usr/sbin; do
    find "$dir" -maxdepth 1 -type l -lname '/etc/alternatives/*' | while read -r link; do
        name=$(basename "$(readlink "$link")")
        if [ -L "$out/etc/alternatives/$name" ] && [ ! -e "$out$link" ] && [ ! -L "$out$link" ]; then
            cp -P "$link" "$out$link"
        fi
    done
done
# Placeholders the sandbox (or the container engine) binds the host's files onto.
: >"$out/etc/resolv.conf"
: >"$out/etc/hosts"
: >"$out/etc/hostname"

# --- 4. Mount points and the directories the Dockerfile creates.
mkdir -p "$out"/{proc,sys,dev,run,root,home,workspace,tmp,var/tmp,usr/local/bin,opt}
chmod 1777 "$out/tmp" "$out/var/tmp"
chmod 0700 "$out/root"

if [ -n "$base_only" ]; then
    ldconfig -r "$out" 2>/dev/null || true
    echo "assemble-rootfs: base only, $(du -sh "$out" | cut -f1) in $out" >&2
    exit 0
fi

# --- 5. kortix-agent, static as in the Dockerfile's build stage unless one is given.
if [ -z "$agent" ]; then
    target=$(rustc -vV | sed -n 's/^host: //p')
    echo "assemble-rootfs: building a static kortix-agent for $target" >&2
    (cd "$repo" && RUSTFLAGS="-C target-feature=+crt-static" cargo build --release --locked -p kortix-agent --target "$target")
    agent="${CARGO_TARGET_DIR:-$repo/target}/$target/release/kortix-agent"
fi
[ -x "$agent" ] || die "no kortix-agent at $agent"
install -m 0755 "$agent" "$out/usr/local/bin/kortix-agent"
# A dynamically linked agent needs its libraries in the layer too.
if ldd "$agent" >/dev/null 2>&1; then
    ldd "$agent" | awk '/=> \// { print $3 } /^\t\// { print $1 }' | while read -r lib; do
        real=$(readlink -f "$lib")
        inside=$(readlink -f "$(dirname "$lib")")/$(basename "$lib")
        if [ ! -e "$out$inside" ]; then
            echo "assemble-rootfs: adding $lib for the (dynamically linked) agent" >&2
            mkdir -p "$out$(dirname "$inside")"
            cp "$real" "$out$inside"
        fi
    done
fi

# --- 6. OpenCode, pinned: its native binary at /opt/opencode/bin/opencode.
if [ -z "$opencode" ]; then
    opencode=$work/opencode
    echo "assemble-rootfs: installing opencode-ai@$OPENCODE_VERSION from npm" >&2
    npm install --prefix "$opencode" --no-audit --no-fund --no-save "opencode-ai@$OPENCODE_VERSION" >&2
fi
bin=$("$here/opencode-binary.sh" "$opencode" "$OPENCODE_VERSION")
install -D -m 0755 "$bin" "$out/opt/opencode/bin/opencode"
echo "$OPENCODE_VERSION" >"$out/opt/opencode/VERSION"
ln -s /opt/opencode/bin/opencode "$out/usr/local/bin/opencode"

# --- 7. The dynamic linker's cache for the layer's libraries.
ldconfig -r "$out" 2>/dev/null || echo "assemble-rootfs: ldconfig -r failed; the linker falls back to its default paths" >&2

echo "assemble-rootfs: $(du -sh "$out" | cut -f1) in $out" >&2
