//! Command implementations for the `keygate` binary (everything except `serve`).

pub mod admin;
pub mod check;
pub mod key_record;
pub mod keys;
pub mod leaks;
pub mod operator_token;
mod vault_store;
