//! Provider credential rotation, the transaction half: one credential's [`Rotator`] claims
//! its rotation record, mints (or accepts) a key through the provider's adapter,
//! health-checks it, stores it as a new KV version, switches every replica and confirms
//! ([`Fleet`], the admin API behind a seam), and revokes the old key after the grace period,
//! exactly once. Failures roll back; a run that dies is finished or undone by the next.
//! Emergency revocation lives here too. The pieces it drives are in `crate::rotation`.

pub mod context;
pub mod emergency;
pub mod fleet;
pub mod recover;
pub mod rollback;
pub mod transaction;

pub use context::{RotateError, Rotator, Tx};
pub use fleet::{Event, Expect, Fleet, FleetError};
