//! Consumer authentication: the key format, hashing, where keys arrive, and the registry.

pub mod binding;
pub mod extract;
pub mod hash;
pub mod identities;
pub mod key;
pub mod key_id;
mod key_table;
pub mod overrides;
pub mod profile;
pub mod registry;

pub use hash::KeyHash;
pub use key::{KeyEnv, KeyFormatError, ParsedKey};
pub use key_id::{KeyId, KeyIdError};
pub use overrides::{OverrideState, Overrides};
pub use profile::Profile;
pub use registry::{Binding, Consumer, IdentityFound, Lookup, Provider, Registry};
