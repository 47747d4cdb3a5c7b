//! Compiles the control-plane protos with protox (pure Rust; no protoc binary needed).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["proto/trustmesh/v1/identity.proto", "proto/trustmesh/v1/config.proto"];
    for p in protos {
        println!("cargo:rerun-if-changed={p}");
    }
    let fds = protox::compile(protos, ["proto"])?;
    tonic_prost_build::configure().build_client(true).build_server(true).compile_fds(fds)?;
    Ok(())
}
