//! Limits and budgets: request and token buckets per consumer, request size, monthly spend
//! caps, and the failed-authentication guard per source address. State lives in memory
//! (`local`) or in Redis shared by every replica (`redis`, with a counted local fallback).

pub mod bucket;
pub mod limiter;
pub mod local;
pub mod policy;
pub mod redis;

pub use bucket::{Bucket, Rate};
pub use limiter::{Limiter, Reservation};
pub use policy::{Policy, Window};
