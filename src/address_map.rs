//! A per-consumer map from client address to a value, sized for the common case: most
//! consumers call from one to a few addresses, so up to [`INLINE_MAX`] entries live in a
//! vector searched linearly (one small allocation, 24 bytes inline); beyond that the map moves
//! to a hash map, so a consumer behind many addresses stays O(1) per request. The detectors'
//! learned and candidate addresses and each metrics record's source addresses use it; against
//! a `HashMap` per consumer it saves about 160 bytes for each active consumer in each of them.

use std::collections::HashMap;
use std::net::IpAddr;

/// Entries kept in the vector before the map switches to hashing.
pub(crate) const INLINE_MAX: usize = 16;

#[derive(Debug)]
pub(crate) enum AddressMap<V> {
    Few(Vec<(IpAddr, V)>),
    // Boxed so the map is one pointer and the enum stays the size of a `Vec` (24 bytes, not
    // 48) for every consumer that never needs hashing.
    #[allow(clippy::box_collection)]
    Many(Box<HashMap<IpAddr, V>>),
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
        match self {
            AddressMap::Few(v) => v.iter_mut().find(|(a, _)| a == address).map(|(_, x)| x),
            AddressMap::Many(m) => m.get_mut(address),
        }
    }

    /// Inserts or replaces the value for `address`.
    pub fn insert(&mut self, address: IpAddr, value: V) {
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
                    let mut m: HashMap<IpAddr, V> = v.drain(..).collect();
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
        match self {
            AddressMap::Few(v) => v.retain(|(a, _)| a != address),
            AddressMap::Many(m) => {
                m.remove(address);
            }
        }
    }

    pub fn iter(&self) -> Box<dyn Iterator<Item = (&IpAddr, &V)> + '_> {
        match self {
            AddressMap::Few(v) => Box::new(v.iter().map(|(a, x)| (a, x))),
            AddressMap::Many(m) => Box::new(m.iter()),
        }
    }

    pub fn retain(&mut self, mut keep: impl FnMut(&IpAddr, &mut V) -> bool) {
        match self {
            AddressMap::Few(v) => v.retain_mut(|(a, x)| keep(a, x)),
            AddressMap::Many(m) => m.retain(|a, x| keep(a, x)),
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
        assert_eq!(few.iter().collect::<Vec<_>>(), vec![(&ip(2), &2)]);
    }
}
