//! Envoy's `x-forwarded-client-cert` header: comma-separated elements, one appended by each
//! proxy that verified a client certificate, each a `;`-separated list of `key=value` pairs
//! (`By`, `Hash`, `Cert`, `Chain`, `Subject`, `URI`, `DNS`; keys case-insensitive), values
//! double-quoted when they hold `,` `;` or `=`, with `\"` for a quote inside.
//!
//! Only the last element is the nearest proxy's own: everything before it was forwarded, and
//! may have been written by the client. Its `URI` is the identity of the certificate that
//! proxy verified.

/// Why a header gives no identity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum XfccError {
    #[error("x-forwarded-client-cert is not valid UTF-8")]
    NotText,
    #[error("x-forwarded-client-cert has an unterminated quoted value")]
    Unterminated,
    #[error("x-forwarded-client-cert has a pair without '='")]
    NoEquals,
    #[error("the last x-forwarded-client-cert element has more than one URI")]
    SeveralUris,
    #[error("more than one x-forwarded-client-cert header: which element is last is unclear")]
    SeveralHeaders,
}

/// The `URI` of the header's last element, unquoted; `None` when there is no header or its
/// last element names no URI. `values` are the request's header lines: more than one is
/// refused, since proxies differ in which line they append to.
pub fn last_uri(values: &[&[u8]]) -> Result<Option<String>, XfccError> {
    let last = match values {
        [] => return Ok(None),
        [one] => one,
        _ => return Err(XfccError::SeveralHeaders),
    };
    let text = std::str::from_utf8(last).map_err(|_| XfccError::NotText)?;
    let element = split_unquoted(text, ',')?.pop().unwrap_or_default();
    let mut uri = None;
    for pair in split_unquoted(element, ';')? {
        if pair.trim().is_empty() {
            continue;
        }
        let key = split_unquoted(pair, '=')?
            .into_iter()
            .next()
            .unwrap_or_default();
        let value = pair.get(key.len() + 1..).ok_or(XfccError::NoEquals)?;
        if key.trim().eq_ignore_ascii_case("uri") {
            if uri.is_some() {
                return Err(XfccError::SeveralUris);
            }
            uri = Some(unquote(value.trim()));
        }
    }
    Ok(uri.filter(|u| !u.is_empty()))
}

/// Splits at `sep` outside double quotes (a backslash escapes the next character inside).
fn split_unquoted(text: &str, sep: char) -> Result<Vec<&str>, XfccError> {
    let mut parts = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, c) in text.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            c if c == sep && !quoted => {
                parts.push(&text[start..i]);
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    if quoted {
        return Err(XfccError::Unterminated);
    }
    parts.push(&text[start..]);
    Ok(parts)
}

/// A value without its surrounding quotes and with `\"` turned back into `"`.
fn unquote(value: &str) -> String {
    match value.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
        Some(inner) => {
            let mut out = String::with_capacity(inner.len());
            let mut chars = inner.chars();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => out.extend(chars.next()),
                    c => out.push(c),
                }
            }
            out
        }
        None => value.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uri(header: &str) -> Result<Option<String>, XfccError> {
        last_uri(&[header.as_bytes()])
    }

    #[test]
    fn reads_the_nearest_proxys_element() {
        let istio = "By=spiffe://cluster.local/ns/ai/sa/gw;Hash=abc;Subject=\"\";URI=spiffe://cluster.local/ns/ml/sa/trainer";
        assert_eq!(
            uri(istio).unwrap().as_deref(),
            Some("spiffe://cluster.local/ns/ml/sa/trainer")
        );
        // A client wrote the first element; the proxy appended the second.
        let appended = "URI=spiffe://cluster.local/ns/x/sa/forged,By=spiffe://td/gw;URI=spiffe://td/ns/ml/sa/real";
        assert_eq!(
            uri(appended).unwrap().as_deref(),
            Some("spiffe://td/ns/ml/sa/real")
        );
        assert_eq!(
            uri("uri=spiffe://td/a/real").unwrap().as_deref(),
            Some("spiffe://td/a/real")
        );
        // Several header lines: which one a proxy appended to is unclear.
        assert_eq!(
            last_uri(&[b"URI=spiffe://td/a/forged", b"URI=spiffe://td/a/real"]),
            Err(XfccError::SeveralHeaders)
        );
    }

    #[test]
    fn quoted_values_may_hold_separators() {
        let header = r#"Subject="CN=a,OU=b;c=\"d\"";URI="spiffe://td/ns/ml/sa/x";DNS=a.example"#;
        assert_eq!(
            uri(header).unwrap().as_deref(),
            Some("spiffe://td/ns/ml/sa/x")
        );
        // The comma inside the quoted subject does not start a new element.
        let forged = r#"URI=spiffe://td/real;Subject="x,URI=spiffe://td/forged""#;
        assert_eq!(uri(forged).unwrap().as_deref(), Some("spiffe://td/real"));
    }

    #[test]
    fn no_or_ambiguous_identity() {
        assert_eq!(last_uri(&[]).unwrap(), None);
        assert_eq!(uri("By=spiffe://td/gw;Hash=abc").unwrap(), None);
        assert_eq!(uri("URI=spiffe://td/a,Hash=abc").unwrap(), None);
        assert_eq!(uri("URI=").unwrap(), None);
        assert_eq!(
            uri("URI=spiffe://td/a;URI=spiffe://td/b"),
            Err(XfccError::SeveralUris)
        );
        assert_eq!(uri("URI=\"spiffe://td/a"), Err(XfccError::Unterminated));
        assert_eq!(uri("URI"), Err(XfccError::NoEquals));
        assert_eq!(last_uri(&[b"URI=\xff"]), Err(XfccError::NotText));
    }
}
