//! What each active consumer holds at run time, in one map: its metrics record, its limiter
//! buckets and its detector state.
//!
//! One entry per consumer rather than one in each subsystem's own map. At a million active
//! consumers an entry costs about 52 B (24 bytes at a load factor of 0.48: a million entries
//! land just past a power of two), and each separately boxed state a malloc header; three
//! maps cost three of each. [`Meters`](crate::accounting::Meters),
//! [`LocalBuckets`](crate::limits::local::LocalBuckets) and
//! [`Detectors`](crate::detect::Detectors) each reach their own part of a slot by the
//! consumer's name and never another's. A slot whose parts are all empty is removed by the
//! sweep that emptied it ([`ConsumerSlots::remove_empty`]).
//!
//! Locking order: a map shard, then at most one part's lock; nothing reaches the map while it
//! holds a part's lock.

use std::sync::{Arc, Mutex};

use arc_swap::ArcSwapOption;
use dashmap::mapref::one::{Ref, RefMut};
use dashmap::DashMap;

use crate::accounting::record::Record;
use crate::detect::state::ConsumerState as DetectorState;
use crate::limits::consumer_buckets::ConsumerBuckets;

/// One consumer's parts, inline: a slot is one heap block.
#[derive(Debug, Default)]
pub struct Slot {
    pub(crate) record: ArcSwapOption<Record>,
    pub(crate) buckets: Mutex<ConsumerBuckets>,
    pub(crate) detector: Mutex<Option<DetectorState>>,
}

impl Slot {
    fn is_empty(&mut self) -> bool {
        let buckets = self.buckets.get_mut().unwrap_or_else(|p| p.into_inner());
        let detector = self.detector.get_mut().unwrap_or_else(|p| p.into_inner());
        self.record.load().is_none() && buckets.is_empty() && detector.is_none()
    }
}

/// A consumer's slot, read-shared.
pub type SlotRef<'a> = Ref<'a, Arc<str>, Box<Slot>>;

/// Every active consumer's slot, by consumer name.
#[derive(Debug, Default)]
pub struct ConsumerSlots {
    /// Boxed: the map's spare capacity then costs a pointer per bucket, not a whole slot.
    slots: DashMap<Arc<str>, Box<Slot>>,
}

impl ConsumerSlots {
    /// The consumer's slot, if it has one.
    pub fn get(&self, consumer: &str) -> Option<SlotRef<'_>> {
        self.slots.get(consumer)
    }

    /// The consumer's slot, made empty if it had none.
    pub fn get_or_make(&self, consumer: &Arc<str>) -> SlotRef<'_> {
        if let Some(slot) = self.slots.get(&**consumer) {
            return slot;
        }
        self.exclusive(consumer).downgrade()
    }

    /// The consumer's slot (made if missing), held exclusively until the guard drops: for a
    /// change that must not race another, such as replacing a record.
    pub fn exclusive(&self, consumer: &Arc<str>) -> RefMut<'_, Arc<str>, Box<Slot>> {
        self.slots.entry(consumer.clone()).or_default()
    }

    /// Calls `f` with every slot (shard by shard; `f` must not reach this map).
    pub fn for_each(&self, mut f: impl FnMut(&Arc<str>, &Slot)) {
        for entry in self.slots.iter() {
            f(entry.key(), entry.value());
        }
    }

    /// Removes the slots whose parts are all empty.
    pub fn remove_empty(&self) {
        self.slots.retain(|_, slot| !slot.is_empty());
    }

    /// Slots held, empty or not.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pins the slot's size: a million active consumers hold a million of these, each one
    /// heap block of at most 368 bytes (glibc's chunk for a 360-byte request).
    #[test]
    fn slot_stays_one_small_block() {
        let size = std::mem::size_of::<Slot>();
        assert!(size <= 360, "{size}");
    }

    #[test]
    fn a_slot_emptied_of_every_part_is_removed_and_one_with_a_part_stays() {
        let slots = ConsumerSlots::default();
        let (a, b): (Arc<str>, Arc<str>) = ("a".into(), "b".into());
        slots.get_or_make(&a);
        slots
            .get_or_make(&b)
            .record
            .store(Some(Arc::new(Record::default())));
        slots.remove_empty();
        assert!(slots.get("a").is_none());
        assert!(slots.get("b").is_some());
        assert_eq!(slots.len(), 1);
    }
}
