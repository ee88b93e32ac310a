//! The client address a request is judged by (the failed-authentication guard, the detectors,
//! the source metrics): the peer Envoy reports, or, behind trusted proxies, the address the
//! nearest of them saw, read from the right of `x-forwarded-for`. Entries a client can write
//! (everything left of what the trusted proxies appended) are never used.

use std::net::IpAddr;

use super::Settings;
use crate::request::{parse_address, RequestView};

/// Longest `x-forwarded-for` chain read, in entries.
const MAX_ENTRIES: usize = 64;

/// The address the request is attributed to.
pub fn client_address(req: &RequestView<'_>, settings: &Settings) -> Option<IpAddr> {
    let hops = settings.xff_trusted_hops as usize;
    if hops == 0 {
        return req.peer;
    }
    forwarded_from_right(req, hops).or(req.peer)
}

/// The `x-forwarded-for` entry `hops` places left of the rightmost one (the rightmost is the
/// peer Envoy appended with `use_remote_address: true`), across every `x-forwarded-for`
/// header in order. `None` when the chain is shorter than that or the entry is no address.
fn forwarded_from_right(req: &RequestView<'_>, hops: usize) -> Option<IpAddr> {
    let mut entries: Vec<&str> = Vec::new();
    for header in req.headers.iter().filter(|h| h.name == "x-forwarded-for") {
        let text = std::str::from_utf8(header.value).ok()?;
        entries.extend(text.split(',').map(str::trim).take(MAX_ENTRIES));
        if entries.len() > MAX_ENTRIES {
            return None;
        }
    }
    let index = entries.len().checked_sub(hops + 1)?;
    parse_address(entries.get(index)?)
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
            header_count: 0,
            body_len: None,
            peer_identity: None,
            body: None,
        }
    }

    fn hops(n: u32) -> Settings {
        Settings {
            xff_trusted_hops: n,
            ..Settings::default()
        }
    }

    #[test]
    fn the_client_written_part_of_the_chain_is_never_used() {
        // The client wrote 6.6.6.6; the balancer appended the client's address 203.0.113.7;
        // Envoy appended the balancer's 10.0.0.9.
        let req = view(b"6.6.6.6, 203.0.113.7, 10.0.0.9");
        assert_eq!(
            client_address(&req, &hops(1)),
            Some("203.0.113.7".parse().unwrap())
        );
        assert_eq!(
            client_address(&req, &hops(2)),
            Some("6.6.6.6".parse().unwrap())
        );
        assert_eq!(
            client_address(&req, &hops(0)),
            Some("10.0.0.9".parse().unwrap())
        );
    }

    #[test]
    fn a_chain_too_short_or_unreadable_falls_back_to_the_peer() {
        let peer = Some("10.0.0.9".parse().unwrap());
        assert_eq!(client_address(&view(b"10.0.0.9"), &hops(1)), peer);
        assert_eq!(client_address(&view(b"garbage, 10.0.0.9"), &hops(1)), peer);
        assert_eq!(client_address(&view(b""), &hops(1)), peer);
    }
}
