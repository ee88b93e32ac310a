//! Compiles the admin API with a vendored `protoc`, so a fresh machine needs nothing extra.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    std::env::set_var("PROTOC", protoc);
    println!("cargo:rerun-if-changed=proto/keygate/admin/v1/admin.proto");
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_protos(&["proto/keygate/admin/v1/admin.proto"], &["proto"])?;
    Ok(())
}
