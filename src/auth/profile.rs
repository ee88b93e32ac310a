//! What consumers configured alike share: team, environment, provider, credential, scope,
//! limits and binding, as one [`Profile`] per distinct combination. Each part is interned
//! first, so two profiles are equal exactly when their parts are the same allocations, and a
//! million consumers of a few teams hold a few profiles (a consumer is then 64 bytes, not 144).

use std::collections::HashMap;
use std::sync::Arc;

use crate::cidr::Cidr;
use crate::config::{Authentication, ConsumerConfig};
use crate::identity::IdentityPattern;
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
    pub(super) fn of(c: &ConsumerConfig) -> Binding {
        Binding {
            authentication: c.authentication,
            identities: c.identities.clone(),
            allowed_sources: c.allowed_sources.clone(),
            models: c.scope.models.clone().unwrap_or_default(),
        }
    }
}

/// The part of a consumer that others configured alike share (read through the consumer).
#[derive(Debug)]
pub struct Profile {
    pub team: Option<Arc<str>>,
    pub environment: Arc<str>,
    pub provider: Arc<Provider>,
    /// e.g. `openai/production`: which credential the cache serves for this consumer.
    pub credential: Arc<str>,
    pub routes: Arc<[RoutePattern]>,
    pub limits: Arc<Policy>,
    /// Where the consumer may be used from and what authenticates it.
    pub binding: Arc<Binding>,
}

impl Profile {
    /// The profile's identity: the addresses of its (interned) parts.
    fn key(&self) -> [usize; 7] {
        fn at<T: ?Sized>(a: &Arc<T>) -> usize {
            Arc::as_ptr(a).cast::<()>() as usize
        }
        [
            self.team.as_ref().map_or(0, at),
            at(&self.environment),
            at(&self.provider),
            at(&self.credential),
            at(&self.routes),
            at(&self.limits),
            at(&self.binding),
        ]
    }
}

/// One shared copy of each distinct value while a registry is built.
#[derive(Default)]
pub(super) struct Interner {
    strings: HashMap<String, Arc<str>>,
    routes: HashMap<Vec<RoutePattern>, Arc<[RoutePattern]>>,
    policies: HashMap<Policy, Arc<Policy>>,
    bindings: HashMap<Binding, Arc<Binding>>,
    profiles: HashMap<[usize; 7], Arc<Profile>>,
}

impl Interner {
    pub fn string(&mut self, s: &str) -> Arc<str> {
        if let Some(shared) = self.strings.get(s) {
            return shared.clone();
        }
        let shared: Arc<str> = s.into();
        self.strings.insert(s.to_string(), shared.clone());
        shared
    }

    pub fn routes(&mut self, routes: &[RoutePattern]) -> Arc<[RoutePattern]> {
        if let Some(shared) = self.routes.get(routes) {
            return shared.clone();
        }
        let shared: Arc<[RoutePattern]> = routes.into();
        self.routes.insert(routes.to_vec(), shared.clone());
        shared
    }

    pub fn binding(&mut self, binding: Binding) -> Arc<Binding> {
        shared(&mut self.bindings, binding)
    }

    pub fn policy(&mut self, policy: Policy) -> Arc<Policy> {
        shared(&mut self.policies, policy)
    }

    /// The one shared copy of `profile`, whose parts must come from this interner.
    pub fn profile(&mut self, profile: Profile) -> Arc<Profile> {
        self.profiles
            .entry(profile.key())
            .or_insert_with(|| Arc::new(profile))
            .clone()
    }
}

/// The one shared copy of `value` in `map`, made on first sight.
fn shared<T: std::hash::Hash + Eq + Clone>(map: &mut HashMap<T, Arc<T>>, value: T) -> Arc<T> {
    if let Some(shared) = map.get(&value) {
        return shared.clone();
    }
    let shared = Arc::new(value.clone());
    map.insert(value, shared.clone());
    shared
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::{Binding, Interner, Profile, Provider};
    use crate::limits::Policy;
    use crate::providers::ProviderKind;

    fn profile(shared: &mut Interner, provider: &Arc<Provider>, team: &str) -> Arc<Profile> {
        let parts = Profile {
            team: Some(shared.string(team)),
            environment: shared.string("production"),
            provider: provider.clone(),
            credential: shared.string("openai/production"),
            routes: shared.routes(&[]),
            limits: shared.policy(Policy {
                requests: Vec::new(),
                tokens: Vec::new(),
                max_request_bytes: 1 << 20,
                budget_micro_usd: None,
                team_budget: None,
                default_max_tokens: 4096,
            }),
            binding: shared.binding(Binding::default()),
        };
        shared.profile(parts)
    }

    #[test]
    fn consumers_configured_alike_share_one_profile() {
        let provider = Arc::new(Provider {
            name: "openai".into(),
            kind: ProviderKind::Openai,
            inject_header: "authorization".into(),
            inject_prefix: "Bearer ".into(),
        });
        let mut shared = Interner::default();
        let ml = profile(&mut shared, &provider, "ml");
        assert!(Arc::ptr_eq(&ml, &profile(&mut shared, &provider, "ml")));
        assert!(!Arc::ptr_eq(&ml, &profile(&mut shared, &provider, "web")));
    }
}
