//! keygate: an Envoy ext_proc / ext_authz sidecar that authenticates scoped consumer keys,
//! swaps in the real AI provider key, and makes every call observable.
//!
//! The modules form four layers; each imports only from the layers below it (a test,
//! `tests/layers.rs`, enforces this):
//! 1. rules and parsers: [`config`], key format and ids, [`path`], [`scope`], [`usage`]
//!    parsers and pricing, bucket math, [`denial`], plus foundations ([`telemetry`] names,
//!    [`serde_util`], [`tasks`]);
//! 2. state and sources: the [`auth`] registry and overrides, [`limits`] backends,
//!    [`accounting`] and its ledger, [`secrets`], [`vault`], [`detect`]ors, [`notify`],
//!    [`audit`], the [`overrides`] store and broadcast;
//! 3. the protocol-free [`pipeline`], the [`gate`], [`containment`] and the override
//!    service;
//! 4. edges and planes: [`envoy`], [`admin`], [`cli`], [`app`], [`server`], [`reload`].

pub mod accounting;
mod address_map;
pub mod admin;
pub mod app;
pub mod audit;
pub mod auth;
pub mod cidr;
pub mod cli;
pub mod config;
pub mod consumer_state;
pub mod consumer_store;
pub mod containment;
pub mod denial;
pub mod denial_binding;
pub mod detect;
pub mod envoy;
pub mod gate;
pub mod heap;
pub mod identity;
pub mod leaks;
pub mod limits;
pub mod model_scope;
pub mod mutation;
pub mod notify;
pub mod overrides;
pub mod path;
pub mod pipeline;
pub mod providers;
pub mod reload;
pub mod request;
pub mod retry_after;
pub mod rotation;
pub mod rotator;
pub mod runtime;
pub mod scope;
pub mod secrets;
pub mod serde_util;
pub mod server;
pub mod tasks;
pub mod telemetry;
pub mod tls;
pub mod usage;
pub mod vault;
pub mod verdict;
