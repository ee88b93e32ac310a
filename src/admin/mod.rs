//! Operating keygate: the admin HTTP listener (health, readiness, metrics) and the admin gRPC
//! API (suspend, resume, revoke, list, refresh), which acts through the override service.

pub mod bootstrap;
mod calls;
pub mod credentials;
pub mod denied_calls;
pub mod github_alerts;
pub mod grpc;
mod http;
pub mod identity;
pub mod operators;

/// Generated from `proto/keygate/admin/v1/admin.proto`.
#[allow(clippy::all, missing_docs)]
pub mod pb {
    tonic::include_proto!("keygate.admin.v1");
}

pub use http::{router, AdminState};
