//! A per-consumer map from client address to a value, sized for the common case: most
//! consumers call from one to a few addresses, so up to [`INLINE_MAX`] entries live in a
//! vector searched linearly (one small allocation, 24 bytes inline); beyond that the map moves
//! to a hash map, so a consumer behind many addresses stays O(1) per request. The detectors'
//! learned and candidate addresses and each metrics record's source addresses use it; against
//! a `HashMap` per consumer it saves about 160 bytes for each active consumer in each of them.
//!
//! Addresses are kept as 16 bytes, an IPv4 address in its IPv4-mapped IPv6 form: with an
//! 8-byte value an entry takes 24 bytes where `(IpAddr, u64)` takes 32 (a first address is
//! then a 32-byte heap chunk, not 48). It also makes `1.2.3.4` and `::ffff:1.2.3.4`, one
//! client seen through an IPv4 or a dual-stack listener, the same address.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};

/// Entries kept in the vector before the map switches to hashing.
pub(crate) const INLINE_MAX: usize = 16;

/// An address as 16 bytes, IPv4 as IPv4-mapped IPv6 (alignment 1, so it packs with a value).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Key([u8; 16]);

impl From<&IpAddr> for Key {
    fn from(address: &IpAddr) -> Self {
        Key(match address {
            IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
            IpAddr::V6(v6) => v6.octets(),
        })
    }
}

impl Key {
    fn ip(self) -> IpAddr {
        Ipv6Addr::from(self.0).to_canonical()
    }
}

#[derive(Debug)]
pub(crate) enum AddressMap<V> {
    Few(Vec<(Key, V)>),
    // Boxed so the map is one pointer and the enum stays the size of a `Vec` (24 bytes, not
    // 48) for every consumer that never needs hashing.
    #[allow(clippy::box_collection)]
    Many(Box<HashMap<Key, V>>),
}

impl<V> Default for AddressMap<V> {
    fn default() -> Self {
        AddressMap::Few(Vec::new())
    }
}

impl<V> AddressMap<V> {
    pub fn len(&self) -> usize {
        match self {
            AddressMap::Few(v) => v.len(),
            AddressMap::Many(m) => m.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn get_mut(&mut self, address: &IpAddr) -> Option<&mut V> {
        let key = Key::from(address);
        match self {
            AddressMap::Few(v) => v.iter_mut().find(|(a, _)| *a == key).map(|(_, x)| x),
            AddressMap::Many(m) => m.get_mut(&key),
        }
    }

    /// Inserts or replaces the value for `address`.
    pub fn insert(&mut self, address: IpAddr, value: V) {
        let address = Key::from(&address);
        match self {
            AddressMap::Few(v) => {
                if let Some(slot) = v.iter_mut().find(|(a, _)| *a == address) {
                    slot.1 = value;
                } else if v.len() < INLINE_MAX {
                    if v.capacity() == 0 {
                        v.reserve_exact(1);
                    }
                    v.push((address, value));
                } else {
                    let mut m: HashMap<Key, V> = v.drain(..).collect();
                    m.insert(address, value);
                    *self = AddressMap::Many(Box::new(m));
                }
            }
            AddressMap::Many(m) => {
                m.insert(address, value);
            }
        }
    }

    pub fn remove(&mut self, address: &IpAddr) {
        let key = Key::from(address);
        match self {
            AddressMap::Few(v) => v.retain(|(a, _)| *a != key),
            AddressMap::Many(m) => {
                m.remove(&key);
            }
        }
    }

    pub fn iter(&self) -> Box<dyn Iterator<Item = (IpAddr, &V)> + '_> {
        match self {
            AddressMap::Few(v) => Box::new(v.iter().map(|(a, x)| (a.ip(), x))),
            AddressMap::Many(m) => Box::new(m.iter().map(|(a, x)| (a.ip(), x))),
        }
    }

    pub fn retain(&mut self, mut keep: impl FnMut(&IpAddr, &mut V) -> bool) {
        match self {
            AddressMap::Few(v) => v.retain_mut(|(a, x)| keep(&a.ip(), x)),
            AddressMap::Many(m) => m.retain(|a, x| keep(&a.ip(), x)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(i: u32) -> IpAddr {
        IpAddr::from(i.to_be_bytes())
    }

    #[test]
    fn is_as_small_as_a_vec() {
        assert_eq!(
            std::mem::size_of::<AddressMap<std::time::Instant>>(),
            std::mem::size_of::<Vec<(IpAddr, std::time::Instant)>>()
        );
    }

    #[test]
    fn behaves_like_a_map_on_both_sides_of_the_switch() {
        let mut m: AddressMap<u32> = AddressMap::default();
        for i in 0..40 {
            m.insert(ip(i), i);
            m.insert(ip(i), i + 100);
            assert_eq!(m.len(), i as usize + 1);
            assert_eq!(
                matches!(m, AddressMap::Few(_)),
                i < INLINE_MAX as u32,
                "switches to hashing past {INLINE_MAX}"
            );
        }
        for i in 0..40 {
            assert_eq!(m.get_mut(&ip(i)).copied(), Some(i + 100));
        }
        m.remove(&ip(3));
        assert_eq!(m.get_mut(&ip(3)), None);
        m.retain(|_, v| *v % 2 == 0);
        assert_eq!(m.len(), 20);
        assert!(m.iter().all(|(_, v)| v % 2 == 0));

        let mut few: AddressMap<u32> = AddressMap::default();
        few.insert(ip(1), 1);
        few.insert(ip(2), 2);
        few.remove(&ip(1));
        few.retain(|a, _| *a == ip(2));
        assert_eq!(few.iter().collect::<Vec<_>>(), vec![(ip(2), &2)]);
    }

    #[test]
    fn an_ipv4_address_and_its_mapped_form_are_one_entry_of_24_bytes() {
        assert_eq!(std::mem::size_of::<(Key, u64)>(), 24);
        let v4: IpAddr = "10.1.2.3".parse().unwrap();
        let v6: IpAddr = "2001:db8::7".parse().unwrap();
        let mut m: AddressMap<u32> = AddressMap::default();
        m.insert(v4, 1);
        m.insert("::ffff:10.1.2.3".parse().unwrap(), 2);
        m.insert(v6, 3);
        assert_eq!(m.len(), 2);
        let mut all: Vec<_> = m.iter().map(|(a, x)| (a, *x)).collect();
        all.sort();
        assert_eq!(all, vec![(v4, 2), (v6, 3)]);
    }
}
