//! Whether an authenticated consumer may be used by this caller: a key bound to workload
//! identities must come from one of them, and a consumer with `allowed_sources` only from
//! those addresses. An unknown identity or address never passes a check that needs it.

use super::registry::Consumer;
use crate::config::Authentication;
use crate::denial_binding::BindingDenial;
use crate::request::Caller;

/// Checks the caller against the consumer's identities and allowed sources.
pub fn check(consumer: &Consumer, caller: &Caller<'_>) -> Result<(), BindingDenial> {
    let binding = &consumer.binding;
    if binding.authentication != Authentication::Key {
        let bound = caller
            .identity
            .is_some_and(|id| binding.identities.iter().any(|p| p.matches(&id)));
        if !bound {
            return Err(BindingDenial::IdentityMismatch {
                presented: caller.identity.map(|id| id.as_str().to_string()),
            });
        }
    }
    if !binding.allowed_sources.is_empty() {
        let allowed = caller
            .address
            .is_some_and(|ip| binding.allowed_sources.iter().any(|net| net.contains(ip)));
        if !allowed {
            return Err(BindingDenial::SourceNotAllowed {
                address: caller.address,
            });
        }
    }
    Ok(())
}
