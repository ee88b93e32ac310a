//! keygate's [`Verdict`] as Envoy dynamic metadata: a `google.protobuf.Struct` of the known
//! fields, published under the namespace `keygate` (ext_proc names it; ext_authz's namespace
//! is its filter's, see docs/envoy.md).

use envoy_types::pb::google::protobuf::value::Kind;
use envoy_types::pb::google::protobuf::{Struct, Value};

use crate::verdict::{self, Verdict};

/// The dynamic metadata namespace keygate writes.
pub const NAMESPACE: &str = "keygate";

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
/// keys are namespaces), with the ticket of an exchange parked for the response observer.
pub fn namespaced(verdict: &Verdict, ticket: Option<u64>) -> Struct {
    let mut fields = fields(verdict);
    if let Some(ticket) = ticket {
        let number = Value {
            kind: Some(Kind::NumberValue(ticket as f64)),
        };
        fields.fields.insert(TICKET.to_string(), number);
    }
    let inner = Value {
        kind: Some(Kind::StructValue(fields)),
    };
    Struct {
        fields: [(NAMESPACE.to_string(), inner)].into_iter().collect(),
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
    }
}
