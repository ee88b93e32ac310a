//! The failed-authentication guard: a bucket per source address that failed to authenticate,
//! so one address cannot try keys faster than `limits.failed_auth_per_minute`. Kept in this
//! process only (an attacker spreading over replicas gains at most the replica count).

use std::net::IpAddr;
use std::sync::Mutex;

use dashmap::DashMap;

use super::bucket::{Bucket, Rate};
use super::local::Clock;
use super::policy::Window;
use super::store::Refusal;

#[derive(Debug, Default)]
pub struct SourceGuard {
    sources: DashMap<IpAddr, Mutex<Bucket>>,
    clock: Clock,
}

impl SourceGuard {
    /// Refuses an address that failed authentication too often recently.
    pub fn check(&self, ip: IpAddr, rate: &Rate) -> Result<(), Refusal> {
        let Some(entry) = self.sources.get(&ip) else {
            return Ok(());
        };
        let mut bucket = entry.lock().unwrap_or_else(|p| p.into_inner());
        match bucket.wait(rate, 1, self.clock.now_ms()) {
            d if d.is_zero() => Ok(()),
            retry_after => Err(Refusal {
                window: Window::Minute,
                limit: rate.limit,
                retry_after,
            }),
        }
    }

    /// Counts one failed authentication from `ip`.
    pub fn failed(&self, ip: IpAddr, rate: &Rate) {
        let now = self.clock.now_ms();
        let entry = self
            .sources
            .entry(ip)
            .or_insert_with(|| Mutex::new(Bucket::full(rate, now)));
        let mut bucket = entry.lock().unwrap_or_else(|p| p.into_inner());
        bucket.take(rate, 1, now);
    }

    /// Forgets addresses whose bucket is full again.
    pub fn evict_idle(&self, rate: &Rate) -> usize {
        let now = self.clock.now_ms();
        let before = self.sources.len();
        self.sources.retain(|_, b| {
            !b.get_mut()
                .unwrap_or_else(|p| p.into_inner())
                .is_full(rate, now)
        });
        before - self.sources.len()
    }

    pub fn len(&self) -> usize {
        self.sources.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sources.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_authentications_lock_out_an_address() {
        let guard = SourceGuard::default();
        let rate = Rate::per(3, Window::Minute.duration());
        let ip: IpAddr = "127.0.0.9".parse().unwrap();
        for _ in 0..3 {
            guard.check(ip, &rate).unwrap();
            guard.failed(ip, &rate);
        }
        assert!(guard.check(ip, &rate).is_err());
        assert!(guard.check("127.0.0.10".parse().unwrap(), &rate).is_ok());
    }
}
