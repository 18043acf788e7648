//! Compiles the etcd v3 API subset of `arbor bench --etcd`
//! (proto/etcd_kv.proto) with protox (pure Rust, no protoc binary): client
//! stubs only.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["proto/etcd_kv.proto"];
    for p in &protos {
        println!("cargo:rerun-if-changed={p}");
    }
    let fds = protox::compile(protos, ["proto"])?;
    tonic_prost_build::configure()
        .build_server(false)
        .build_client(true)
        .compile_fds(fds)?;
    Ok(())
}
