//! Header conversions shared by both edges.

use std::net::{IpAddr, SocketAddr};

use envoy_types::pb::envoy::config::core::v3::header_value_option::HeaderAppendAction;
use envoy_types::pb::envoy::config::core::v3::{HeaderMap, HeaderValue, HeaderValueOption};

use crate::decision::HeaderMutation;
use crate::request::Header;

/// Borrows Envoy's header list, preferring `raw_value` (what Envoy sends when encoding raw).
/// Pseudo-headers are returned separately by the callers that need them.
pub fn view(map: Option<&HeaderMap>) -> Vec<Header<'_>> {
    map.map(|m| {
        m.headers
            .iter()
            .map(|h| Header {
                name: h.key.as_str(),
                value: if h.raw_value.is_empty() {
                    h.value.as_bytes()
                } else {
                    h.raw_value.as_slice()
                },
            })
            .collect()
    })
    .unwrap_or_default()
}

/// The value of a pseudo-header such as `:path`, as text.
pub fn pseudo<'a>(headers: &[Header<'a>], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|h| h.name == name)
        .and_then(|h| std::str::from_utf8(h.value).ok())
}

/// How the value is carried: ext_proc reads only `raw_value`, ext_authz reads only `value`.
#[derive(Debug, Clone, Copy)]
pub enum ValueField {
    Raw,
    Text,
}

/// Header options that replace any existing value: the credential must never be appended
/// next to a client-sent one.
pub fn set_options(mutation: &HeaderMutation, field: ValueField) -> Vec<HeaderValueOption> {
    mutation
        .set
        .iter()
        .map(|(name, value)| {
            let wire = value.to_wire();
            let header = match field {
                ValueField::Raw => HeaderValue {
                    key: name.clone(),
                    raw_value: wire,
                    ..Default::default()
                },
                ValueField::Text => HeaderValue {
                    key: name.clone(),
                    value: String::from_utf8_lossy(&wire).into_owned(),
                    ..Default::default()
                },
            };
            HeaderValueOption {
                header: Some(header),
                append_action: HeaderAppendAction::OverwriteIfExistsOrAdd as i32,
                ..Default::default()
            }
        })
        .collect()
}

/// Parses Envoy's textual peer address (`ip:port` or a bare IP).
pub fn parse_address(text: &str) -> Option<IpAddr> {
    text.parse::<SocketAddr>()
        .map(|s| s.ip())
        .ok()
        .or_else(|| text.parse::<IpAddr>().ok())
}

/// The first `x-forwarded-for` hop, for deployments that trust the proxy in front of Envoy.
pub fn forwarded_for(headers: &[Header<'_>]) -> Option<IpAddr> {
    let value = headers.iter().find(|h| h.name == "x-forwarded-for")?.value;
    let first = std::str::from_utf8(value).ok()?.split(',').next()?.trim();
    parse_address(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_peer_addresses() {
        assert_eq!(
            parse_address("127.0.0.2:5000"),
            Some("127.0.0.2".parse().unwrap())
        );
        assert_eq!(parse_address("[::1]:80"), Some("::1".parse().unwrap()));
        assert_eq!(parse_address("10.0.0.1"), Some("10.0.0.1".parse().unwrap()));
        assert_eq!(parse_address("garbage"), None);
    }

    #[test]
    fn first_forwarded_hop_wins() {
        let h = [Header {
            name: "x-forwarded-for",
            value: b"203.0.113.7, 10.0.0.1",
        }];
        assert_eq!(forwarded_for(&h), Some("203.0.113.7".parse().unwrap()));
    }
}
