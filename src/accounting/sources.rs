//! Distinct source addresses of one consumer over a sliding window, in bounded memory: at most
//! `MAX_PER_CONSUMER` addresses with when each was last seen; the oldest is evicted when full
//! (so a flood of addresses still reads as "at least the cap"). The set lives in the
//! consumer's metrics record ([`super::record::Record`]), which the request already holds, so
//! noting an address is one short per-consumer lock rather than a second map lookup.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::address_map::AddressMap;

pub const MAX_PER_CONSUMER: usize = 1024;

/// Milliseconds from one origin: 8-byte times instead of 16-byte `Instant`s, so an address
/// costs 32 bytes, not 40.
#[derive(Debug, Clone, Copy)]
pub struct Clock(Instant);

impl Clock {
    pub fn new() -> Self {
        Clock(Instant::now())
    }

    /// `at` in milliseconds from the origin (0 for anything before it).
    pub fn ms(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.0).as_millis()).unwrap_or(u64::MAX)
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The addresses one consumer called from, each with when it was last seen ([`Clock`] ms).
#[derive(Debug, Default)]
pub(super) struct Sources(AddressMap<u64>);

impl Sources {
    /// Notes a request from `address` at `at`.
    pub fn note(&mut self, address: IpAddr, at: u64) {
        if let Some(seen) = self.0.get_mut(&address) {
            *seen = (*seen).max(at);
            return;
        }
        if self.0.len() >= MAX_PER_CONSUMER {
            if let Some(oldest) = self.0.iter().min_by_key(|(_, t)| **t).map(|(a, _)| a) {
                self.0.remove(&oldest);
            }
        }
        self.0.insert(address, at);
    }

    /// Forgets addresses not seen within `window` of `now`, and returns how many remain. An
    /// emptied set gives its memory back.
    pub fn sweep(&mut self, now: u64, window: Duration) -> usize {
        let window = ms(window);
        self.0.retain(|_, t| now.saturating_sub(*t) <= window);
        if self.0.is_empty() {
            *self = Sources::default();
        }
        self.0.len()
    }

    /// When the newest address was last seen.
    pub fn newest(&self) -> Option<u64> {
        self.0.iter().map(|(_, t)| *t).max()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_distinct_addresses_in_the_window_with_a_cap() {
        let mut sources = Sources::default();
        let window = Duration::from_secs(60);
        sources.note("10.0.0.1".parse().unwrap(), 0);
        sources.note("10.0.0.1".parse().unwrap(), 0);
        sources.note("10.0.0.2".parse().unwrap(), 50_000);
        assert_eq!(sources.sweep(55_000, window), 2);
        assert_eq!(sources.sweep(100_000, window), 1);
        assert_eq!(sources.newest(), Some(50_000));
        for i in 0..(MAX_PER_CONSUMER as u32 + 50) {
            sources.note(IpAddr::from(i.to_be_bytes()), 100_000);
        }
        assert_eq!(sources.sweep(100_000, window), MAX_PER_CONSUMER);
        assert_eq!(sources.sweep(200_000, window), 0);
        assert_eq!(sources.newest(), None);
    }

    #[test]
    fn a_late_note_never_moves_last_seen_back() {
        let mut sources = Sources::default();
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        sources.note(ip, 9_000);
        sources.note(ip, 1_000);
        assert_eq!(sources.newest(), Some(9_000));
    }
}
