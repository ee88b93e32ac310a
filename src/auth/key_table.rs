//! Where a presented key's consumer, environment and expiry are found: a table indexed by the
//! first 16 bytes of the key's SHA-256 digest, in 24-byte entries.
//!
//! Why so small: a hash table grows by powers of two, so at a million keys it has 2^21
//! buckets and each key pays for its entry about twice. With the whole digest and a 16-byte
//! value (48-byte entries) that was about 103 B per key; now it is about 52 B.
//!
//! Why 16 bytes of the digest are enough: to be taken for a stored key, a presented key's
//! digest must match it in 128 bits, a second preimage of SHA-256 truncated to 128 bits
//! (2^128 work). Two configured keys (random, 192 bits each) share a prefix with probability
//! under 10^-26 at a million keys; if they ever do, the table keeps the first and refuses the
//! second ([`KeyTable::insert`] says so, and the registry logs it).
//!
//! Why no SipHash: SipHash protects a table from keys an attacker chooses. A client chooses
//! the key it presents but not its digest, which is already uniform, so the table hashes by
//! taking the digest's first 8 bytes.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hash, Hasher};

use subtle::ConstantTimeEq;

use super::hash::KeyHash;
use super::key::KeyEnv;

/// Never expires.
pub(super) const NEVER: i64 = i64::MAX;
/// The environment bit of [`Entry::expiry_env`]; the other 31 bits index the expiries.
const TEST_ENV: u32 = 1 << 31;

/// The first 16 bytes of a key's digest.
#[derive(Clone, Copy, Eq)]
struct Prefix([u8; 16]);

/// Constant-time, as [`KeyHash`]'s own comparison: a lookup leaks nothing about the stored
/// digest it ends at.
impl PartialEq for Prefix {
    fn eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl Hash for Prefix {
    fn hash<H: Hasher>(&self, state: &mut H) {
        let mut first = [0u8; 8];
        first.copy_from_slice(&self.0[..8]);
        state.write_u64(u64::from_le_bytes(first));
    }
}

/// Passes a digest's first 8 bytes through as the hash.
#[derive(Default)]
struct PrefixHasher(u64);

impl Hasher for PrefixHasher {
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }

    /// Not reached by [`Prefix`]; folds anything else in, so the hasher is still a hasher.
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// 8 bytes: the consumer's index, and the index of the key's expiry with the key's
/// environment in the top bit.
#[derive(Debug, Clone, Copy)]
struct Entry {
    consumer: u32,
    expiry_env: u32,
}

/// What the table holds for one key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct KeyEntry {
    pub consumer: u32,
    pub env: KeyEnv,
    /// Milliseconds after the Unix epoch, rounded down; [`NEVER`] for none.
    pub expires_ms: i64,
}

/// Keys by digest prefix.
#[derive(Debug, Default)]
pub(super) struct KeyTable {
    entries: HashMap<Prefix, Entry, BuildHasherDefault<PrefixHasher>>,
    /// The distinct expiry times; index 0 is [`NEVER`].
    expiries: Vec<i64>,
    /// Expiry time → its index, while the table is built.
    building: HashMap<i64, u32>,
}

impl std::fmt::Debug for Prefix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Prefix(..)")
    }
}

impl KeyTable {
    /// Room for `keys` keys without growing.
    pub fn reserve(&mut self, keys: usize) {
        self.entries.reserve(keys);
    }

    /// Adds a key; false (and nothing added) if its digest prefix is taken already, or if the
    /// table holds 2^31 distinct expiry times.
    pub fn insert(&mut self, hash: &KeyHash, entry: KeyEntry) -> bool {
        let prefix = Prefix(hash.prefix());
        if self.entries.contains_key(&prefix) {
            return false;
        }
        let Some(expiry) = self.expiry_index(entry.expires_ms) else {
            return false;
        };
        let env = match entry.env {
            KeyEnv::Live => 0,
            KeyEnv::Test => TEST_ENV,
        };
        self.entries.insert(
            prefix,
            Entry {
                consumer: entry.consumer,
                expiry_env: expiry | env,
            },
        );
        true
    }

    fn expiry_index(&mut self, expires_ms: i64) -> Option<u32> {
        if self.expiries.is_empty() {
            self.expiries.push(NEVER);
            self.building.insert(NEVER, 0);
        }
        if let Some(i) = self.building.get(&expires_ms) {
            return Some(*i);
        }
        let i = u32::try_from(self.expiries.len())
            .ok()
            .filter(|i| *i < TEST_ENV)?;
        self.expiries.push(expires_ms);
        self.building.insert(expires_ms, i);
        Some(i)
    }

    /// Ends building: frees what only building needed.
    pub fn seal(&mut self) {
        self.building = HashMap::new();
        self.expiries.shrink_to_fit();
    }

    /// The key with this digest, if the table holds it.
    pub fn get(&self, hash: &KeyHash) -> Option<KeyEntry> {
        let entry = self.entries.get(&Prefix(hash.prefix()))?;
        let index = (entry.expiry_env & !TEST_ENV) as usize;
        Some(KeyEntry {
            consumer: entry.consumer,
            env: if entry.expiry_env & TEST_ENV == 0 {
                KeyEnv::Live
            } else {
                KeyEnv::Test
            },
            expires_ms: self.expiries.get(index).copied().unwrap_or(i64::MIN),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(consumer: u32, env: KeyEnv, expires_ms: i64) -> KeyEntry {
        KeyEntry {
            consumer,
            env,
            expires_ms,
        }
    }

    #[test]
    fn an_entry_is_24_bytes_with_its_key() {
        assert_eq!(std::mem::size_of::<(Prefix, Entry)>(), 24);
    }

    #[test]
    fn keys_come_back_with_their_consumer_environment_and_expiry() {
        let mut table = KeyTable::default();
        let (a, b, c) = (KeyHash::of("a"), KeyHash::of("b"), KeyHash::of("c"));
        assert!(table.insert(&a, entry(7, KeyEnv::Test, 1_700_000_000_123)));
        assert!(table.insert(&b, entry(8, KeyEnv::Live, NEVER)));
        assert!(table.insert(&c, entry(9, KeyEnv::Live, 1_700_000_000_123)));
        table.seal();
        assert_eq!(
            table.get(&a),
            Some(entry(7, KeyEnv::Test, 1_700_000_000_123))
        );
        assert_eq!(table.get(&b), Some(entry(8, KeyEnv::Live, NEVER)));
        assert_eq!(
            table.get(&c),
            Some(entry(9, KeyEnv::Live, 1_700_000_000_123))
        );
        assert_eq!(table.expiries.len(), 2, "equal expiries are stored once");
        assert_eq!(table.get(&KeyHash::of("d")), None);
    }

    #[test]
    fn a_second_key_with_a_taken_prefix_is_refused_and_the_first_kept() {
        let mut table = KeyTable::default();
        let a = KeyHash::of("a");
        assert!(table.insert(&a, entry(1, KeyEnv::Live, NEVER)));
        assert!(!table.insert(&a, entry(2, KeyEnv::Test, 5)));
        assert_eq!(table.get(&a), Some(entry(1, KeyEnv::Live, NEVER)));
    }
}
