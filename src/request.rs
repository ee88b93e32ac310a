//! The protocol-independent view of a request that the gate decides on.

use std::net::{IpAddr, SocketAddr};

use crate::identity::SpiffeId;

/// One request header as received. Names are lowercase (HTTP/2 and Envoy guarantee it).
#[derive(Debug, Clone, Copy)]
pub struct Header<'a> {
    pub name: &'a str,
    pub value: &'a [u8],
}

/// What the gate sees of a request, borrowed from whichever protocol carried it.
#[derive(Debug, Clone)]
pub struct RequestView<'a> {
    pub method: &'a str,
    /// `:path` as sent, query included; the gate normalizes it.
    pub path: &'a str,
    pub headers: Vec<Header<'a>>,
    /// How many headers Envoy holds for the request, pseudo-headers and the ones Envoy added
    /// included (what Envoy's header count limit counts).
    pub header_count: usize,
    /// The body's length when the edge already holds the whole body (ext_authz with
    /// `with_request_body`): chunked uploads are measured without a `content-length`.
    pub body_len: Option<u64>,
    /// The downstream peer address Envoy reports. The client address the pipeline uses is
    /// this, or `x-forwarded-for` when configured to trust it.
    pub peer: Option<IpAddr>,
    /// The workload identity of the peer certificate Envoy verified (ext_authz
    /// `source.principal`, ext_proc `connection.uri_san_peer_certificate`), as reported.
    pub peer_identity: Option<&'a str>,
    /// The whole request body, when the edge holds it (ext_authz with `with_request_body`).
    pub body: Option<&'a [u8]>,
}

/// Who is calling, as the pipeline judged it: the workload identity (from the verified peer
/// certificate, or a trusted proxy's `x-forwarded-client-cert`) and the client address.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Caller<'a> {
    pub identity: Option<SpiffeId<'a>>,
    pub address: Option<IpAddr>,
}

impl<'a> RequestView<'a> {
    /// The declared body size (`content-length`), when readable.
    pub fn content_length(&self) -> Option<u64> {
        std::str::from_utf8(self.header("content-length")?)
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// The first value of a header, if present.
    pub fn header(&self, name: &str) -> Option<&'a [u8]> {
        self.headers
            .iter()
            .find(|h| h.name == name)
            .map(|h| h.value)
    }
}

/// Parses an address as Envoy and proxies write it (`ip:port` or a bare IP).
pub fn parse_address(text: &str) -> Option<IpAddr> {
    text.parse::<SocketAddr>()
        .map(|s| s.ip())
        .ok()
        .or_else(|| text.parse::<IpAddr>().ok())
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
}
