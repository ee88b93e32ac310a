//! Budgets counted by this process alone: month-to-date spend from this replica's ledger plus
//! the reservations of its requests in flight. A reservation is admitted only if the spend,
//! everything reserved and the new reservation fit the budget, so concurrent requests cannot
//! overshoot it.

use std::sync::Arc;

use dashmap::DashMap;

use crate::accounting::ledger::Ledger;

#[derive(Debug)]
pub struct LocalBudgets {
    ledger: Arc<Ledger>,
    /// Reservations in flight per budget key (any month: a reservation is short-lived).
    reserved: DashMap<Arc<str>, u64>,
}

impl LocalBudgets {
    pub fn new(ledger: Arc<Ledger>) -> Self {
        LocalBudgets {
            ledger,
            reserved: DashMap::new(),
        }
    }

    /// Reserves `micro_usd` of `key`'s `budget` for `month`, or refuses.
    pub fn reserve(&self, key: &Arc<str>, month: &str, budget: u64, micro_usd: u64) -> bool {
        let spent = self.ledger.month_total(key, month);
        let mut reserved = self.reserved.entry(key.clone()).or_insert(0);
        let committed = spent.saturating_add(*reserved);
        if committed >= budget || committed.saturating_add(micro_usd) > budget {
            return false;
        }
        *reserved = reserved.saturating_add(micro_usd);
        true
    }

    /// Ends a reservation (the charge itself is already in the ledger).
    pub fn settle(&self, key: &Arc<str>, reserved: u64) {
        if let Some(mut r) = self.reserved.get_mut(key) {
            *r = r.saturating_sub(reserved);
        }
        self.reserved.remove_if(key, |_, r| *r == 0);
    }

    /// This replica's month total of `key` (its ledger).
    pub fn spent(&self, key: &str, month: &str) -> u64 {
        self.ledger.month_total(key, month)
    }
}
