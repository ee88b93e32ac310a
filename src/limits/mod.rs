//! Limits and budgets: request and token buckets per consumer, request size, monthly spend
//! caps, and the failed-authentication guard per source address. Counts live behind one
//! storage seam ([`LimitStore`]): in this process (`local`) or in Redis shared by every
//! replica (`redis`, with a counted local fallback).

pub mod backend;
pub mod bucket;
pub mod guard;
pub mod limiter;
pub mod local;
pub mod policy;
pub mod redis;
pub mod store;

pub use bucket::{Bucket, Rate};
pub use limiter::{Cost, Limiter, Reservation};
pub use policy::{Policy, Window};
pub use store::{Kind, LimitStore, Refusal, StoreError};
