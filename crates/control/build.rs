//! Compiles the control protocol with protox (a protobuf compiler in Rust), so the
//! build needs no protoc.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/gatehouse/control/v1/control.proto";
    println!("cargo:rerun-if-changed={proto}");
    let files = protox::compile([proto], ["proto"])?;
    tonic_prost_build::configure()
        // Shared, not copied, when the same bytes go to many proxies.
        .bytes(".gatehouse.control.v1.DeltaResponse.compressed_resources")
        .compile_fds(files)?;
    Ok(())
}
