//! Compiles proto/arbor/v1/*.proto with protox (pure Rust, no protoc binary).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["arbor/v1/arbor.proto"];
    for p in &protos {
        println!("cargo:rerun-if-changed={p}");
    }
    let fds = protox::compile(protos, ["."])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)?;
    Ok(())
}
