//! The memory side of [`SessionBindings`](super::SessionBindings): a compact table of
//! sessions that forgets those left unused.
//!
//! Why not a general cache: thousands of hibernated sessions stay in this table while
//! almost nothing else of theirs does. A cache that allocates a few small blocks per entry
//! leaves each of them in a page of the memory the session's worker used, so the freed
//! worker memory could not go back to the system (about 18 KB of resident memory per idle
//! session, for a few hundred bytes of data). Here an entry lives inline in its shard's
//! hash table (one large allocation), and the owner and `initialize` parameters, shared by
//! most sessions, are stored once each and shared.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, Hash, Hasher, RandomState};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// What is remembered of one session: who created it and, once rmcp has recorded it, the
/// client's `initialize` parameters as their JSON (all it takes to bring a hibernated
/// session back; a resume is rare enough to parse it again).
#[derive(Clone, Default)]
pub(super) struct Entry {
    pub(super) owner: Option<Arc<str>>,
    pub(super) state: Option<Arc<str>>,
    /// When the durable store last received this entry (seconds on the table's clock,
    /// [`SessionTable::now_s`]); `None` when unknown, as for an entry read back after a
    /// restart.
    pub(super) written: Option<u32>,
    /// When the durable store last showed that this session still exists (seconds on the
    /// table's clock): reading or writing it there. Another instance may delete it.
    pub(super) confirmed: u32,
}

const SHARDS: usize = 16;

/// Session ids up to this length are kept inline (rmcp's are 36-character UUIDs).
const INLINE: usize = 38;

/// A session id, inline when short: no allocation of its own.
enum Key {
    Inline { len: u8, bytes: [u8; INLINE] },
    Heap(Box<[u8]>),
}

impl Key {
    fn new(id: &str) -> Self {
        let b = id.as_bytes();
        match u8::try_from(b.len()) {
            Ok(len) if b.len() <= INLINE => {
                let mut bytes = [0; INLINE];
                bytes[..b.len()].copy_from_slice(b);
                Key::Inline { len, bytes }
            }
            _ => Key::Heap(b.into()),
        }
    }

    fn as_bytes(&self) -> &[u8] {
        match self {
            Key::Inline { len, bytes } => &bytes[..usize::from(*len)],
            Key::Heap(b) => b,
        }
    }
}

// Hash and equality are those of the bytes, so that the table can be searched with `&[u8]`.
impl Hash for Key {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_bytes().hash(state);
    }
}
impl PartialEq for Key {
    fn eq(&self, other: &Self) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}
impl Eq for Key {}
impl std::borrow::Borrow<[u8]> for Key {
    fn borrow(&self) -> &[u8] {
        self.as_bytes()
    }
}

struct Slot {
    entry: Entry,
    /// Last use, in milliseconds on the table's clock.
    used: u64,
}

struct Shard {
    map: HashMap<Key, Slot>,
    /// When expired entries are next swept out of this shard (milliseconds).
    next_sweep: u64,
}

/// Session id → [`Entry`], at most `capacity` entries, each forgotten `idle` after its
/// last use.
pub(super) struct SessionTable {
    shards: Box<[Mutex<Shard>]>,
    per_shard: usize,
    idle_ms: u64,
    epoch: Instant,
    hasher: RandomState,
    owners: Interner,
    states: Interner,
}

impl SessionTable {
    pub(super) fn new(capacity: u64, idle: Duration) -> Self {
        let per_shard = usize::try_from(capacity)
            .unwrap_or(usize::MAX)
            .div_ceil(SHARDS)
            .max(1);
        Self {
            shards: (0..SHARDS)
                .map(|_| {
                    Mutex::new(Shard {
                        map: HashMap::new(),
                        next_sweep: 0,
                    })
                })
                .collect(),
            per_shard,
            idle_ms: u64::try_from(idle.as_millis()).unwrap_or(u64::MAX).max(1),
            epoch: Instant::now(),
            hasher: RandomState::new(),
            owners: Interner::default(),
            states: Interner::default(),
        }
    }

    /// Seconds since the table was made; saturates after 136 years.
    pub(super) fn now_s(&self) -> u32 {
        u32::try_from(self.epoch.elapsed().as_secs()).unwrap_or(u32::MAX)
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// An owner as the table keeps it: one copy per distinct value.
    pub(super) fn owner(&self, principal: &str) -> Arc<str> {
        self.owners.intern(principal)
    }

    /// `initialize` parameters as the table keeps them: one copy per distinct value.
    pub(super) fn state(&self, json: &str) -> Arc<str> {
        self.states.intern(json)
    }

    fn shard(&self, id: &str) -> MutexGuard<'_, Shard> {
        let i = usize::try_from(self.hasher.hash_one(id.as_bytes()) % SHARDS as u64)
            .unwrap_or_default();
        // Every update is a single map operation, so a shard whose lock was poisoned by a
        // panic elsewhere is still consistent.
        self.shards[i].lock().unwrap_or_else(|e| e.into_inner())
    }

