//! The client address a request is judged by: the peer Envoy reports, or the forwarded-for
//! address when the deployment trusts the proxy in front of Envoy.

use std::net::IpAddr;

use super::Settings;
use crate::request::{parse_address, RequestView};

/// The address the failed-authentication guard, the detectors and the source metrics use.
pub fn client_address(req: &RequestView<'_>, settings: &Settings) -> Option<IpAddr> {
    if settings.trust_forwarded_for {
        if let Some(forwarded) = forwarded_for(req) {
            return Some(forwarded);
        }
    }
    req.peer
}

/// The first `x-forwarded-for` hop.
fn forwarded_for(req: &RequestView<'_>) -> Option<IpAddr> {
    let value = req.header("x-forwarded-for")?;
    let first = std::str::from_utf8(value).ok()?.split(',').next()?.trim();
    parse_address(first)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::Header;

    fn view(xff: &'static [u8]) -> RequestView<'static> {
        RequestView {
            method: "GET",
            path: "/v1/models",
            headers: vec![Header {
                name: "x-forwarded-for",
                value: xff,
            }],
            peer: Some("10.0.0.9".parse().unwrap()),
        }
    }

    #[test]
    fn forwarded_for_only_when_trusted() {
        let req = view(b"203.0.113.7, 10.0.0.1");
        let trusted = Settings {
            trust_forwarded_for: true,
            ..Settings::default()
        };
        assert_eq!(
            client_address(&req, &trusted),
            Some("203.0.113.7".parse().unwrap())
        );
        assert_eq!(
            client_address(&req, &Settings::default()),
            Some("10.0.0.9".parse().unwrap())
        );
    }
}
