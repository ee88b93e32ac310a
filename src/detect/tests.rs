//! Scenario tests with explicit clocks: traffic is generated second by second and the
//! detectors are evaluated at the end of each second, as the background task does.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use super::*;

fn ip(i: u32) -> IpAddr {
    IpAddr::from((0x0a00_0000 + i).to_be_bytes())
}

/// A simulated clock driving one consumer.
struct Sim {
    det: Detectors,
    name: Arc<str>,
    t0: Instant,
    wall0: SystemTime,
    elapsed: Duration,
    carry: f64,
    next_source: usize,
    found: Vec<(Duration, Detection)>,
    budget: Option<BudgetStatus>,
}

impl Sim {
    fn new(config: DetectConfig) -> Self {
        config.validate().unwrap();
        Sim {
            det: Detectors::new(config),
            name: "team-a".into(),
            t0: Instant::now(),
            wall0: humantime::parse_rfc3339("2026-06-10T00:00:00Z").unwrap(),
            elapsed: Duration::ZERO,
            carry: 0.0,
            next_source: 0,
            found: Vec::new(),
            budget: None,
        }
    }

    fn now(&self) -> Instant {
        self.t0 + self.elapsed
    }

    /// `secs` seconds of traffic at `rate(second_of_phase)` requests per second, spread
    /// evenly, round-robin over `sources`, each charged `tokens` and `micro_usd`.
    fn run(
        &mut self,
        secs: u64,
        rate: impl Fn(u64) -> f64,
        sources: &[IpAddr],
        tokens: u64,
        micro_usd: u64,
    ) {
        for s in 0..secs {
            self.carry += rate(s);
            let n = self.carry.floor() as u64;
            self.carry -= n as f64;
            for i in 0..n {
                let at = self.now() + Duration::from_secs(1) * i as u32 / n as u32;
                let source = (!sources.is_empty()).then(|| {
                    self.next_source = (self.next_source + 1) % sources.len();
                    sources[self.next_source]
                });
                self.det
                    .observe(&self.name, Observation::request(at, source));
                if tokens > 0 || micro_usd > 0 {
                    self.det.observe(
                        &self.name,
                        Observation::charge(at, source, tokens, micro_usd),
                    );
                }
            }
            self.elapsed += Duration::from_secs(1);
            let budget = self.budget;
            let found = self
                .det
                .evaluate_with(self.now(), self.wall0 + self.elapsed, |_| budget);
            for d in found {
                self.found.push((self.elapsed, d));
            }
        }
    }

    fn fired(&self, kind: DetectorKind) -> Vec<&(Duration, Detection)> {
        self.found
            .iter()
            .filter(|(_, d)| d.detector == kind)
            .collect()
    }
}

fn steady() -> DetectConfig {
    DetectConfig::default()
}

#[test]
fn spike_with_new_addresses_fires_within_the_short_window() {
    let mut sim = Sim::new(steady());
    let home = [ip(1), ip(2)];
    sim.run(15 * 60, |_| 2.0, &home, 0, 0);
    assert!(sim.found.is_empty(), "{:?}", sim.found);
    let start = sim.elapsed;
    let attackers: Vec<IpAddr> = (100..110).map(ip).collect();
    sim.run(20, |_| 40.0, &attackers, 0, 0);

    let spikes = sim.fired(DetectorKind::RateSpike);
    assert_eq!(spikes.len(), 1, "{:?}", sim.found);
    let (when, d) = spikes[0];
    eprintln!("rate spike after {:?}: {:?}", *when - start, d.evidence);
    assert!(
        *when - start <= Duration::from_secs(5),
        "took {:?}",
        *when - start
    );
    assert_eq!(d.action, Action::Suspend);
    assert_eq!(d.severity, Severity::Critical);
    assert!(d.evidence.request_rate.unwrap() > 5.0 * d.evidence.baseline_request_rate.unwrap());
    assert!(!d.evidence.new_addresses.is_empty());
    assert!(d
        .evidence
        .new_addresses
        .iter()
        .all(|a| attackers.contains(a)));

    let sources = sim.fired(DetectorKind::NewSources);
    assert_eq!(sources.len(), 1);
    assert!(sources[0].0 - start <= Duration::from_secs(2));
    assert_eq!(sources[0].1.action, Action::Alert);
    assert_eq!(sources[0].1.evidence.new_address_count, Some(10));

    let json = serde_json::to_value(d).unwrap();
    assert_eq!(json["consumer"], "team-a");
    assert_eq!(json["detector"], "rate_spike");
    assert_eq!(json["action"], "suspend");
    assert!(json["evidence"]["new_addresses"].is_array());
}

