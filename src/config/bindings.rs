//! Checks of what authenticates a consumer (key, workload identity, or both), where it may
//! call from and which models it may call; each reported with its field path.

use super::{Authentication, ConsumerConfig};
use crate::identity::IdentityPattern;

/// Checks one consumer's binding; the returned field path is relative (`.identities`).
pub fn validate_binding(consumer: &ConsumerConfig) -> Result<(), (String, String)> {
    let err = |field: &str, msg: &str| Err((field.to_string(), msg.to_string()));
    match (consumer.authentication, consumer.identities.is_empty()) {
        (Authentication::Key, false) => {
            return err(
                ".identities",
                "identities are used only with authentication: identity (no key) or key_and_identity (keys bound to them); set one",
            )
        }
        (Authentication::Identity | Authentication::KeyAndIdentity, true) => {
            return err(
                ".identities",
                "list the workload identities (SPIFFE IDs, e.g. spiffe://cluster.local/ns/NAMESPACE/sa/*) that authenticate this consumer",
            )
        }
        _ => {}
    }
    if consumer.authentication == Authentication::Identity && !consumer.keys.is_empty() {
        return err(
            ".keys",
            "a consumer authenticated by identity alone holds no keys; use authentication: key_and_identity to require both",
        );
    }
    if consumer.scope.models.as_ref().is_some_and(Vec::is_empty) {
        return err(
            ".scope.models",
            "list at least one model (or pattern such as text-embedding-3-*), or leave models out to allow every model",
        );
    }
    Ok(())
}

/// The identities of consumers authenticated by identity alone must name each workload at
/// most once at each specificity: of two patterns that match one identity, the one with more
/// literal segments decides; two equally specific ones would make the caller ambiguous.
/// `label(i)` names consumer `i`.
pub fn validate_identity_overlaps(
    consumers: &[ConsumerConfig],
    label: impl Fn(usize) -> String,
) -> Result<(), (String, String)> {
    let mut exact: std::collections::HashMap<&IdentityPattern, (usize, usize)> =
        std::collections::HashMap::new();
    let mut wildcards: Vec<(&IdentityPattern, usize, usize)> = Vec::new();
    let identity_only = consumers
        .iter()
        .enumerate()
        .filter(|(_, c)| c.authentication == Authentication::Identity);
    for (i, consumer) in identity_only {
        for (k, pattern) in consumer.identities.iter().enumerate() {
            let at = || format!("{}.identities[{k}]", label(i));
            let clash = |owner: usize, j: usize| {
                let other = consumers
                    .get(owner)
                    .and_then(|c| c.identities.get(j))
                    .map(ToString::to_string)
                    .unwrap_or_default();
                format!(
                    "{pattern} and {}.identities[{j}] ({other}) can name the same workload equally specifically; make one more specific or remove one",
                    label(owner)
                )
            };
            if pattern.is_exact() {
                if let Some((owner, j)) = exact.insert(pattern, (i, k)) {
                    if owner != i {
                        return Err((at(), clash(owner, j)));
                    }
                }
                continue;
            }
            for (other, owner, j) in &wildcards {
                let same = *owner == i;
                if !same && other.specificity() == pattern.specificity() && other.overlaps(pattern)
                {
                    return Err((at(), clash(*owner, *j)));
                }
            }
            wildcards.push((pattern, i, k));
        }
    }
    Ok(())
}
