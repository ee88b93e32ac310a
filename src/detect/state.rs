//! One consumer's detector state, in fixed memory: a ring of `SLOTS` counters covering the
//! short window, bias-corrected EWMAs of per-interval rates (the baseline), a bounded learned
//! address set with a bounded candidate set, and the last firing time of each detector.
//! `observe` touches a slot, the open interval and one map entry; everything else happens in
//! `evaluate` off the request path. Times are 8-byte [`Stamp`]s, not 16-byte `Instant`s.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use super::baseline::{Baselines, Ewma, Rates};
use super::config::DetectConfig;
use super::detection::{DetectorKind, Observation};
use super::stamp::{Fired, Stamp};
use crate::address_map::AddressMap;

/// Slots in the short-window ring; each covers `short_window / SLOTS`. The short-window rate
/// counts the current slot and the `SLOTS - 1` before it, so 80 to 100 % of the window; five
/// slots rather than ten halve the ring (80 bytes per active consumer).
pub(super) const SLOTS: usize = 5;
/// Unlearned addresses remembered per consumer (the least recently seen is dropped).
pub(super) const MAX_CANDIDATES: usize = 64;
/// Addresses listed in one detection's evidence.
pub(super) const MAX_EVIDENCE_ADDRESSES: usize = 16;

/// Requests, tokens and micro-dollars.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(super) struct Counts {
    pub requests: u64,
    pub tokens: u64,
    pub micro_usd: u64,
}

impl Counts {
    fn add(&mut self, o: &Observation) {
        self.requests = self.requests.saturating_add(u64::from(o.requests));
        self.tokens = self.tokens.saturating_add(o.tokens);
        self.micro_usd = self.micro_usd.saturating_add(o.micro_usd);
    }

    fn is_zero(&self) -> bool {
        self.requests == 0 && self.tokens == 0 && self.micro_usd == 0
    }
}

/// One slot of the short-window ring: 16 bytes, every field 32 bits and saturating. A slot
/// covers `short_window / SLOTS` (2 s by default), so its tokens saturate only past 4.29 G and
/// its spend past $4,294: the short-window rate it then reports, though under the truth, is
/// still at least 2^32 / `short_window` per second (429 M tokens or $429 per second by
/// default), orders of magnitude above the detectors' floors. Only a consumer whose own
/// baseline is that high could have a spike hidden by it. The baselines count in 64 bits.
#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    index: u32,
    requests: u32,
    tokens: u32,
    micro_usd: u32,
}

impl Slot {
    fn add(&mut self, o: &Observation) {
        let narrow = |x: u64| u32::try_from(x).unwrap_or(u32::MAX);
        self.requests = self.requests.saturating_add(o.requests);
        self.tokens = self.tokens.saturating_add(narrow(o.tokens));
        self.micro_usd = self.micro_usd.saturating_add(narrow(o.micro_usd));
    }
}

#[derive(Debug, Clone, Copy)]
struct Candidate {
    first_seen: Stamp,
    last_seen: Stamp,
}

/// Slot and interval lengths the ring and baseline were built with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Shape {
    slot_nanos: u64,
    interval_nanos: u64,
}

impl Shape {
    fn of(config: &DetectConfig) -> Self {
        let nanos = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX).max(1);
        Shape {
            slot_nanos: (nanos(config.short_window) / SLOTS as u64).max(1),
            interval_nanos: nanos(config.baseline_interval),
        }
    }
}

fn index(since: Duration, width: u64) -> u64 {
    u64::try_from(since.as_nanos() / u128::from(width)).unwrap_or(u64::MAX)
}

#[derive(Debug)]
pub(crate) struct ConsumerState {
    shape: Shape,
    /// First observation: slot and interval indices count from here.
    origin: Stamp,
    last_seen: Stamp,
    ring: [Slot; SLOTS],
    /// The open baseline interval and what it has counted so far.
    open: (u64, Counts),
    /// Closed intervals that had any traffic (saturating: 32 bits share a word with `dirty`).
    active_intervals: u32,
    /// Baselines over active intervals only, per second: a consumer idle overnight does not
    /// come back to a baseline of zero.
    baselines: Baselines,
    /// Spend per second over every interval, idle ones as zero (for the month-end projection).
    spend_all: Ewma,
    learned: AddressMap<Stamp>,
    candidates: AddressMap<Candidate>,
    fired: [Fired; DetectorKind::COUNT],
    /// Observed since the last evaluation: only such consumers can have crossed a threshold.
    pub dirty: bool,
}

