//! Each emergency group's open incidents, and from them its desired state,
//! kept up to date incident by incident.
//!
//! A group's queue list is its open incidents' queues in priority, then
//! arrival, then list order, without repeats. Built from scratch it costs
//! every queue of every open incident, with a repeat check for each: a
//! sender that opened a thousand incidents of fifty queues each made that
//! tens of thousands of string comparisons per queue on every read of
//! every group, and stalled the service for seconds (RELIABILITY.md, hostile senders, #1).
//! Here each queue remembers its *slots* — where the open incidents list
//! it — and the list is read off the queues' best slots in order. Opening
//! or closing an incident costs its own queues; reading the list costs at
//! most [`MAX_GROUP_QUEUES`] lookups, and is cached until the group changes.

use std::cell::OnceCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::event::{IncidentKey, Priority, QueueId};

use super::{Desired, Incident};

/// The most queues a group's list holds: the most urgent ones, in order.
/// Queues beyond it are left out of the list (counted in
/// [`Desired::queues_total`]); the group is switched on all the same. A
/// flow routes to the first queues of the list (Genesys allows 25 dynamic
/// queue finds per flow), so this leaves room to spare while bounding the
/// row, the state view and the guide-contract driver's body.
pub const MAX_GROUP_QUEUES: usize = 100;

/// An open incident's rank in its group: priority (1 is the most urgent),
/// then arrival.
pub(super) type Rank = (Priority, u64);

/// Where an open incident lists a queue: its rank, then the queue's
/// position in its list. Slots order queues exactly as the list does.
type Slot = (Priority, u64, u16);

/// One group's open incidents and the order of their queues.
#[derive(Debug, Default)]
pub(super) struct GroupIndex {
    /// Open incidents, most urgent (then oldest) first.
    open: BTreeMap<Rank, IncidentKey>,
    /// Every slot of each queue, best first. Most queues have one.
    slots: HashMap<QueueId, Vec<Slot>>,
    /// Each queue's best slot, in list order.
    order: BTreeSet<Slot>,
    /// The desired state, until the group changes.
    desired: OnceCell<Desired>,
}

fn slot((priority, seq): Rank, position: usize) -> Slot {
    // Lists hold at most 50 queues; saturating keeps a longer one ordered.
    (priority, seq, u16::try_from(position).unwrap_or(u16::MAX))
}

impl GroupIndex {
    /// An incident opened in this group (or came back to it).
    pub(super) fn add(&mut self, rank: Rank, key: &IncidentKey, queues: &[QueueId]) {
        self.desired = OnceCell::new();
        self.open.insert(rank, key.clone());
        for (position, q) in queues.iter().enumerate() {
            let s = slot(rank, position);
            let best = match self.slots.get_mut(q) {
                Some(slots) => {
                    let at = slots.binary_search(&s).unwrap_or_else(|at| at);
                    slots.insert(at, s);
                    // A new best slot moves the queue up the list.
                    (at == 0).then(|| slots.get(1).copied()).map(|old| (old, s))
                }
                None => {
                    self.slots.insert(q.clone(), vec![s]);
                    Some((None, s))
                }
            };
            if let Some((old, new)) = best {
                if let Some(old) = old {
                    self.order.remove(&old);
                }
                self.order.insert(new);
            }
        }
    }

    /// An incident left this group's open incidents (closed, or moved away
    /// from it); `rank` and `queues` are what [`GroupIndex::add`] was given.
    pub(super) fn remove(&mut self, rank: Rank, queues: &[QueueId]) {
        self.desired = OnceCell::new();
        self.open.remove(&rank);
        for (position, q) in queues.iter().enumerate() {
            let s = slot(rank, position);
            let Some(slots) = self.slots.get_mut(q) else {
                continue;
            };
            let Ok(at) = slots.binary_search(&s) else {
                continue;
            };
            slots.remove(at);
            if at == 0 {
                self.order.remove(&s);
                match slots.first() {
                    Some(next) => {
                        self.order.insert(*next);
                    }
                    None => {
                        self.slots.remove(q);
                    }
                }
            }
        }
    }

    /// The open incidents' keys, most urgent first.
    pub(super) fn open(&self) -> impl Iterator<Item = &IncidentKey> {
        self.open.values()
    }

