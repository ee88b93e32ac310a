//! The Envoy edges: translate ext_proc and ext_authz messages to a [`RequestView`] and a
//! [`Decision`](crate::decision::Decision) back to Envoy's wire types. No policy lives here.
//!
//! [`RequestView`]: crate::request::RequestView

pub mod ext_authz;
pub mod ext_proc;
mod headers;

pub use ext_authz::AuthzService;
pub use ext_proc::ProcService;