    fn expired(&self, used: u64, now: u64) -> bool {
        now.saturating_sub(used) >= self.idle_ms
    }

    /// The entry of `id`, counted as a use.
    pub(super) fn get(&self, id: &str) -> Option<Entry> {
        let now = self.now_ms();
        let mut shard = self.shard(id);
        let slot = shard.map.get_mut(id.as_bytes())?;
        if self.expired(slot.used, now) {
            shard.map.remove(id.as_bytes());
            return None;
        }
        slot.used = now;
        Some(slot.entry.clone())
    }

    /// Sets the entry of `id` to what `f` makes of the current one (if any, and unexpired),
    /// and returns it.
    pub(super) fn upsert(&self, id: &str, f: impl FnOnce(Option<Entry>) -> Entry) -> Entry {
        let now = self.now_ms();
        let mut shard = self.shard(id);
        let known = shard
            .map
            .remove(id.as_bytes())
            .filter(|s| !self.expired(s.used, now))
            .map(|s| s.entry);
        let entry = f(known);
        self.make_room(&mut shard, now);
        shard.map.insert(
            Key::new(id),
            Slot {
                entry: entry.clone(),
                used: now,
            },
        );
        entry
    }

    pub(super) fn remove(&self, id: &str) {
        self.shard(id).map.remove(id.as_bytes());
    }

    /// How many sessions the table holds (expired ones not yet swept included).
    pub(super) fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).map.len())
            .sum()
    }

    /// Before an insert: sweeps expired entries out of the shard now and then, and when it
    /// is full, forgets its least recently used session.
    fn make_room(&self, shard: &mut Shard, now: u64) {
        if now >= shard.next_sweep {
            shard.map.retain(|_, s| !self.expired(s.used, now));
            // After a burst has expired, give its memory back (a table never shrinks alone).
            if shard.map.capacity() > 64 && shard.map.len() < shard.map.capacity() / 4 {
                let keep = shard.map.len() * 2;
                shard.map.shrink_to(keep);
            }
            shard.next_sweep = now.saturating_add((self.idle_ms / 8).max(1));
            self.owners.prune_if_grown();
            self.states.prune_if_grown();
        } else if shard.map.len() >= self.per_shard {
            // Only this shard: a flood of new sessions into a full table costs each one a
            // pass over its shard, not over every owner and payload.
            shard.map.retain(|_, s| !self.expired(s.used, now));
        }
        if shard.map.len() >= self.per_shard {
            let oldest: Option<Vec<u8>> = shard
                .map
                .iter()
                .min_by_key(|(_, s)| s.used)
                .map(|(k, _)| k.as_bytes().to_vec());
            if let Some(k) = oldest {
                shard.map.remove(k.as_slice());
            }
        }
    }
}

/// One shared copy of each distinct string. Copies no entry uses any more are dropped
/// whenever the set has doubled since it was last pruned.
#[derive(Default)]
struct Interner {
    set: Mutex<InternSet>,
}

#[derive(Default)]
struct InternSet {
    values: HashSet<Arc<str>>,
    pruned_at: usize,
}

impl Interner {
    fn lock(&self) -> MutexGuard<'_, InternSet> {
        self.set.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn intern(&self, s: &str) -> Arc<str> {
        let mut set = self.lock();
        if let Some(known) = set.values.get(s) {
            return known.clone();
        }
        let value: Arc<str> = Arc::from(s);
        set.values.insert(value.clone());
        let grown = set.values.len() >= (set.pruned_at * 2).max(1024);
        if grown {
            Self::prune(&mut set);
        }
        value
    }

    fn prune_if_grown(&self) {
        let mut set = self.lock();
        if set.values.len() > set.pruned_at {
            Self::prune(&mut set);
        }
    }

