//! Exchanges waiting between their request phase and their response. When Envoy sends the
//! response to a second, observe-only processor (ext_proc `observability_mode`), the request
//! side parks its [`Exchange`] under a ticket it publishes as dynamic metadata; the response
//! side claims it with that ticket. An exchange nobody claims (the client went away before
//! the response, or no observer is configured) is settled after [`MAX_PARK`] at its worst
//! case, the amount its reservation held: nothing is held for ever, nothing goes uncharged.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use metrics::{counter, gauge};

use super::Exchange;
use crate::telemetry;

/// How long a parked exchange waits for its response. Past Envoy's 300 s stream idle timeout
/// (the shipped configs): a response that has not started by then never will.
pub const MAX_PARK: Duration = Duration::from_secs(310);

/// Exchanges parked at once, at most. One is parked per request in flight between its allow
/// and its response, so this is only reached when clients go away before their responses by
/// the ten thousand; past it an exchange is settled at once, at its worst case.
pub const MAX_PARKED: usize = 65_536;

/// Tickets fit a protobuf number (f64) exactly.
const TICKET_BITS: u32 = 53;

/// The parked exchanges of this process.
pub struct Handover {
    next: AtomicU64,
    parked: Mutex<HashMap<u64, Parked>>,
    capacity: usize,
    /// Exchanges refused since the last [`Handover::expire`], which logs them.
    overflowed: AtomicU64,
}

struct Parked {
    exchange: Exchange,
    since: Instant,
}

impl Default for Handover {
    fn default() -> Self {
        Handover::new()
    }
}

impl Handover {
    pub fn new() -> Self {
        Handover::with_capacity(MAX_PARKED)
    }

    /// A handover that parks at most `capacity` exchanges at once.
    pub fn with_capacity(capacity: usize) -> Self {
        // Tickets start at a per-process offset, so an observer still holding a ticket from a
        // keygate that restarted cannot claim a new process's exchange by accident.
        let boot = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or_default();
        Handover {
            next: AtomicU64::new(u64::from(boot) << 21 | 1),
            parked: Mutex::new(HashMap::new()),
            capacity,
            overflowed: AtomicU64::new(0),
        }
    }

    /// A fresh ticket, to publish before the exchange is parked under it.
    pub fn ticket(&self) -> u64 {
        self.next.fetch_add(1, Ordering::Relaxed) & ((1 << TICKET_BITS) - 1)
    }

    /// Parks `exchange` until [`Handover::claim`] with `ticket`. When the capacity
    /// ([`MAX_PARKED`]) is reached, it is settled at once at its worst case instead (counted
    /// `overflow`).
    pub fn park(&self, ticket: u64, exchange: Exchange) {
        let parked = Parked {
            exchange,
            since: Instant::now(),
        };
        let (refused, held) = {
            let mut map = self.lock();
            if map.len() >= self.capacity {
                (Some(parked), map.len())
            } else {
                // Tickets are unique (a counter), so nothing is replaced.
                map.insert(ticket, parked);
                (None, map.len())
            }
        };
        gauge!(telemetry::HANDOVER_PARKED).set(held as f64);
        if let Some(mut parked) = refused {
            counter!(telemetry::HANDOVER_TOTAL, "result" => "overflow").increment(1);
            self.overflowed.fetch_add(1, Ordering::Relaxed);
            parked.exchange.settle_unobserved();
        }
    }

    /// The exchange parked under `ticket`, once. `None` is counted: the observer named a
    /// ticket this process does not hold (another keygate's, or one already settled).
    pub fn claim(&self, ticket: u64) -> Option<Exchange> {
        let (taken, held) = {
            let mut map = self.lock();
            (map.remove(&ticket), map.len())
        };
        gauge!(telemetry::HANDOVER_PARKED).set(held as f64);
        let result = if taken.is_some() {
            "claimed"
        } else {
            "unmatched"
        };
        counter!(telemetry::HANDOVER_TOTAL, "result" => result).increment(1);
        taken.map(|p| p.exchange)
    }

    /// Settles the exchanges parked longer than `max`, and logs what expired or overflowed
    /// since the last call (the upkeep loop calls it every second). Returns how many expired.
    pub fn expire(&self, max: Duration) -> usize {
        let overflowed = self.overflowed.swap(0, Ordering::Relaxed);
        if overflowed > 0 {
            tracing::warn!(
                exchanges = overflowed,
                capacity = self.capacity,
                "too many responses waiting to be observed: charged their worst case at once"
            );
        }
        let now = Instant::now();
        let (expired, held): (Vec<Parked>, usize) = {
            let mut map = self.lock();
            let old: Vec<u64> = map
                .iter()
                .filter(|(_, p)| now.duration_since(p.since) >= max)
                .map(|(t, _)| *t)
                .collect();
            let expired = old.iter().filter_map(|t| map.remove(t)).collect();
            (expired, map.len())
        };
        gauge!(telemetry::HANDOVER_PARKED).set(held as f64);
        if !expired.is_empty() {
            counter!(telemetry::HANDOVER_TOTAL, "result" => "expired")
                .increment(expired.len() as u64);
            tracing::warn!(
                exchanges = expired.len(),
                after_s = max.as_secs(),
                "responses never observed: charged their worst case (is the response observer filter configured and reaching this keygate?)"
            );
        }
        // Settled outside the lock.
        let n = expired.len();
        for mut parked in expired {
            parked.exchange.settle_unobserved();
        }
        n
    }

    /// Settles every parked exchange (shutdown).
    pub fn settle_all(&self) -> usize {
        self.expire(Duration::ZERO)
    }

    /// Exchanges parked now.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Parked>> {
        // A panic while holding the map cannot leave it inconsistent (single inserts and
        // removes), so a poisoned lock is still usable.
        self.parked
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