    /// The group's desired state, computed once per change.
    pub(super) fn desired(&self, incidents: &HashMap<IncidentKey, Incident>) -> &Desired {
        self.desired.get_or_init(|| {
            let queues = self
                .order
                .iter()
                .take(MAX_GROUP_QUEUES)
                .filter_map(|&(priority, seq, position)| {
                    let key = self.open.get(&(priority, seq))?;
                    let inc = incidents.get(key)?;
                    inc.queues.get(usize::from(position)).cloned()
                })
                .collect();
            Desired {
                enabled: !self.open.is_empty(),
                queues,
                queues_total: self.order.len(),
                incidents: self.open.values().cloned().collect(),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;
    use crate::event::{CorrelationId, Source};

    fn key(id: &str) -> IncidentKey {
        IncidentKey {
            source: Source::Canonical,
            id: CorrelationId::parse(id).unwrap(),
        }
    }

    /// The list as the rule states it, the slow way, for comparison.
    fn by_the_rule(open: &BTreeMap<Rank, Vec<QueueId>>) -> (Vec<QueueId>, usize) {
        let mut all: Vec<QueueId> = Vec::new();
        for queues in open.values() {
            for q in queues {
                if !all.contains(q) {
                    all.push(q.clone());
                }
            }
        }
        let total = all.len();
        all.truncate(MAX_GROUP_QUEUES);
        (all, total)
    }

    #[test]
    fn the_list_follows_every_add_and_remove() {
        let mut g = GroupIndex::default();
        let mut incidents = HashMap::new();
        let mut open: BTreeMap<Rank, Vec<QueueId>> = BTreeMap::new();
        // A deterministic mix of overlapping lists, priorities and closes.
        let mut s: u64 = 7;
        let mut next = || {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            s >> 33
        };
        for seq in 0..400u64 {
            if next() % 3 == 0 && !open.is_empty() {
                let pick = usize::try_from(next()).unwrap() % open.len();
                let (rank, queues) = open.iter().nth(pick).map(|(r, q)| (*r, q.clone())).unwrap();
                g.remove(rank, &queues);
                open.remove(&rank);
            } else {
                let rank = (u8::try_from(next() % 4).unwrap() + 1, seq);
                let n = usize::try_from(next() % 6).unwrap();
                let queues: Vec<QueueId> = (0..n)
                    .map(|_| QueueId::parse(&format!("q{}", next() % 40)).unwrap())
                    .collect::<BTreeSet<_>>()
                    .into_iter()
                    .collect();
                let k = key(&format!("I{seq}"));
                incidents.insert(
                    k.clone(),
                    super::super::tests::incident_with(&k, rank, &queues),
                );
                g.add(rank, &k, &queues);
                open.insert(rank, queues);
            }
            let d = g.desired(&incidents);
            let (queues, total) = by_the_rule(&open);
            assert_eq!(d.queues, queues, "after step {seq}");
            assert_eq!(d.queues_total, total);
            assert_eq!(d.enabled, !open.is_empty());
            assert_eq!(d.incidents.len(), open.len());
        }
    }

    #[test]
    fn a_long_list_is_cut_at_the_bound_most_urgent_first() {
        let mut g = GroupIndex::default();
        let mut incidents = HashMap::new();
        for i in 0..30u64 {
            let queues: Vec<QueueId> = (0..10)
                .map(|j| QueueId::parse(&format!("q-{i}-{j}")).unwrap())
                .collect();
            let k = key(&format!("I{i}"));
            // The last incident is the most urgent.
            let rank = (if i == 29 { 1 } else { 3 }, i);
            incidents.insert(
                k.clone(),
                super::super::tests::incident_with(&k, rank, &queues),
            );
            g.add(rank, &k, &queues);
        }
        let d = g.desired(&incidents);
        assert_eq!(d.queues.len(), MAX_GROUP_QUEUES);
        assert_eq!(d.queues_total, 300);
        assert_eq!(d.queues[0].as_str(), "q-29-0");
        assert_eq!(d.queues[10].as_str(), "q-0-0");
        assert_eq!(d.incidents[0], key("I29"));
        assert_eq!(d.incidents.len(), 30);
    }
}
