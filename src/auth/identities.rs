//! The consumers that workload identities authenticate (`authentication: identity`), indexed:
//! exact SPIFFE IDs in a map, patterns in a list most specific first. Config validation keeps
//! two equally specific patterns of different consumers from overlapping.

use std::collections::HashMap;

use crate::identity::{IdentityPattern, SpiffeId};

/// Identity → consumer position in the registry.
#[derive(Debug, Default)]
pub struct IdentityIndex {
    exact: HashMap<String, usize>,
    /// Most literal segments first.
    patterns: Vec<(IdentityPattern, usize)>,
}

/// What an identity finds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdentityLookup {
    Found(usize),
    Unknown,
    /// Two consumers' equally specific patterns match (validation prevents it; a consumer
    /// store bypassing validation must not make keygate pick one).
    Ambiguous,
}

impl IdentityIndex {
    /// Adds the identities of the consumer at `consumer`.
    pub fn add(&mut self, patterns: &[IdentityPattern], consumer: usize) {
        for pattern in patterns {
            if pattern.is_exact() {
                self.exact.entry(pattern.to_string()).or_insert(consumer);
            } else {
                self.patterns.push((pattern.clone(), consumer));
            }
        }
    }

    /// Orders the patterns for lookup; call once after the last [`IdentityIndex::add`].
    pub fn seal(&mut self) {
        self.patterns
            .sort_by_key(|(pattern, _)| std::cmp::Reverse(pattern.specificity()));
    }

    pub fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.patterns.is_empty()
    }

    /// The consumer `id` authenticates.
    pub fn lookup(&self, id: &SpiffeId<'_>) -> IdentityLookup {
        if let Some(&consumer) = self.exact.get(id.as_str()) {
            return IdentityLookup::Found(consumer);
        }
        let mut found: Option<(usize, usize)> = None;
        for (pattern, consumer) in &self.patterns {
            let specificity = pattern.specificity();
            match found {
                Some((best, _)) if specificity < best => break,
                _ if !pattern.matches(id) => {}
                Some((_, owner)) if owner != *consumer => return IdentityLookup::Ambiguous,
                _ => found = Some((specificity, *consumer)),
            }
        }
        found.map_or(IdentityLookup::Unknown, |(_, c)| IdentityLookup::Found(c))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn patterns(list: &[&str]) -> Vec<IdentityPattern> {
        list.iter().map(|p| p.parse().unwrap()).collect()
    }

    #[test]
    fn the_most_specific_pattern_decides() {
        let mut index = IdentityIndex::default();
        index.add(&patterns(&["spiffe://td/ns/ml/sa/*"]), 0);
        index.add(&patterns(&["spiffe://td/ns/ml/sa/trainer"]), 1);
        index.add(&patterns(&["spiffe://td/ns/*/*/*"]), 2);
        index.seal();
        let lookup = |s: &str| index.lookup(&SpiffeId::parse(s).unwrap());
        assert_eq!(
            lookup("spiffe://td/ns/ml/sa/trainer"),
            IdentityLookup::Found(1)
        );
        assert_eq!(
            lookup("spiffe://td/ns/ml/sa/other"),
            IdentityLookup::Found(0)
        );
        assert_eq!(lookup("spiffe://td/ns/web/sa/x"), IdentityLookup::Found(2));
        assert_eq!(lookup("spiffe://td/ns/web/x"), IdentityLookup::Unknown);
        assert_eq!(lookup("spiffe://other/ns/ml/sa/x"), IdentityLookup::Unknown);
    }

    #[test]
    fn equally_specific_matches_of_two_consumers_are_ambiguous() {
        let mut index = IdentityIndex::default();
        index.add(&patterns(&["spiffe://td/ns/ml/sa/*"]), 0);
        index.add(&patterns(&["spiffe://td/ns/*/sa/a"]), 1);
        index.seal();
        let id = SpiffeId::parse("spiffe://td/ns/ml/sa/a").unwrap();
        assert_eq!(index.lookup(&id), IdentityLookup::Ambiguous);
    }
}
