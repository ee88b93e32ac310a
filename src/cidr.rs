//! Address ranges in CIDR notation (`10.0.0.0/8`, `2001:db8::/32`, or a bare address for one
//! host), as a consumer's `allowed_sources` lists them.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// One range of addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

/// Why a text is not a CIDR range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    #[error("{0:?} is not an IP address (expected e.g. 10.0.0.0/8, 2001:db8::/32 or 192.0.2.7)")]
    Address(String),
    #[error("prefix length {0:?} must be a number from 0 to {1}")]
    Prefix(String, u8),
    #[error("{0} has host bits set; did you mean {1}?")]
    HostBits(String, String),
}

impl Cidr {
    /// Whether `addr` is in the range. An IPv4 address written as IPv6 (`::ffff:10.0.0.1`, as
    /// dual-stack listeners report it) is the IPv4 address.
    pub fn contains(&self, addr: IpAddr) -> bool {
        match (self.network, canonical(addr)) {
            (IpAddr::V4(net), IpAddr::V4(a)) => {
                let mask = mask32(self.prefix);
                u32::from(a) & mask == u32::from(net) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(a)) => {
                let mask = mask128(self.prefix);
                u128::from(a) & mask == u128::from(net) & mask
            }
            _ => false,
        }
    }
}

fn canonical(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

fn mask32(prefix: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0)
}

fn mask128(prefix: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0)
}

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let network = canonical(
            addr.parse::<IpAddr>()
                .map_err(|_| CidrError::Address(addr.to_string()))?,
        );
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|n| *n <= max)
                .ok_or_else(|| CidrError::Prefix(p.to_string(), max))?,
        };
        let cidr = Cidr { network, prefix };
        let base = match network {
            IpAddr::V4(v4) => IpAddr::from((u32::from(v4) & mask32(prefix)).to_be_bytes()),
            IpAddr::V6(v6) => IpAddr::from((u128::from(v6) & mask128(prefix)).to_be_bytes()),
        };
        if base != network {
            return Err(CidrError::HostBits(
                text.to_string(),
                Cidr {
                    network: base,
                    prefix,
                }
                .to_string(),
            ));
        }
        Ok(cidr)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

impl<'de> serde::Deserialize<'de> for Cidr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ranges_contain_their_addresses() {
        let net: Cidr = "10.0.0.0/8".parse().unwrap();
        assert!(net.contains(ip("10.1.2.3")));
        assert!(!net.contains(ip("11.0.0.1")));
        assert!(net.contains(ip("::ffff:10.9.9.9")), "IPv4-mapped IPv6");
        assert!(!net.contains(ip("2001:db8::1")));
        let host: Cidr = "192.0.2.7".parse().unwrap();
        assert!(host.contains(ip("192.0.2.7")) && !host.contains(ip("192.0.2.8")));
        let v6: Cidr = "2001:db8::/32".parse().unwrap();
        assert!(v6.contains(ip("2001:db8:1::1")) && !v6.contains(ip("2001:db9::1")));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(ip("203.0.113.9")) && !all.contains(ip("::1")));
        let loopback: Cidr = "127.0.0.1/32".parse().unwrap();
        assert!(loopback.contains(ip("127.0.0.1")));
    }

    #[test]
    fn bad_ranges_say_what_is_wrong() {
        let err = |t: &str| t.parse::<Cidr>().unwrap_err().to_string();
        assert!(
            err("10.0.0.1/8").contains("did you mean 10.0.0.0/8?"),
            "{}",
            err("10.0.0.1/8")
        );
        assert!(err("10.0.0.0/33").contains("from 0 to 32"));
        assert!(err("2001:db8::/129").contains("from 0 to 128"));
        assert!(err("example.com/8").contains("not an IP address"));
        assert!(err("10.0.0.0/x").contains("prefix length"));
    }
}
