//! The protocol-independent view of a request that the gate decides on.

use std::net::IpAddr;

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
    /// The peer address Envoy reports (or `x-forwarded-for` when trusted).
    pub source: Option<IpAddr>,
}

impl<'a> RequestView<'a> {
    /// The first value of a header, if present.
    pub fn header(&self, name: &str) -> Option<&'a [u8]> {
        self.headers
            .iter()
            .find(|h| h.name == name)
            .map(|h| h.value)
    }
}