    fn prune(set: &mut InternSet) {
        // Only the set itself holds a value nobody else uses.
        set.values.retain(|v| Arc::strong_count(v) > 1);
        set.pruned_at = set.values.len();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owned(owner: &str, t: &SessionTable) -> Entry {
        Entry {
            owner: Some(t.owner(owner)),
            ..Entry::default()
        }
    }

    #[test]
    fn short_and_long_ids_are_found_by_their_exact_bytes() {
        let t = SessionTable::new(100, Duration::from_secs(60));
        let long = "x".repeat(200);
        for id in ["0f0e6a54-1a3b-4c1d-9e8f-0123456789ab", long.as_str(), ""] {
            t.upsert(id, |_| owned("alice", &t));
            assert_eq!(t.get(id).unwrap().owner.as_deref(), Some("alice"));
        }
        assert!(t.get("0F0E6A54-1A3B-4C1D-9E8F-0123456789AB").is_none());
        assert!(t.get(&"x".repeat(199)).is_none());
        assert_eq!(t.len(), 3);
    }

    #[test]
    fn equal_owners_and_states_are_stored_once() {
        let t = SessionTable::new(100, Duration::from_secs(60));
        let a = t.upsert("s1", |_| Entry {
            owner: Some(t.owner(&String::from("alice"))),
            state: Some(t.state(&String::from("{\"v\":1}"))),
            written: None,
            confirmed: 0,
        });
        let b = t.upsert("s2", |_| Entry {
            owner: Some(t.owner(&String::from("alice"))),
            state: Some(t.state(&String::from("{\"v\":1}"))),
            written: None,
            confirmed: 0,
        });
        assert!(Arc::ptr_eq(
            a.owner.as_ref().unwrap(),
            b.owner.as_ref().unwrap()
        ));
        assert!(Arc::ptr_eq(
            a.state.as_ref().unwrap(),
            b.state.as_ref().unwrap()
        ));
    }

    #[test]
    fn an_entry_unused_for_the_idle_period_is_forgotten_and_a_used_one_kept() {
        // Uses 600 ms apart keep a 2 s entry alive with room for a loaded machine's late wake-ups.
        let t = SessionTable::new(100, Duration::from_secs(2));
        t.upsert("used", |_| owned("alice", &t));
        t.upsert("unused", |_| owned("alice", &t));
        for _ in 0..4 {
            std::thread::sleep(Duration::from_millis(600));
            assert!(t.get("used").is_some());
        }
        assert!(t.get("unused").is_none());
    }

    #[test]
    fn the_memory_of_an_expired_burst_is_given_back_on_the_next_sweep() {
        let t = SessionTable::new(100_000, Duration::from_millis(200));
        for i in 0..20_000 {
            t.upsert(&format!("s{i}"), |_| owned("alice", &t));
        }
        let slots = |t: &SessionTable| -> usize {
            t.shards
                .iter()
                .map(|s| s.lock().unwrap().map.capacity())
                .sum()
        };
        assert!(slots(&t) >= 20_000);
        std::thread::sleep(Duration::from_millis(300));
        // One insert into every shard sweeps it.
        for i in 0..2_000 {
            t.upsert(&format!("late{i}"), |_| owned("alice", &t));
        }
        assert_eq!(t.len(), 2_000);
        assert!(slots(&t) < 8_000, "{} slots kept", slots(&t));
    }

    #[test]
    fn a_full_table_forgets_its_least_recently_used_session() {
        // One session per shard at most: every shard keeps only its latest.
        let t = SessionTable::new(SHARDS as u64, Duration::from_secs(60));
        for i in 0..200 {
            t.upsert(&format!("s{i}"), |_| owned("alice", &t));
        }
        assert!(t.len() <= SHARDS, "{} sessions kept", t.len());
        assert!(t.get("s199").is_some());
    }

    #[test]
    fn values_no_entry_uses_are_dropped_once_the_set_has_grown() {
        let t = SessionTable::new(100_000, Duration::from_secs(60));
        for i in 0..3000 {
            let id = format!("s{i}");
            t.upsert(&id, |_| owned(&format!("user{i}"), &t));
            t.remove(&id);
        }
        assert!(t.owners.lock().values.len() < 1100);
    }

    #[test]
    fn threads_binding_and_reading_at_once_all_find_their_sessions() {
        let t = Arc::new(SessionTable::new(100_000, Duration::from_secs(60)));
        let workers: Vec<_> = (0..4)
            .map(|w| {
                let t = t.clone();
                std::thread::spawn(move || {
                    for i in 0..2000 {
                        let id = format!("w{w}-s{i}");
                        // Distinct owners now and then, so the owner set is pruned meanwhile.
                        let owner = t.owner(&format!("user{}", i % 1500));
                        t.upsert(&id, |_| Entry {
                            owner: Some(owner),
                            ..Entry::default()
                        });
                        assert!(t.get(&id).is_some());
                        if i % 3 == 0 {
                            t.remove(&id);
                        }
                    }
                })
            })
            .collect();
        for w in workers {
            w.join().unwrap();
        }
        assert_eq!(t.len(), 4 * (2000 - 667));
        assert_eq!(
            t.get("w3-s1").and_then(|e| e.owner).as_deref(),
            Some("user1")
        );
    }
}
