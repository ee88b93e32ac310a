//! The registry: an immutable snapshot of consumers indexed by key hash. It is rebuilt on
//! reload and swapped atomically by the gate, so a lookup never takes a lock.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

use super::identities::{IdentityIndex, IdentityLookup};
use super::key_table::{KeyEntry, KeyTable, NEVER};
use super::profile::Interner;
pub use super::profile::{Binding, Profile, Provider};
use super::{KeyEnv, KeyHash, KeyId, ParsedKey};
use crate::config::{
    Authentication, Config, ConsumerConfig, ConsumerStatus, ProviderConfig, TeamConfig,
};
use crate::identity::SpiffeId;
use crate::limits::Policy;

/// A consumer as the request path needs it: its own name, status and keys, and a shared
/// [`Profile`] (team, environment, provider, credential, scope, limits, binding) that
/// consumers configured alike hold one copy of. Profile fields read as the consumer's own
/// (`consumer.provider`), through `Deref`.
#[derive(Debug)]
pub struct Consumer {
    pub name: Arc<str>,
    pub status: ConsumerStatus,
    pub canary: bool,
    /// Where the consumer's key ids are in [`Registry::key_ids`]: one array for all, so a
    /// consumer holds 8 bytes rather than a pointer, a length and a 32-byte heap block.
    key_ids: KeyIds,
    profile: Arc<Profile>,
}

#[derive(Debug, Clone, Copy)]
struct KeyIds {
    start: u32,
    len: u32,
}

impl std::ops::Deref for Consumer {
    type Target = Profile;

    fn deref(&self) -> &Profile {
        &self.profile
    }
}

fn unix_ms(at: SystemTime) -> i64 {
    match at.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_millis()).unwrap_or(NEVER - 1),
        Err(before) => {
            let ms = before.duration().as_nanos().div_ceil(1_000_000);
            i64::try_from(ms).map_or(i64::MIN, |ms| -ms)
        }
    }
}

