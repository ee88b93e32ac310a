//! Limits and budgets: request and token buckets per consumer, request size, monthly spend
//! caps, and the failed-authentication guard per source address. Counts live behind one
//! storage seam ([`LimitStore`]): in this process (`local`) or shared by every replica through
//! Redis (`shared`: decided from local leases and allowances that a background sync keeps
//! topped up, with a counted fallback to this replica's share while Redis is away).

pub mod allowance;
pub mod backend;
pub mod bucket;
pub(crate) mod consumer_buckets;
pub mod guard;
pub mod lease;
pub mod limiter;
mod limiter_sync;
pub mod local;
pub mod local_budget;
pub mod policy;
pub mod redis;
pub mod redis_link;
pub mod redis_scripts;
pub mod shared;
pub mod shared_sync;
pub mod store;

pub use bucket::{Bucket, Rate};
pub use limiter::{Cost, Limiter, Reservation};
pub use policy::{Policy, Window};
pub use store::{Kind, LimitStore, Refusal, StoreError};
