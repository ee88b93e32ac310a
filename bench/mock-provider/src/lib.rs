//! Deterministic mock of the OpenAI and Anthropic HTTP APIs.
//!
//! Used by keygate's integration tests and benchmarks as the upstream that
//! sits behind a real Envoy. Responses are shaped like the real providers'
//! (the official Python SDKs parse them), token usage is computed by a simple
//! documented rule (see [`usage`]), and faults can be injected per request
//! with `x-mock-*` headers (see [`inject`]).

pub mod admin;
pub mod anthropic;
pub mod azure;
pub mod inject;
pub mod keys;
pub mod openai;
pub mod record;
pub mod response;
pub mod responses;
pub mod server;
pub mod sse;
pub mod text;
pub mod usage;

pub use server::{router, Config};
