//! Command implementations for the `keygate` binary (everything except `serve`).

pub mod admin;
pub mod check;
pub mod credentials;
pub mod fleet;
pub mod key_record;
pub mod keys;
pub mod leaks;
pub mod operator_token;
pub mod rotate;
pub mod rotator_setup;
mod vault_store;