#[test]
fn an_organic_two_fold_ramp_over_minutes_does_not_fire() {
    let mut sim = Sim::new(steady());
    let home: Vec<IpAddr> = (1..4).map(ip).collect();
    sim.run(15 * 60, |_| 3.0, &home, 200, 100);
    // 3 → 6 requests per second over 5 minutes, then an hour at the new level.
    sim.run(300, |s| 3.0 + 3.0 * s as f64 / 300.0, &home, 200, 100);
    sim.run(3600, |_| 6.0, &home, 200, 100);
    assert!(sim.found.is_empty(), "{:?}", sim.found);
    let config = sim.det.config();
    let (warm, baseline) = sim
        .det
        .state_of(&sim.name, |s| (s.warm(&config), s.baseline()))
        .unwrap();
    assert!(warm);
    let baseline = baseline.unwrap().requests;
    assert!(baseline > 4.5 && baseline < 6.0, "{baseline}");
}

#[test]
fn below_floor_traffic_never_fires() {
    let mut sim = Sim::new(steady());
    sim.run(20 * 60, |_| 0.02, &[ip(1)], 0, 0);
    // 40× the baseline, but under one request per second.
    sim.run(300, |_| 0.8, &[ip(1)], 0, 0);
    assert!(
        sim.fired(DetectorKind::RateSpike).is_empty(),
        "{:?}",
        sim.found
    );
}

#[test]
fn nothing_is_judged_during_warm_up() {
    let mut sim = Sim::new(steady());
    sim.run(5 * 60, |_| 1.0, &[ip(1)], 0, 0);
    let attackers: Vec<IpAddr> = (100..110).map(ip).collect();
    sim.run(60, |_| 40.0, &attackers, 0, 0);
    assert!(sim.found.is_empty(), "{:?}", sim.found);
}

#[test]
fn small_windows_from_config_detect_within_seconds() {
    let config: DetectConfig = serde_yaml::from_str(
        "short_window: 2s\nbaseline_interval: 2s\nbaseline_half_life: 60s\nwarmup: 10s\n",
    )
    .unwrap();
    let mut sim = Sim::new(config);
    sim.run(12, |_| 2.0, &[ip(1)], 0, 0);
    assert!(sim.found.is_empty());
    let start = sim.elapsed;
    sim.run(5, |_| 40.0, &[ip(7), ip(8), ip(9)], 0, 0);
    let spikes = sim.fired(DetectorKind::RateSpike);
    assert_eq!(spikes.len(), 1, "{:?}", sim.found);
    assert!(spikes[0].0 - start <= Duration::from_secs(2));
}

#[test]
fn cooldown_suppresses_repeats_until_it_expires() {
    let mut config = steady();
    config.cooldown = Duration::from_secs(60);
    let mut sim = Sim::new(config);
    sim.run(15 * 60, |_| 2.0, &[ip(1)], 0, 0);
    sim.run(50, |_| 40.0, &[ip(1)], 0, 0);
    assert_eq!(sim.fired(DetectorKind::RateSpike).len(), 1);
    sim.run(200, |_| 2.0, &[ip(1)], 0, 0);
    sim.run(30, |_| 60.0, &[ip(1)], 0, 0);
    assert_eq!(
        sim.fired(DetectorKind::RateSpike).len(),
        2,
        "{:?}",
        sim.found
    );
}