/// The outcome of looking a presented key up.
#[derive(Debug)]
pub enum Lookup<'a> {
    /// The consumer and the hash of the key it was found by.
    Found(&'a Arc<Consumer>, KeyHash),
    Unknown,
    Expired(&'a Arc<Consumer>),
}

/// What a workload identity finds.
#[derive(Debug)]
pub enum IdentityFound<'a> {
    Found(&'a Arc<Consumer>),
    Unknown,
    Ambiguous,
}

#[derive(Debug, Default)]
pub struct Registry {
    keys: KeyTable,
    consumers: Vec<Arc<Consumer>>,
    /// Every consumer's key ids, consumer after consumer.
    key_ids: Vec<KeyId>,
    /// Indices into `consumers` sorted by name, for the work done per consumer (detectors,
    /// admin): 4 bytes per consumer where a hash map by name took about 50.
    by_name: Vec<u32>,
    /// The consumers that workload identities authenticate on their own.
    identities: IdentityIndex,
    providers: BTreeMap<String, Arc<Provider>>,
}

impl Registry {
    /// Builds a snapshot from a validated config's providers and inline consumers.
    pub fn from_config(config: &Config) -> Registry {
        Registry::build(&config.providers, &config.teams, config.inline_consumers())
    }

    /// Builds a snapshot from providers and validated consumers (from a file or a store).
    pub fn build(
        providers: &BTreeMap<String, ProviderConfig>,
        teams: &BTreeMap<String, TeamConfig>,
        consumers: &[ConsumerConfig],
    ) -> Registry {
        let built: BTreeMap<String, Arc<Provider>> = providers
            .iter()
            .map(|(name, p)| {
                let (header, prefix) = match &p.inject {
                    Some(inject) => (inject.header.clone(), inject.prefix.clone()),
                    None => {
                        let (h, pre) = p.kind.default_injection();
                        (h.to_string(), pre.to_string())
                    }
                };
                let provider = Provider {
                    name: name.as_str().into(),
                    kind: p.kind,
                    inject_header: header,
                    inject_prefix: prefix,
                };
                (name.clone(), Arc::new(provider))
            })
            .collect();
        let mut registry = Registry {
            providers: built,
            ..Registry::default()
        };
        registry.consumers.reserve_exact(consumers.len());
        registry
            .keys
            .reserve(consumers.iter().map(|c| c.keys.len()).sum());
        let mut shared = Interner::default();
        for c in consumers {
            let (Some(provider), Some(credential)) = (
                registry.providers.get(&c.provider),
                providers
                    .get(&c.provider)
                    .and_then(|p| p.credentials.get(&c.environment)),
            ) else {
                continue; // unreachable after validation; never panic on config
            };
            let Some(provider_config) = providers.get(&c.provider) else {
                continue;
            };
            let team = c
                .team
                .as_deref()
                .and_then(|t| teams.get(t).map(|cfg| (t, cfg)));
            let limits = Policy::resolve(&c.limits, &provider_config.limits, team);
            let index = registry.consumers.len();
            let Ok(position) = u32::try_from(index) else {
                break; // over four billion consumers: unreachable, never panic on config
            };
            let profile = Profile {
                team: c.team.as_deref().map(|t| shared.string(t)),
                environment: shared.string(&c.environment),
                provider: provider.clone(),
                credential: shared.string(credential),
                routes: shared.routes(&c.scope.routes),
                limits: shared.policy(limits),
                binding: shared.binding(Binding::of(c)),
            };
            let key_ids = registry.add_key_ids(c.keys.iter().map(|k| k.hash.key_id()));
            registry.consumers.push(Arc::new(Consumer {
                name: c.name.as_str().into(),
                status: c.status,
                canary: c.canary,
                key_ids,
                profile: shared.profile(profile),
            }));
            if c.authentication == Authentication::Identity {
                registry.identities.add(&c.identities, index);
            }
            for key in &c.keys {
                let entry = KeyEntry {
                    consumer: position,
                    env: key.env,
                    expires_ms: key.expires.map_or(NEVER, unix_ms),
                };
                if !registry.keys.insert(&key.hash, entry) {
                    tracing::error!(consumer = %c.name, key_id = %key.hash.key_id(), "a key shares its digest's first 16 bytes with another key, or there are 2^31 expiry times; it is refused");
                }
            }
        }
        registry.keys.seal();
        registry.key_ids.shrink_to_fit();
        registry.identities.seal();
        let mut by_name: Vec<u32> = (0..registry.consumers.len())
            .filter_map(|i| u32::try_from(i).ok())
            .collect();
        by_name.sort_unstable_by(|a, b| {
            let name = |i: &u32| &registry.consumers[*i as usize].name;
            name(a).cmp(name(b))
        });
        registry.by_name = by_name;
        registry
    }

    /// The consumer a workload identity authenticates on its own (`authentication: identity`).
    pub fn lookup_identity(&self, id: &SpiffeId<'_>) -> IdentityFound<'_> {
        match self.identities.lookup(id) {
            IdentityLookup::Found(i) => self
                .consumers
                .get(i)
                .map_or(IdentityFound::Unknown, IdentityFound::Found),
            IdentityLookup::Unknown => IdentityFound::Unknown,
            IdentityLookup::Ambiguous => IdentityFound::Ambiguous,
        }
    }

    /// The consumer with this name.
    pub fn consumer(&self, name: &str) -> Option<&Arc<Consumer>> {
        let at = self
            .by_name
            .binary_search_by(|i| {
                self.consumers
                    .get(*i as usize)
                    .map_or(std::cmp::Ordering::Less, |c| (*c.name).cmp(name))
            })
            .ok()?;
        self.consumers.get(*self.by_name.get(at)? as usize)
    }

    /// Hashes the key and finds its consumer. A key whose env prefix differs from the one it
    /// was registered with is unknown.
    pub fn lookup(&self, key: &ParsedKey<'_>, now: SystemTime) -> Lookup<'_> {
        let hash = KeyHash::of(key.as_str());
        let Some(entry) = self.keys.get(&hash) else {
            return Lookup::Unknown;
        };
        let Some(consumer) = self.consumers.get(entry.consumer as usize) else {
            return Lookup::Unknown;
        };
        if entry.env != key.env {
            return Lookup::Unknown;
        }
        if entry.expires_ms != NEVER && entry.expires_ms <= unix_ms(now) {
            return Lookup::Expired(consumer);
        }
        Lookup::Found(consumer, hash)
    }

    /// The consumer holding the key with this hash and environment, expired or not (a leak
    /// report names a key by its hash; the key itself may never reach keygate).
    pub fn consumer_of_key(&self, hash: &KeyHash, env: KeyEnv) -> Option<&Arc<Consumer>> {
        let entry = self.keys.get(hash)?;
        if entry.env != env {
            return None;
        }
        self.consumers.get(entry.consumer as usize)
    }

    /// Ids of `consumer`'s keys (never the hashes' full text), for listings.
    pub fn key_ids(&self, consumer: &Consumer) -> &[KeyId] {
        let KeyIds { start, len } = consumer.key_ids;
        let (start, len) = (start as usize, len as usize);
        self.key_ids.get(start..start + len).unwrap_or_default()
    }

    /// Appends key ids; where they are.
    fn add_key_ids(&mut self, ids: impl Iterator<Item = KeyId>) -> KeyIds {
        let before = self.key_ids.len();
        self.key_ids.extend(ids);
        let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        KeyIds {
            start: count(before),
            len: count(self.key_ids.len() - before),
        }
    }

    pub fn consumers(&self) -> &[Arc<Consumer>] {
        &self.consumers
    }

    pub fn providers(&self) -> impl Iterator<Item = &Arc<Provider>> {
        self.providers.values()
    }

    /// Every credential reference some consumer needs; readiness waits for all of them.
    pub fn referenced_credentials(&self) -> Vec<Arc<str>> {
        let mut refs: Vec<Arc<str>> = self
            .consumers
            .iter()
            .map(|c| c.credential.clone())
            .collect();
        refs.sort();
        refs.dedup();
        refs
    }

    /// The config fields (`providers.NAME.credentials.ENVIRONMENT`) through which consumers
    /// use `reference`, so an unavailable credential is reported where it is configured.
    pub fn credential_fields(&self, reference: &str) -> Vec<String> {
        let mut fields: Vec<String> = self
            .consumers
            .iter()
            .filter(|c| &*c.credential == reference)
            .map(|c| {
                format!(
                    "providers.{}.credentials.{}",
                    c.provider.name, c.environment
                )
            })
            .collect();
        fields.sort();
        fields.dedup();
        fields
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::{unix_ms, Consumer, NEVER};

    /// Pins the consumer's size: with the `Arc`'s counts, 56 bytes, one 64-byte heap block.
    #[test]
    fn a_consumer_stays_small() {
        let size = std::mem::size_of::<Consumer>();
        assert!(size <= 40, "{size}");
    }

    #[test]
    fn expiry_times_round_down_to_the_millisecond_on_both_sides_of_the_epoch() {
        let epoch = SystemTime::UNIX_EPOCH;
        assert_eq!(unix_ms(epoch), 0);
        assert_eq!(unix_ms(epoch + Duration::from_micros(1_900)), 1);
        assert_eq!(unix_ms(epoch - Duration::from_micros(500)), -1);
        assert_eq!(unix_ms(epoch - Duration::from_millis(3)), -3);
        assert!(unix_ms(epoch + Duration::from_secs(u64::MAX / 4)) < NEVER);
    }
}