impl ConsumerState {
    pub(super) fn new(at: Instant, config: &DetectConfig) -> Self {
        let at = Stamp::of(at);
        ConsumerState {
            shape: Shape::of(config),
            origin: at,
            last_seen: at,
            ring: [Slot::default(); SLOTS],
            open: (0, Counts::default()),
            active_intervals: 0,
            baselines: Baselines::default(),
            spend_all: Ewma::default(),
            learned: AddressMap::default(),
            candidates: AddressMap::default(),
            fired: [Fired::NEVER; DetectorKind::COUNT],
            dirty: false,
        }
    }

    /// Starts the windows and baseline over if the config changed their shape; learned
    /// addresses and cooldowns survive.
    fn conform(&mut self, at: Instant, config: &DetectConfig) {
        if self.shape != Shape::of(config) {
            let mut fresh = ConsumerState::new(at, config);
            fresh.learned = std::mem::take(&mut self.learned);
            fresh.fired = self.fired;
            *self = fresh;
        }
    }

    /// Records activity at `now` (only a time later than any seen so far moves `last_seen`).
    pub(super) fn touch(&mut self, now: Instant) {
        self.last_seen = self.last_seen.max(Stamp::of(now));
    }

    /// Time since the latest activity, zero if that is after `now` (idle eviction).
    pub(super) fn idle_for(&self, now: Instant) -> Duration {
        Stamp::of(now).since(self.last_seen)
    }

    /// Time from the origin to `at`, zero if `at` is before it.
    fn since_origin(&self, at: Stamp) -> Duration {
        at.since(self.origin)
    }

    /// The request-path update: one slot, the open interval, one address entry.
    pub(super) fn observe(&mut self, o: &Observation, config: &DetectConfig) {
        self.conform(o.at, config);
        self.dirty = true;
        let at = Stamp::of(o.at);
        self.last_seen = self.last_seen.max(at);
        let since = self.since_origin(at);
        let slot_index = u32::try_from(index(since, self.shape.slot_nanos)).unwrap_or(u32::MAX);
        let slot = &mut self.ring[(slot_index % SLOTS as u32) as usize];
        if slot.index < slot_index {
            *slot = Slot {
                index: slot_index,
                ..Slot::default()
            };
        }
        if slot.index == slot_index {
            slot.add(o);
        }
        let interval = index(since, self.shape.interval_nanos);
        if interval > self.open.0 {
            self.close_intervals(interval, config);
        }
        self.open.1.add(o);
        if let Some(source) = o.source {
            self.note_source(source, at, config);
        }
    }

    /// Folds the open interval into the baselines (idle gaps decay only `spend_all`).
    fn close_intervals(&mut self, to: u64, config: &DetectConfig) {
        let secs = config.baseline_interval.as_secs_f64();
        let decay = 0.5f64.powf(secs / config.baseline_half_life.as_secs_f64().max(1e-9));
        let c = self.open.1;
        if !c.is_zero() {
            self.active_intervals = self.active_intervals.saturating_add(1);
            let rates = Rates {
                requests: c.requests as f64 / secs,
                tokens: c.tokens as f64 / secs,
                micro_usd: c.micro_usd as f64 / secs,
            };
            self.baselines.push(rates, decay);
        }
        if self.active_intervals > 0 {
            self.spend_all.push(c.micro_usd as f64 / secs, decay);
            self.spend_all
                .push_zeros(to.saturating_sub(self.open.0 + 1), decay);
        }
        self.open = (to, Counts::default());
    }

    pub(super) fn warm(&self, config: &DetectConfig) -> bool {
        // A warmup beyond 2^32 intervals (absurd configs only) ends at the saturation.
        let needed = config.warmup_intervals().min(u64::from(u32::MAX));
        u64::from(self.active_intervals) >= needed
    }

    fn note_source(&mut self, source: IpAddr, at: Stamp, config: &DetectConfig) {
        if let Some(seen) = self.learned.get_mut(&source) {
            *seen = (*seen).max(at);
            return;
        }
        if !self.warm(config) {
            self.learn(source, at, config.new_sources.max_learned);
            return;
        }
        if let Some(c) = self.candidates.get_mut(&source) {
            c.last_seen = c.last_seen.max(at);
            return;
        }
        if self.candidates.len() >= MAX_CANDIDATES {
            if let Some(oldest) = oldest(self.candidates.iter().map(|(a, c)| (a, c.last_seen))) {
                self.candidates.remove(&oldest);
            }
        }
        self.candidates.insert(
            source,
            Candidate {
                first_seen: at,
                last_seen: at,
            },
        );
    }

    fn learn(&mut self, source: IpAddr, at: Stamp, max: usize) {
        while self.learned.len() >= max.max(1) {
            match oldest(self.learned.iter().map(|(a, t)| (a, *t))) {
                Some(a) => self.learned.remove(&a),
                None => break,
            };
        }
        self.learned.insert(source, at);
    }

