//! keygate's [`Verdict`] as Envoy dynamic metadata: a `google.protobuf.Struct` of the known
//! fields, published under the namespace `keygate` (ext_proc names it; ext_authz's namespace
//! is its filter's, see docs/envoy.md).

use envoy_types::pb::google::protobuf::value::Kind;
use envoy_types::pb::google::protobuf::{Struct, Value};

use crate::verdict::{self, Verdict};

/// The dynamic metadata namespace keygate writes.
pub const NAMESPACE: &str = "keygate";

/// The namespace of the handover to the response observer, apart from the verdict: the
/// observer filter forwards only this one, so each of its messages (one per response body
/// chunk) carries one number instead of the whole verdict.
pub const HANDOVER_NAMESPACE: &str = "keygate.handover";

/// The field naming the parked exchange a response observer claims (a number; not logged).
pub const TICKET: &str = "ticket";

/// The verdict's fields as a Struct.
pub fn fields(verdict: &Verdict) -> Struct {
    Struct {
        fields: verdict
            .fields()
            .into_iter()
            .map(|(name, value)| {
                let kind = match value {
                    verdict::Value::Text(s) => Kind::StringValue(s),
                    verdict::Value::Number(n) => Kind::NumberValue(n),
                    verdict::Value::Flag(b) => Kind::BoolValue(b),
                };
                (name.to_string(), Value { kind: Some(kind) })
            })
            .collect(),
    }
}

/// The verdict under the `keygate` namespace (ext_proc's `dynamic_metadata`, whose top-level
/// keys are namespaces), and the ticket of an exchange parked for the response observer under
/// [`HANDOVER_NAMESPACE`].
pub fn namespaced(verdict: &Verdict, ticket: Option<u64>) -> Struct {
    let mut namespaces = vec![(NAMESPACE.to_string(), struct_value(fields(verdict)))];
    if let Some(ticket) = ticket {
        let number = Value {
            kind: Some(Kind::NumberValue(ticket as f64)),
        };
        let handover = Struct {
            fields: [(TICKET.to_string(), number)].into_iter().collect(),
        };
        namespaces.push((HANDOVER_NAMESPACE.to_string(), struct_value(handover)));
    }
    Struct {
        fields: namespaces.into_iter().collect(),
    }
}

fn struct_value(fields: Struct) -> Value {
    Value {
        kind: Some(Kind::StructValue(fields)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_verdict_under_keygate() {
        let verdict = Verdict {
            outcome: Some("allowed"),
            consumer: Some("team-a".into()),
            ..Verdict::default()
        };
        let outer = namespaced(&verdict, None);
        let Some(Kind::StructValue(inner)) = outer.fields[NAMESPACE].kind.clone() else {
            panic!("keygate is a struct");
        };
        assert_eq!(
            inner.fields["consumer"].kind,
            Some(Kind::StringValue("team-a".into()))
        );
        assert_eq!(inner.fields.len(), 2);
        assert!(!outer.fields.contains_key(HANDOVER_NAMESPACE));
    }

    #[test]
    fn the_ticket_apart_from_the_verdict() {
        let outer = namespaced(&Verdict::default(), Some(7));
        let Some(Kind::StructValue(handover)) = outer.fields[HANDOVER_NAMESPACE].kind.clone()
        else {
            panic!("the handover is a struct");
        };
        assert_eq!(handover.fields.len(), 1);
        assert_eq!(handover.fields[TICKET].kind, Some(Kind::NumberValue(7.0)));
        let Some(Kind::StructValue(verdict)) = outer.fields[NAMESPACE].kind.clone() else {
            panic!("keygate is a struct");
        };
        assert!(!verdict.fields.contains_key(TICKET));
    }
}
