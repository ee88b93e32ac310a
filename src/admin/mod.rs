//! The admin HTTP listener: health, readiness and Prometheus metrics.

mod http;

pub use http::{router, AdminState};
