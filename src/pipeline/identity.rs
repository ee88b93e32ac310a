//! The caller's workload identity: the peer certificate Envoy itself verified, or, behind a
//! proxy that terminates mTLS and is the only way in (a mesh sidecar), the URI that proxy
//! appended to `x-forwarded-client-cert` (`network.trust_forwarded_client_cert`). Never both:
//! behind such a proxy, Envoy's own peer is the proxy, not the caller. Whatever is not a
//! well-formed SPIFFE ID is no identity.

use std::borrow::Cow;

use super::Settings;
use crate::identity::xfcc;
use crate::request::RequestView;

const XFCC: &str = "x-forwarded-client-cert";

/// The text of the caller's identity, before it is parsed as a SPIFFE ID.
pub fn identity_text<'a>(req: &RequestView<'a>, settings: &Settings) -> Option<Cow<'a, str>> {
    if !settings.trust_forwarded_client_cert {
        return req
            .peer_identity
            .filter(|t| !t.is_empty())
            .map(Cow::Borrowed);
    }
    let values: Vec<&[u8]> = req
        .headers
        .iter()
        .filter(|h| h.name == XFCC)
        .map(|h| h.value)
        .collect();
    match xfcc::last_uri(&values) {
        Ok(uri) => uri.map(Cow::Owned),
        Err(e) => {
            tracing::debug!(error = %e, "no workload identity from x-forwarded-client-cert");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::Header;

    fn view<'a>(xfcc: Option<&'a [u8]>, peer: Option<&'a str>) -> RequestView<'a> {
        RequestView {
            method: "POST",
            path: "/v1/chat/completions",
            headers: xfcc
                .map(|value| Header { name: XFCC, value })
                .into_iter()
                .collect(),
            header_count: 0,
            body_len: None,
            peer: None,
            peer_identity: peer,
            body: None,
        }
    }

    fn trusting(trust: bool) -> Settings {
        Settings {
            trust_forwarded_client_cert: trust,
            ..Settings::default()
        }
    }

    #[test]
    fn the_peer_unless_a_front_proxy_is_trusted() {
        let header: &[u8] = b"By=spiffe://td/gw;URI=spiffe://td/ns/ml/sa/a";
        let req = view(Some(header), Some("spiffe://td/ns/gw/sa/proxy"));
        assert_eq!(
            identity_text(&req, &trusting(false)).as_deref(),
            Some("spiffe://td/ns/gw/sa/proxy")
        );
        assert_eq!(
            identity_text(&req, &trusting(true)).as_deref(),
            Some("spiffe://td/ns/ml/sa/a")
        );
        // Trusting the proxy, its absence is no identity: never the proxy's own.
        let bare = view(None, Some("spiffe://td/ns/gw/sa/proxy"));
        assert_eq!(identity_text(&bare, &trusting(true)), None);
        assert_eq!(identity_text(&view(None, Some("")), &trusting(false)), None);
        let broken = view(Some(b"URI=\"spiffe://td/x"), None);
        assert_eq!(identity_text(&broken, &trusting(true)), None);
    }
}