    /// Catches the baselines up to `now` and learns candidates that have been in use for
    /// `learn_after`; forgets candidates unseen for that long.
    pub(super) fn advance(&mut self, now: Instant, config: &DetectConfig) {
        self.conform(now, config);
        let now = Stamp::of(now);
        let interval = index(self.since_origin(now), self.shape.interval_nanos);
        if interval > self.open.0 {
            self.close_intervals(interval, config);
        }
        if !self.warm(config) {
            return;
        }
        let learn_after = config.new_sources.learn_after;
        let mut promote = Vec::new();
        self.candidates.retain(|addr, c| {
            if now.since(c.last_seen) > learn_after {
                return false;
            }
            if now.since(c.first_seen) >= learn_after {
                promote.push((*addr, c.last_seen));
                return false;
            }
            true
        });
        for (addr, seen) in promote {
            self.learn(addr, seen, config.new_sources.max_learned);
        }
    }

    /// Rates over the short window ending at `now`.
    pub(super) fn short_rates(&self, now: Instant, config: &DetectConfig) -> Rates {
        let current = index(self.since_origin(Stamp::of(now)), self.shape.slot_nanos);
        let oldest = current.saturating_sub(SLOTS as u64 - 1);
        let mut sum = Counts::default();
        for slot in self.ring.iter() {
            let at = u64::from(slot.index);
            if at >= oldest && at <= current {
                sum.requests += u64::from(slot.requests);
                sum.tokens += u64::from(slot.tokens);
                sum.micro_usd += u64::from(slot.micro_usd);
            }
        }
        let secs = config.short_window.as_secs_f64().max(1e-9);
        Rates {
            requests: sum.requests as f64 / secs,
            tokens: sum.tokens as f64 / secs,
            micro_usd: sum.micro_usd as f64 / secs,
        }
    }

    /// The baseline rates per second, once any interval has closed.
    pub(super) fn baseline(&self) -> Option<Rates> {
        self.baselines.get()
    }

    /// Average spend per second including idle time, for the month-end projection.
    pub(super) fn spend_velocity(&self) -> Option<f64> {
        self.spend_all.get()
    }

    /// Unlearned addresses used within `window` (count, and at most
    /// `MAX_EVIDENCE_ADDRESSES` of them, most recent first).
    pub(super) fn new_sources(&self, now: Instant, window: Duration) -> (usize, Vec<IpAddr>) {
        let now = Stamp::of(now);
        let mut recent: Vec<(IpAddr, Stamp)> = self
            .candidates
            .iter()
            .filter(|(_, c)| now.since(c.last_seen) <= window)
            .map(|(a, c)| (a, c.last_seen))
            .collect();
        let count = recent.len();
        recent.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        recent.truncate(MAX_EVIDENCE_ADDRESSES);
        (count, recent.into_iter().map(|(a, _)| a).collect())
    }

    #[cfg(test)]
    pub(super) fn learned_len(&self) -> usize {
        self.learned.len()
    }

    /// True (and records the firing) unless `kind` fired within `cooldown`.
    pub(super) fn try_fire(
        &mut self,
        kind: DetectorKind,
        now: Instant,
        cooldown: Duration,
    ) -> bool {
        let now = Stamp::of(now);
        let slot = &mut self.fired[kind as usize];
        if slot.get().is_some_and(|at| now.since(at) < cooldown) {
            return false;
        }
        *slot = Fired::at(now);
        true
    }
}

fn oldest(entries: impl Iterator<Item = (IpAddr, Stamp)>) -> Option<IpAddr> {
    entries.min_by_key(|(_, t)| *t).map(|(a, _)| a)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pins the state's size: a million active consumers hold a million of these (544
    /// bytes with `Instant`s).
    #[test]
    fn state_stays_small() {
        let size = std::mem::size_of::<ConsumerState>();
        assert!(size <= 272, "{size}");
    }

    #[test]
    fn ring_slots_saturate_instead_of_wrapping() {
        let config = DetectConfig::default();
        let t0 = Instant::now();
        let mut state = ConsumerState::new(t0, &config);
        for _ in 0..3 {
            state.observe(
                &Observation::charge(t0, None, u64::MAX / 2, 3 << 31),
                &config,
            );
        }
        let rates = state.short_rates(t0, &config);
        let window = config.short_window.as_secs_f64();
        assert_eq!(rates.tokens, f64::from(u32::MAX) / window);
        assert_eq!(rates.micro_usd, f64::from(u32::MAX) / window);
    }
}
