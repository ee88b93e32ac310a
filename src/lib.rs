//! keygate: an Envoy ext_proc / ext_authz sidecar that authenticates scoped consumer keys,
//! swaps in the real AI provider key, and makes every call observable.
//!
//! The decision core ([`gate::Gate`]) is protocol-independent; [`envoy`] translates Envoy's
//! messages at the edge.

pub mod accounting;
mod address_map;
pub mod admin;
pub mod audit;
pub mod auth;
pub mod cli;
pub mod config;
pub mod consumer_store;
pub mod containment;
pub mod decision;
pub mod denial;
pub mod detect;
pub mod envoy;
pub mod exchange;
pub mod gate;
pub mod heap;
pub mod limits;
pub mod notify;
pub mod path;
pub mod providers;
pub mod reload;
pub mod request;
pub mod runtime;
pub mod scope;
pub mod secrets;
pub mod server;
pub mod telemetry;
pub mod usage;
pub mod vault;