#[test]
fn canary_fires_immediately_and_respects_the_cooldown() {
    let det = Detectors::new(DetectConfig::default());
    let name: Arc<str> = "canary-1".into();
    let t0 = Instant::now();
    let wall = SystemTime::now();
    let d = det
        .canary_used_at(&name, Some(ip(9)), t0, wall)
        .expect("first use fires");
    assert_eq!(d.detector, DetectorKind::Canary);
    assert_eq!(d.severity, Severity::Critical);
    assert_eq!(d.action, Action::Suspend);
    assert_eq!(d.evidence.source, Some(ip(9)));
    assert!(det
        .canary_used_at(&name, Some(ip(9)), t0 + Duration::from_secs(60), wall)
        .is_none());
    assert!(det
        .canary_used_at(&name, None, t0 + Duration::from_secs(301), wall)
        .is_some());
    // Canaries fire even with the other detectors switched off, and evaluate never repeats them.
    let off = Detectors::new(DetectConfig {
        enabled: false,
        ..DetectConfig::default()
    });
    assert!(off.canary_used(&name, None).is_some());
    assert!(det.evaluate(t0 + Duration::from_secs(302)).is_empty());
}

#[test]
fn spend_velocity_throttles_and_the_projection_warns_before_the_budget_is_spent() {
    let mut sim = Sim::new(steady());
    // 1 request/s at 500 tokens and $0.001: $86/day of spend velocity.
    sim.run(15 * 60, |_| 1.0, &[ip(1)], 500, 1_000);
    assert!(sim.found.is_empty());
    sim.budget = Some(BudgetStatus {
        month_to_date_micro_usd: 100_000_000,
        budget_micro_usd: 500_000_000,
    });
    // 20 days left × $86 ≈ $1700 > $500.
    sim.run(2, |_| 1.0, &[ip(1)], 500, 1_000);
    let overrun = sim.fired(DetectorKind::BudgetOverrun);
    assert_eq!(overrun.len(), 1, "{:?}", sim.found);
    let e = &overrun[0].1.evidence;
    assert!(e.projected_micro_usd.unwrap() > 1_000_000_000, "{e:?}");
    assert_eq!(overrun[0].1.action, Action::Alert);

    // Tokens jump 20× per request: spend velocity, throttled.
    sim.run(10, |_| 1.0, &[ip(1)], 10_000, 20_000);
    let velocity = sim.fired(DetectorKind::SpendVelocity);
    assert_eq!(velocity.len(), 1, "{:?}", sim.found);
    assert!(matches!(velocity[0].1.action, Action::Throttle { factor, .. } if factor == 0.25));
    assert!(sim.fired(DetectorKind::RateSpike).is_empty());

    // Already over budget: the limiter handles it, the projection stays quiet.
    let mut sim = Sim::new(steady());
    sim.budget = Some(BudgetStatus {
        month_to_date_micro_usd: 600_000_000,
        budget_micro_usd: 500_000_000,
    });
    sim.run(15 * 60, |_| 1.0, &[ip(1)], 500, 1_000);
    assert!(sim.fired(DetectorKind::BudgetOverrun).is_empty());
}

#[test]
fn new_addresses_are_learned_slowly_after_warm_up() {
    let mut config = steady();
    config.new_sources.learn_after = Duration::from_secs(600);
    config.cooldown = Duration::from_secs(3600 * 3);
    let mut sim = Sim::new(config);
    sim.run(15 * 60, |_| 2.0, &[ip(1), ip(2)], 0, 0);
    let pods = [ip(1), ip(2), ip(50), ip(51), ip(52)];
    sim.run(20 * 60, |_| 2.5, &pods, 0, 0);
    assert_eq!(sim.fired(DetectorKind::NewSources).len(), 1);
    let slot = sim.det.slots.get(&sim.name).unwrap();
    let cell = slot.detector.lock().unwrap();
    let state = cell.as_ref().unwrap();
    assert_eq!(state.learned_len(), 5);
    assert_eq!(state.new_sources(sim.now(), Duration::from_secs(60)).0, 0);
}

