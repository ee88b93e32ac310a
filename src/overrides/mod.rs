//! Operator overrides (suspensions, revocations) at runtime: the action vocabulary, the
//! durable state file, the fan-out to every replica, and the one service that applies an
//! action, persists, broadcasts, audits and notifies it.

pub mod action;
pub mod broadcast;
pub mod service;
pub mod store;

pub use action::Action;
pub use broadcast::Broadcaster;
pub use service::{Actor, OverrideError, OverrideService};
pub use store::{OverrideStore, StateError};

#[cfg(test)]
mod store_tests;
