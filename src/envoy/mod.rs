//! The Envoy edges: translate ext_proc and ext_authz messages to a
//! [`RequestView`](crate::request::RequestView) for the [`pipeline`](crate::pipeline), and its
//! answers back to Envoy's wire types. No policy lives here.

pub mod ext_authz;
pub mod ext_proc;
mod headers;
mod metadata;
mod observer;

pub use ext_authz::AuthzService;
pub use ext_proc::{ProcService, Responses};
