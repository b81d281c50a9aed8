//! Generates the gRPC stubs from proto/weir.proto (the API server) and
//! proto/agent.proto (each agent's node API) with protox (pure Rust, no protoc).
fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/weir.proto");
    println!("cargo:rerun-if-changed=proto/agent.proto");
    let fds = protox::compile(["proto/weir.proto", "proto/agent.proto"], ["proto"])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)?;
    Ok(())
}
