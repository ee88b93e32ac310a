//! Header conversions shared by both edges: Envoy's header lists to a [`RequestView`], and a
//! [`HeaderMutation`] to Envoy's header options.

use std::net::IpAddr;

use envoy_types::pb::envoy::config::core::v3::header_value_option::HeaderAppendAction;
use envoy_types::pb::envoy::config::core::v3::{HeaderMap, HeaderValue, HeaderValueOption};

use crate::mutation::HeaderMutation;
use crate::request::{Header, RequestView};

/// Borrows Envoy's header list, preferring `raw_value` (what Envoy sends when encoding raw).
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

/// The value of a header (or pseudo-header such as `:path`), as text.
pub fn text<'a>(headers: &[Header<'a>], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|h| h.name == name)
        .and_then(|h| std::str::from_utf8(h.value).ok())
}

/// The request as the pipeline sees it: pseudo-headers dropped from the header list.
pub fn request_view<'a>(
    method: &'a str,
    path: &'a str,
    headers: Vec<Header<'a>>,
    peer: Option<IpAddr>,
    body_len: Option<u64>,
) -> RequestView<'a> {
    RequestView {
        method,
        path,
        body_len,
        header_count: headers.len(),
        headers: headers
            .into_iter()
            .filter(|h| !h.name.starts_with(':'))
            .collect(),
        peer,
        peer_identity: None,
        body: None,
    }
}

/// How the value is carried: ext_proc reads only `raw_value`, ext_authz reads only `value`.
#[derive(Debug, Clone, Copy)]
pub enum ValueField {
    Raw,
    Text,
}

/// One header option that replaces any existing value.
pub fn replace(key: &str, value: &[u8], field: ValueField) -> HeaderValueOption {
    let header = match field {
        ValueField::Raw => HeaderValue {
            key: key.to_string(),
            raw_value: value.to_vec(),
            ..Default::default()
        },
        ValueField::Text => HeaderValue {
            key: key.to_string(),
            value: String::from_utf8_lossy(value).into_owned(),
            ..Default::default()
        },
    };
    HeaderValueOption {
        header: Some(header),
        append_action: HeaderAppendAction::OverwriteIfExistsOrAdd as i32,
        ..Default::default()
    }
}

/// Header options that replace any existing value: the credential must never be appended
/// next to a client-sent one.
pub fn set_options(mutation: &HeaderMutation, field: ValueField) -> Vec<HeaderValueOption> {
    mutation
        .set
        .iter()
        .map(|(name, value)| replace(name, &value.to_wire(), field))
        .collect()
}
