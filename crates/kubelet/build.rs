//! Generates the CRI and containerd gRPC clients from the project's own .proto subsets
//! (proto/). Needs `protoc` (Debian's protobuf-compiler; the README's setup installs it).

fn main() {
    println!("cargo:rerun-if-changed=proto");
    println!("cargo:rerun-if-changed=pause/pause.c");
    if std::process::Command::new(std::env::var("PROTOC").unwrap_or_else(|_| "protoc".into())).arg("--version").output().is_err() {
        panic!("protoc not found: install Debian's protobuf-compiler (apt-get install protobuf-compiler) or set PROTOC");
    }
    tonic_prost_build::configure().build_server(true).compile_protos(&["proto/cri.proto"], &["proto"]).expect("compile CRI protos");
    let containerd = ["types", "content", "images", "leases"].map(|p| format!("proto/containerd/{p}.proto"));
    tonic_prost_build::configure().build_server(false).compile_protos(&containerd, &["proto/containerd".to_string()]).expect("compile containerd protos");
    build_pause();
}

/// The sandbox ("pause") program: a static binary so it runs in an image with nothing else.
fn build_pause() {
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("pause");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let status = std::process::Command::new(&cc)
        .args(["-static", "-Os", "-s", "-o"])
        .arg(&out)
        .arg("pause/pause.c")
        .status()
        .unwrap_or_else(|e| panic!("running {cc} to build the pause program: {e} (install gcc and libc6-dev)"));
    assert!(status.success(), "building pause/pause.c with {cc} -static failed (is libc6-dev installed?)");
}
