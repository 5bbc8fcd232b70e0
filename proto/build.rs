//! Generates the kortix.v1 code. `protoc` comes from `protoc-bin-vendored`, so users never
//! install it; `PROTOC` in the environment still wins for platforms the vendored set lacks.
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut config = tonic_prost_build::Config::new();
    if std::env::var_os("PROTOC").is_none() {
        config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    }
    let root = PathBuf::from("kortix/v1");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&root)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "proto"))
        .collect();
    files.sort();
    // The directory too, so a new .proto file is noticed.
    println!("cargo:rerun-if-changed={}", root.display());
    for f in &files {
        println!("cargo:rerun-if-changed={}", f.display());
    }
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    // No transport constructors: the generated `connect(dst)` would clash with the
    // `AgentGateway.Connect` RPC, and every caller builds its own TLS channel anyway.
    tonic_prost_build::configure()
        .build_transport(false)
        .file_descriptor_set_path(out.join("kortix_v1_descriptor.bin"))
        .compile_with_config(config, &files, &[PathBuf::from(".")])?;
    Ok(())
}
