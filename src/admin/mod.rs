//! Operating keygate: the admin HTTP listener (health, readiness, metrics), and the admin gRPC
//! API with its durable overrides and their fan-out to every replica.

pub mod bootstrap;
pub mod broadcast;
pub mod grpc;
mod http;
pub mod state;

/// Generated from `proto/keygate/admin/v1/admin.proto`.
#[allow(clippy::all, missing_docs)]
pub mod pb {
    tonic::include_proto!("keygate.admin.v1");
}

pub use http::{router, AdminState};
