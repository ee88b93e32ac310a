//! Command implementations for the `keygate` binary (everything except `serve`).

pub mod admin;
pub mod check;
pub mod key_record;
pub mod keys;
mod vault_store;
