//! The registry: an immutable snapshot of consumers indexed by key hash. It is rebuilt on
//! reload and swapped atomically by the gate, so a lookup never takes a lock.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::SystemTime;

use super::identities::{IdentityIndex, IdentityLookup};
use super::{KeyEnv, KeyHash, KeyId, ParsedKey};
use crate::cidr::Cidr;
use crate::config::{
    Authentication, Config, ConsumerConfig, ConsumerStatus, ProviderConfig, TeamConfig,
};
use crate::identity::{IdentityPattern, SpiffeId};
use crate::limits::Policy;
use crate::model_scope::ModelPattern;
use crate::providers::ProviderKind;
use crate::scope::RoutePattern;

/// A provider as the request path needs it: how to inject its credential.
#[derive(Debug)]
pub struct Provider {
    pub name: Arc<str>,
    pub kind: ProviderKind,
    pub inject_header: String,
    pub inject_prefix: String,
}

/// A consumer as the request path needs it. What many consumers have in common (team,
/// environment, scope, limits) is shared between them, so a million consumers cost a
/// million names and key entries, not a million copies of the same routes.
#[derive(Debug)]
pub struct Consumer {
    pub name: Arc<str>,
    pub team: Option<Arc<str>>,
    pub environment: Arc<str>,
    pub provider: Arc<Provider>,
    /// e.g. `openai/production`: which credential the cache serves for this consumer.
    pub credential: Arc<str>,
    pub status: ConsumerStatus,
    pub routes: Arc<[RoutePattern]>,
    pub limits: Arc<Policy>,
    /// The consumer's key ids (`kid_…`).
    key_ids: Box<[KeyId]>,
    pub canary: bool,
    /// Where the consumer may be used from and what authenticates it (shared, like routes).
    pub binding: Arc<Binding>,
}

/// What authenticates a consumer, where it may call from, and which models it may call.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Binding {
    pub authentication: Authentication,
    pub identities: Vec<IdentityPattern>,
    /// Empty: any address.
    pub allowed_sources: Vec<Cidr>,
    /// Empty: any model.
    pub models: Vec<ModelPattern>,
}

impl Binding {
    fn of(c: &ConsumerConfig) -> Binding {
        Binding {
            authentication: c.authentication,
            identities: c.identities.clone(),
            allowed_sources: c.allowed_sources.clone(),
            models: c.scope.models.clone().unwrap_or_default(),
        }
    }
}

impl Consumer {
    /// Ids of the consumer's keys (never the hashes' full text), for listings.
    pub fn key_ids(&self) -> &[KeyId] {
        &self.key_ids
    }
}

/// One shared copy of each distinct value while a registry is built.
#[derive(Default)]
struct Interner {
    strings: HashMap<String, Arc<str>>,
    routes: HashMap<Vec<RoutePattern>, Arc<[RoutePattern]>>,
    policies: HashMap<Policy, Arc<Policy>>,
    bindings: HashMap<Binding, Arc<Binding>>,
}

impl Interner {
    fn string(&mut self, s: &str) -> Arc<str> {
        if let Some(shared) = self.strings.get(s) {
            return shared.clone();
        }
        let shared: Arc<str> = s.into();
        self.strings.insert(s.to_string(), shared.clone());
        shared
    }

    fn routes(&mut self, routes: &[RoutePattern]) -> Arc<[RoutePattern]> {
        if let Some(shared) = self.routes.get(routes) {
            return shared.clone();
        }
        let shared: Arc<[RoutePattern]> = routes.into();
        self.routes.insert(routes.to_vec(), shared.clone());
        shared
    }

    fn binding(&mut self, binding: Binding) -> Arc<Binding> {
        if let Some(shared) = self.bindings.get(&binding) {
            return shared.clone();
        }
        let shared = Arc::new(binding.clone());
        self.bindings.insert(binding, shared.clone());
        shared
    }

    fn policy(&mut self, policy: Policy) -> Arc<Policy> {
        if let Some(shared) = self.policies.get(&policy) {
            return shared.clone();
        }
        let shared = Arc::new(policy.clone());
        self.policies.insert(policy, shared.clone());
        shared
    }
}

#[derive(Debug)]
struct KeyEntry {
    consumer: usize,
    env: KeyEnv,
    expires: Option<SystemTime>,
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
    keys: HashMap<KeyHash, KeyEntry>,
    consumers: Vec<Arc<Consumer>>,
    /// Index into `consumers` by name, for the work done per consumer (detectors, admin).
    by_name: HashMap<Arc<str>, u32>,
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
        registry.by_name.reserve(consumers.len());
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
            let name: Arc<str> = c.name.as_str().into();
            registry.by_name.insert(name.clone(), position);
            registry.consumers.push(Arc::new(Consumer {
                name,
                team: c.team.as_deref().map(|t| shared.string(t)),
                environment: shared.string(&c.environment),
                provider: provider.clone(),
                credential: shared.string(credential),
                status: c.status,
                routes: shared.routes(&c.scope.routes),
                limits: shared.policy(limits),
                key_ids: c.keys.iter().map(|k| k.hash.key_id()).collect(),
                canary: c.canary,
                binding: shared.binding(Binding::of(c)),
            }));
            if c.authentication == Authentication::Identity {
                registry.identities.add(&c.identities, index);
            }
            for key in &c.keys {
                registry.keys.insert(
                    key.hash,
                    KeyEntry {
                        consumer: index,
                        env: key.env,
                        expires: key.expires,
                    },
                );
            }
        }
        registry.identities.seal();
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
        let index = *self.by_name.get(name)?;
        self.consumers.get(index as usize)
    }

    /// Hashes the key and finds its consumer. A key whose env prefix differs from the one it
    /// was registered with is unknown.
    pub fn lookup(&self, key: &ParsedKey<'_>, now: SystemTime) -> Lookup<'_> {
        let hash = KeyHash::of(key.as_str());
        let Some(entry) = self.keys.get(&hash) else {
            return Lookup::Unknown;
        };
        let Some(consumer) = self.consumers.get(entry.consumer) else {
            return Lookup::Unknown;
        };
        if entry.env != key.env {
            return Lookup::Unknown;
        }
        match entry.expires {
            Some(at) if at <= now => Lookup::Expired(consumer),
            _ => Lookup::Found(consumer, hash),
        }
    }

    /// The consumer holding the key with this hash and environment, expired or not (a leak
    /// report names a key by its hash; the key itself may never reach keygate).
    pub fn consumer_of_key(&self, hash: &KeyHash, env: KeyEnv) -> Option<&Arc<Consumer>> {
        let entry = self.keys.get(hash)?;
        if entry.env != env {
            return None;
        }
        self.consumers.get(entry.consumer)
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