#[test]
fn memory_stays_bounded_and_idle_consumers_are_evicted() {
    let mut config = steady();
    config.warmup = Duration::from_secs(60);
    config.idle_evict = Duration::from_secs(3600);
    let mut sim = Sim::new(config);
    let many: Vec<IpAddr> = (0..5000).map(ip).collect();
    sim.run(150, |_| 20.0, &many, 0, 0);
    let now = sim.now();
    let (learned, (count, listed)) = sim
        .det
        .state_of(&sim.name, |s| {
            (
                s.learned_len(),
                s.new_sources(now, Duration::from_secs(3600)),
            )
        })
        .unwrap();
    assert_eq!(learned, 256);
    assert!(count <= state::MAX_CANDIDATES, "{count}");
    assert!(listed.len() <= state::MAX_EVIDENCE_ADDRESSES);
    let other: Arc<str> = "team-b".into();
    sim.det
        .observe(&other, Observation::request(sim.now(), Some(ip(1))));
    assert_eq!(sim.det.len(), 2);
    assert_eq!(sim.det.evict_idle(sim.now() + Duration::from_secs(1800)), 0);
    sim.det.observe(
        &other,
        Observation::request(sim.now() + Duration::from_secs(3000), None),
    );
    assert_eq!(sim.det.evict_idle(sim.now() + Duration::from_secs(3700)), 1);
    assert_eq!(sim.det.len(), 1);
    sim.det.forget("team-b");
    assert!(sim.det.is_empty());
}

#[test]
fn charges_do_not_count_as_requests() {
    let det = Detectors::new(DetectConfig::default());
    let name: Arc<str> = "c".into();
    let t0 = Instant::now();
    let config = det.config();
    det.observe(&name, Observation::request(t0, None));
    det.observe(&name, Observation::charge(t0, None, 100, 7));
    let rates = det.state_of(&name, |s| s.short_rates(t0, &config)).unwrap();
    assert_eq!(rates.requests, 0.1);
    assert_eq!(rates.tokens, 10.0);
}

#[test]
fn a_disabled_config_observes_nothing() {
    let det = Detectors::new(DetectConfig {
        enabled: false,
        ..DetectConfig::default()
    });
    det.observe(&"c".into(), Observation::request(Instant::now(), None));
    assert!(det.is_empty());
}

#[test]
fn scaled_down_windows_catch_a_spike_within_seconds() {
    let config: DetectConfig = serde_yaml::from_str(
        "short_window: 2s\nbaseline_interval: 2s\nbaseline_half_life: 60s\nwarmup: 8s\ncooldown: 60s\n",
    )
    .unwrap();
    let mut sim = Sim::new(config);
    sim.run(12, |_| 4.0, &[ip(1)], 0, 0);
    let start = sim.elapsed;
    let attackers: Vec<IpAddr> = (100..120).map(ip).collect();
    sim.run(10, |_| 70.0, &attackers, 0, 0);
    let spikes = sim.fired(DetectorKind::RateSpike);
    assert_eq!(spikes.len(), 1, "{:?}", sim.found);
    assert!(spikes[0].0 - start <= Duration::from_secs(3));
}

#[test]
fn each_second_judges_the_busy_consumers_and_every_interval_judges_all() {
    let det = Detectors::new(steady());
    let t0 = Instant::now();
    let names: Vec<Arc<str>> = (0..50).map(|i| format!("c{i}").into()).collect();
    for name in &names {
        det.observe(name, Observation::request(t0, Some(ip(1))));
    }
    let judged = |at: Instant| {
        let calls = std::cell::Cell::new(0);
        det.evaluate_with(at, SystemTime::now(), |_| {
            calls.set(calls.get() + 1);
            None
        });
        calls.get()
    };
    assert_eq!(
        judged(t0 + Duration::from_secs(1)),
        50,
        "the first pass judges all"
    );
    det.observe(
        &names[7],
        Observation::request(t0 + Duration::from_secs(1), Some(ip(1))),
    );
    assert_eq!(
        judged(t0 + Duration::from_secs(2)),
        1,
        "then only the busy one"
    );
    assert_eq!(judged(t0 + Duration::from_secs(3)), 0);
    let interval = steady().baseline_interval;
    assert_eq!(
        judged(t0 + Duration::from_secs(1) + interval),
        50,
        "and all once per interval"
    );
}
