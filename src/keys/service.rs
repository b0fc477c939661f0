//! The key service: data keys by owner, unwrapped once and cached.
//!
//! Owners are `subject:<id>` (randomised tokens) and `category:<name>`
//! (deterministic tokens). A subject's key is made on its first write; a
//! destroyed key never comes back (crypto-shredding), and nothing under it
//! decrypts again, also after a restart.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use super::KeyError;
use super::master::MasterKeys;
use super::store::{Binding, KeyStore, StoredKey};
use super::wrap::{DataKey, KeyId};
use crate::clock::Clock;
use crate::consent::store::StoreError;

/// Why a key is not available.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeysError {
    #[error("the key of this owner was destroyed")]
    Destroyed,
    /// A create's key could not be bound to the id the CRM assigned: the
    /// id already has a key (or the pending key is no longer stored).
    #[error("the id already has a key")]
    Taken,
    #[error("{0}")]
    Key(#[from] KeyError),
    #[error("{0}")]
    Store(#[from] StoreError),
}

#[derive(Debug)]
pub struct Keys {
    /// The master key ring; read by key lookups, written by rotation.
    rotation: RwLock<MasterKeys>,
    store: Arc<dyn KeyStore>,
    clock: Arc<dyn Clock>,
    cache: RwLock<Cache>,
    /// Keys for creates, already stored under pending owners (in batches),
    /// so that a create does not wait for a store commit before it is sent.
    pool: std::sync::Mutex<Vec<(String, Arc<DataKey>)>>,
    refilling: std::sync::atomic::AtomicBool,
    /// Bindings waiting for the next group commit.
    binds: std::sync::Mutex<BindQueue>,
}

/// Group commit of bindings: the first binder to arrive starts a leader
/// (on a blocking-pool thread when there is a runtime) that commits every
/// binding queued meanwhile in one transaction, and keeps going while more
/// arrive. Binders hold a ticket and wait for it only when their answer is
/// about to leave, so the commit overlaps the rest of the request (its
/// audit event's commit above all). Under concurrent creates one durable
/// commit serves several.
#[derive(Debug, Default)]
struct BindQueue {
    waiting: Vec<Queued>,
    leader: bool,
}

/// A binding waiting for its commit: the pending owner, the subject's
/// owner, the key (wrapped for the subject at commit time, under the ring
/// current then), the cache generation it was read in, and its ticket.
#[derive(Debug)]
struct Queued {
    pending: String,
    owner: String,
    key: Arc<DataKey>,
    before: u64,
    slot: Arc<BindSlot>,
}

/// A binding on its way to the store. Cheap to clone; every clone sees the
/// same result.
#[derive(Debug, Clone)]
pub struct BindTicket(Arc<BindSlot>);

impl BindTicket {
    /// Waits for the binding's commit: `Taken` if the subject already had
    /// a key, a store error if it could not be stored.
    pub async fn bound(&self) -> Result<(), KeysError> {
        loop {
            let notified = self.0.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(r) = self.0.peek() {
                return r;
            }
            notified.await;
        }
    }

    /// The binding's result, if it is known already.
    pub fn ready(&self) -> Option<Result<(), KeysError>> {
        self.0.peek()
    }
}

/// The group commit's leader, while it leads: if it unwinds, its batch and
/// everyone queued get an error, and the next binder leads.
struct Leader<'a> {
    keys: &'a Keys,
    in_flight: Vec<Arc<BindSlot>>,
}

/// A leader that was started but never ran.
struct Unled(Option<Arc<Keys>>);

impl Drop for Unled {
    fn drop(&mut self) {
        if let Some(keys) = self.0.take() {
            drop(Leader {
                keys: &keys,
                in_flight: Vec::new(),
            });
        }
    }
}

fn bind_failed() -> Result<(), KeysError> {
    Err(KeysError::Store(StoreError(
        "the key binding failed".into(),
    )))
}

impl Drop for Leader<'_> {
    fn drop(&mut self) {
        for s in self.in_flight.drain(..) {
            s.set(bind_failed());
        }
        // Also when poisoned: a stuck flag would leave every later binding
        // waiting.
        {
            let mut q = self
                .keys
                .binds
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            q.leader = false;
            for w in q.waiting.drain(..) {
                w.slot.set(bind_failed());
            }
        }
    }
}

#[derive(Debug, Default)]
struct BindSlot {
    done: std::sync::Mutex<Option<Result<(), KeysError>>>,
    notify: tokio::sync::Notify,
}

impl BindSlot {
    fn set(&self, r: Result<(), KeysError>) {
        if let Ok(mut d) = self.done.lock() {
            d.get_or_insert(r);
        }
        self.notify.notify_waiters();
    }

    fn peek(&self) -> Option<Result<(), KeysError>> {
        match self.done.lock() {
            Ok(d) => d.clone(),
            Err(_) => Some(Err(Keys::poisoned())),
        }
    }
}

/// A create takes a stored key from the pool; below this many left, the
/// pool is refilled (in the background) with `POOL_BATCH` more.
const POOL_LOW: usize = 16;
const POOL_BATCH: usize = 64;

#[derive(Debug, Default)]
struct Cache {
    map: HashMap<String, Arc<DataKey>>,
    /// Owners known to have no live key (most customers, until their first
    /// encrypted write), so that reading them costs no store access; `true`
    /// if their key was destroyed.
    absent: HashMap<String, bool>,
    /// Bumped by every destruction, so that a key read from the store
    /// before it was destroyed is not cached after.
    generation: u64,
}

/// A subject's data key, as a record's tokens need it.
#[derive(Debug, Clone)]
pub enum Held {
    Live(Arc<DataKey>),
    /// Never made: the subject has no randomised tokens.
    Never,
    /// Destroyed (crypto-shredding): none of the subject's tokens opens.
    Shredded,
}

/// How many key-less owners the cache remembers before it starts over.
const MAX_ABSENT: usize = 1 << 20;

pub fn subject_owner(subject: &str) -> String {
    format!("subject:{subject}")
}

pub fn category_owner(category: &str) -> String {
    format!("category:{category}")
}

/// The owner of a create's key until the CRM names the record.
pub fn pending_owner() -> Result<String, KeyError> {
    let r: [u8; 16] = super::random()?;
    Ok(format!("pending:{}", crate::config::hex(&r)))
}

impl Keys {
    pub fn new(ring: MasterKeys, store: Arc<dyn KeyStore>, clock: Arc<dyn Clock>) -> Keys {
        Keys {
            rotation: RwLock::new(ring),
            store,
            clock,
            cache: RwLock::new(Cache::default()),
            pool: std::sync::Mutex::new(Vec::new()),
            refilling: std::sync::atomic::AtomicBool::new(false),
            binds: std::sync::Mutex::new(BindQueue::default()),
        }
    }

    fn cached(&self, owner: &str) -> Option<Arc<DataKey>> {
        self.cache.read().ok()?.map.get(owner).cloned()
    }

    fn poisoned() -> KeysError {
        KeysError::Store(StoreError("key cache poisoned".into()))
    }

    fn generation(&self) -> Result<u64, KeysError> {
        self.cache
            .read()
            .map(|c| c.generation)
            .map_err(|_| Self::poisoned())
    }

    /// Caches a key read while the generation was `before`. A destruction
    /// since then may have been of this very key: then the store is asked
    /// again, and the key is used only if it is still live there (a
    /// customer's key is not refused because another customer was shredded).
    fn remember(
        &self,
        owner: &str,
        dk: Arc<DataKey>,
        mut before: u64,
    ) -> Result<Arc<DataKey>, KeysError> {
        for _ in 0..4 {
            {
                let mut c = self.cache.write().map_err(|_| Self::poisoned())?;
                if c.generation == before {
                    c.map.insert(owner.to_owned(), Arc::clone(&dk));
                    c.absent.remove(owner);
                    return Ok(dk);
                }
                before = c.generation;
            }
            match self.store.get(owner)? {
                Some(StoredKey::Live(w)) if w.id == dk.id => {}
                _ => return Err(KeysError::Destroyed),
            }
        }
        // Destructions keep coming: fail this one closed.
        Err(KeysError::Destroyed)
    }

    /// The key new tokens of `owner` use: made and stored on first use.
    /// Blocking (store access on a miss).
    pub fn for_write(&self, owner: &str) -> Result<Arc<DataKey>, KeysError> {
        if let Some(k) = self.cached(owner) {
            return Ok(k);
        }
        let before = self.generation()?;
        // Held until the key is stored, so that a rotation cannot swap the
        // ring between wrapping and storing (see `rotate`).
        let ring = self.rotation.read().map_err(|_| Self::poisoned())?;
        let stored = match self.store.get(owner)? {
            Some(s) => s,
            None => {
                let fresh = DataKey::generate()?;
                let wrapped = ring.wrap(owner, &fresh)?;
                // Another writer may have won the race; its key is the one.
                self.store.insert(owner, &wrapped, self.clock.now_ms())?
            }
        };
        match stored {
            StoredKey::Live(w) => self.remember(owner, Arc::new(ring.unwrap(owner, &w)?), before),
            StoredKey::Destroyed { .. } => Err(KeysError::Destroyed),
        }
    }

    /// The key a token of `owner` with id `id` needs, if it exists and is
    /// not destroyed. Blocking (store access on a miss).
    pub fn for_read(&self, owner: &str, id: KeyId) -> Result<Arc<DataKey>, KeysError> {
        match self.held(owner)? {
            Held::Live(dk) if dk.id == id => Ok(dk),
            Held::Shredded => Err(KeysError::Destroyed),
            Held::Live(_) | Held::Never => Err(KeysError::Key(KeyError::Decrypt)),
        }
    }

    /// What `owner` holds: from the cache, else from the store (remembered).
    fn held(&self, owner: &str) -> Result<Held, KeysError> {
        if let Some(k) = self.cached(owner) {
            return Ok(Held::Live(k));
        }
        let before = self.generation()?;
        Ok(match self.store.get(owner)? {
            Some(StoredKey::Live(w)) => {
                let ring = self.rotation.read().map_err(|_| Self::poisoned())?;
                match self.remember(owner, Arc::new(ring.unwrap(owner, &w)?), before) {
                    Ok(k) => Held::Live(k),
                    Err(KeysError::Destroyed) => Held::Shredded,
                    Err(e) => return Err(e),
                }
            }
            Some(StoredKey::Destroyed { .. }) => {
                self.remember_absent(owner.to_owned(), true);
                Held::Shredded
            }
            None => {
                self.remember_absent(owner.to_owned(), false);
                Held::Never
            }
        })
    }

    /// The key of `owner` if it is cached (no store access).
    pub fn cached_key(&self, owner: &str) -> Option<Arc<DataKey>> {
        self.cached(owner)
    }

    /// What the cache knows of `subject`'s key; `None`: ask the store.
    pub fn cached_subject(&self, subject: &str) -> Option<Held> {
        let owner = subject_owner(subject);
        let c = self.cache.read().ok()?;
        if let Some(k) = c.map.get(&owner) {
            return Some(Held::Live(Arc::clone(k)));
        }
        c.absent.get(&owner).map(|&shredded| {
            if shredded {
                Held::Shredded
            } else {
                Held::Never
            }
        })
    }

    /// Remembers that `owner` has no live key (checked after the map).
    /// "Shredded" is never taken back by a lookup that raced the shredding.
    fn remember_absent(&self, owner: String, shredded: bool) {
        if let Ok(mut c) = self.cache.write() {
            if c.absent.len() >= MAX_ABSENT {
                c.absent.clear();
            }
            *c.absent.entry(owner).or_insert(false) |= shredded;
        }
    }

    /// The keys of `subjects`. Blocking (store access on misses).
    pub fn subject_keys(&self, subjects: &[String]) -> Result<HashMap<String, Held>, KeysError> {
        subjects
            .iter()
            .map(|s| Ok((s.clone(), self.held(&subject_owner(s))?)))
            .collect()
    }

    /// A create's key, already stored under its pending owner, if the pool
    /// has one; and whether the pool wants a refill (`refill_pool`).
    pub fn take_pending(&self) -> (Option<(String, Arc<DataKey>)>, bool) {
        let Ok(mut p) = self.pool.lock() else {
            return (None, false);
        };
        let got = p.pop();
        let low = p.len() < POOL_LOW
            && !self
                .refilling
                .swap(true, std::sync::atomic::Ordering::AcqRel);
        (got, low)
    }

    /// Stores a batch of fresh create keys under pending owners in one
    /// commit, then offers them to creates. Blocking. Keys left in the pool
    /// at exit stay in the store unused (never bound, never handed out again).
    pub fn refill_pool(&self) -> Result<(), KeysError> {
        let result = (|| {
            let ring = self.rotation.read().map_err(|_| Self::poisoned())?;
            let mut fresh = Vec::with_capacity(POOL_BATCH);
            let mut rows = Vec::with_capacity(POOL_BATCH);
            for _ in 0..POOL_BATCH {
                let owner = pending_owner()?;
                let dk = DataKey::generate()?;
                rows.push((owner.clone(), ring.wrap(&owner, &dk)?));
                fresh.push((owner, Arc::new(dk)));
            }
            self.store.insert_all(&rows, self.clock.now_ms())?;
            drop(ring);
            if let Ok(mut p) = self.pool.lock() {
                p.extend(fresh);
            }
            Ok(())
        })();
        self.refilling
            .store(false, std::sync::atomic::Ordering::Release);
        result
    }

    /// Stores a create's fresh key under its pending owner, before anything
    /// sealed with it is sent. Blocking.
    pub fn store_pending(&self, pending: &str, dk: &DataKey) -> Result<(), KeysError> {
        let ring = self.rotation.read().map_err(|_| Self::poisoned())?;
        let wrapped = ring.wrap(pending, dk)?;
        match self.store.insert(pending, &wrapped, self.clock.now_ms())? {
            StoredKey::Live(w) if w.id == dk.id => Ok(()),
            _ => Err(KeysError::Taken),
        }
    }

    /// Starts binding a create's key `key` (stored under `pending`, see
    /// `pending_owner`) to the subject the CRM assigned: wrapped anew for
    /// the subject and moved in one transaction, with whatever other
    /// bindings are queued. The ticket says whether it was stored: `Taken`
    /// if the subject already has a key, or the pending key is not `key`.
    /// Nothing under the key may leave before the ticket says so.
    pub fn bind_begin(
        self: &Arc<Self>,
        pending: &str,
        key: Arc<DataKey>,
        subject: &str,
    ) -> Result<BindTicket, KeysError> {
        // The leader commits on the runtime's blocking pool.
        let rt = tokio::runtime::Handle::try_current().map_err(|_| {
            KeysError::Store(StoreError("a binding needs the async runtime".into()))
        })?;
        let before = self.generation()?;
        let slot = Arc::new(BindSlot::default());
        let lead = {
            let mut q = self.binds.lock().map_err(|_| Self::poisoned())?;
            q.waiting.push(Queued {
                pending: pending.to_owned(),
                owner: subject_owner(subject),
                key,
                before,
                slot: Arc::clone(&slot),
            });
            !std::mem::replace(&mut q.leader, true)
        };
        if lead {
            // A runtime shutting down drops the task unrun: then `Unled`
            // hands the lead back and fails the waiting.
            let mut unled = Unled(Some(Arc::clone(self)));
            drop(rt.spawn_blocking(move || {
                if let Some(keys) = unled.0.take() {
                    keys.lead_bindings();
                }
            }));
        }
        Ok(BindTicket(slot))
    }

    /// Commits queued bindings, a batch at a time, until none are left.
    fn lead_bindings(&self) {
        // If the leader fails (or panics), nobody waits forever.
        let mut lead = Leader {
            keys: self,
            in_flight: Vec::new(),
        };
        loop {
            let batch = {
                let mut q = self
                    .binds
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                let batch = std::mem::take(&mut q.waiting);
                if batch.is_empty() {
                    q.leader = false;
                    break;
                }
                batch
            };
            lead.in_flight = batch.iter().map(|b| Arc::clone(&b.slot)).collect();
            let done = self.commit_bindings(&batch);
            for (b, r) in batch.into_iter().zip(done) {
                let r = r.and_then(|()| {
                    if let Ok(mut c) = self.cache.write() {
                        c.map.remove(&b.pending);
                    }
                    self.remember(&b.owner, b.key, b.before).map(|_| ())
                });
                b.slot.set(r);
            }
            lead.in_flight = Vec::new();
        }
        // Done: nothing in flight, so the guard has nothing to fail.
        std::mem::forget(lead);
    }

    /// Wraps each key for its subject and stores the batch in one
    /// transaction; per binding, stored, `Taken`, or the store's error.
    fn commit_bindings(&self, batch: &[Queued]) -> Vec<Result<(), KeysError>> {
        let all = |e: KeysError| batch.iter().map(|_| Err(e.clone())).collect();
        // The ring stays read-locked until the batch is stored, so that a
        // rotation cannot leave a key wrapped under an old version.
        let Ok(ring) = self.rotation.read() else {
            return all(Self::poisoned());
        };
        let mut binds: Vec<Binding> = Vec::with_capacity(batch.len());
        for b in batch {
            match ring.wrap(&b.owner, &b.key) {
                Ok(w) => binds.push((b.pending.clone(), b.owner.clone(), w)),
                Err(e) => return all(e.into()),
            }
        }
        match self.store.bind_all(&binds, self.clock.now_ms()) {
            Ok(stored) => (0..batch.len())
                .map(|i| match stored.get(i) {
                    Some(true) => Ok(()),
                    _ => Err(KeysError::Taken),
                })
                .collect(),
            Err(e) => all(e.into()),
        }
    }

    /// Destroys `owner`'s key: store first, then the cache. `false` if it
    /// had none.
    pub fn destroy(&self, owner: &str) -> Result<bool, KeysError> {
        let done = self.store.destroy(owner, self.clock.now_ms())?;
        let mut c = self.cache.write().map_err(|_| Self::poisoned())?;
        c.map.remove(owner);
        c.absent.insert(owner.to_owned(), true);
        c.generation += 1;
        Ok(done)
    }

    /// Adopts `ring` (the master key file as it is now): every live data
    /// key not wrapped under its current version is re-wrapped (tokens are
    /// untouched), and versions `ring` no longer holds are retired, provided
    /// no key is still wrapped under them. A version both rings hold must be
    /// the same key, and the current version may not go back. Writers wait
    /// while it runs, so no key is left under an old version.
    pub fn adopt(&self, ring: MasterKeys) -> Result<Adopted, KeysError> {
        let invalid = |m: String| KeysError::Key(KeyError::Invalid(m));
        let mut current = self.rotation.write().map_err(|_| Self::poisoned())?;
        let old_version = current.current().version;
        let version = ring.current().version;
        if version < old_version {
            return Err(invalid(format!(
                "the key file's current version (v{version}) is older than the one in use (v{old_version})"
            )));
        }
        for v in current.versions() {
            if let (Some(a), Some(b)) = (current.get(v), ring.get(v))
                && *a.key != *b.key
            {
                return Err(invalid(format!(
                    "master key v{v} in the key file differs from the one in use"
                )));
            }
        }
        let mut out = Vec::new();
        for (owner, w) in self.store.live()? {
            if w.master_version == version {
                continue;
            }
            // Under a version the old ring (or the new one) holds.
            let dk = match current.get(w.master_version) {
                Some(_) => current.unwrap(&owner, &w)?,
                None => ring.unwrap(&owner, &w)?,
            };
            out.push((owner.clone(), ring.wrap(&owner, &dk)?));
        }
        self.store.rewrap(&out)?;
        let retired: Vec<u32> = current
            .versions()
            .filter(|v| ring.get(*v).is_none())
            .collect();
        *current = ring;
        Ok(Adopted {
            current: version,
            rewrapped: out.len(),
            retired,
        })
    }

    /// How many live data keys each master key version wraps.
    pub fn versions_in_use(&self) -> Result<BTreeMap<u32, usize>, KeysError> {
        let mut by = BTreeMap::new();
        for (_, w) in self.store.live()? {
            *by.entry(w.master_version).or_insert(0) += 1;
        }
        Ok(by)
    }

    /// The master key versions held, and the current one.
    pub fn ring_versions(&self) -> Result<(Vec<u32>, u32), KeysError> {
        let r = self.rotation.read().map_err(|_| Self::poisoned())?;
        Ok((r.versions().collect(), r.current().version))
    }
}

/// What `Keys::adopt` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Adopted {
    pub current: u32,
    pub rewrapped: usize,
    pub retired: Vec<u32>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::keys::store::MemoryKeyStore;
    use crate::keys::token;

    #[test]
    fn keys_are_made_once_read_back_shredded_and_rotated() {
        let store: Arc<dyn KeyStore> = Arc::new(MemoryKeyStore::default());
        let clock = ManualClock::at(1_000);
        let ring = MasterKeys::generate().unwrap();
        let text = ring.to_text();
        let keys = Keys::new(ring, Arc::clone(&store), clock.clone());
        let owner = subject_owner("7");
        let dk = keys.for_write(&owner).unwrap();
        assert_eq!(
            keys.for_write(&owner).unwrap().id,
            dk.id,
            "one key per owner"
        );
        let t = token::encrypt(&dk, "user.contact.email", b"c@x.example").unwrap();
        let p = token::parse(&t).unwrap();

        // A second service over the same store (a restart) reads it back.
        let again = Keys::new(
            MasterKeys::parse(&text).unwrap(),
            Arc::clone(&store),
            clock.clone(),
        );
        let k = again.for_read(&owner, p.key_id).unwrap();
        assert_eq!(
            &*token::decrypt(&k, &p, "user.contact.email").unwrap(),
            b"c@x.example"
        );
        assert!(again.for_read(&subject_owner("8"), p.key_id).is_err());

        // Rotation: a new master version; tokens stay readable; v1 can go.
        let two = MasterKeys::parse(&text)
            .unwrap()
            .with_new_version()
            .unwrap();
        let two_text = two.to_text();
        // A ring that changes a version, or goes back, is refused.
        assert!(
            again
                .adopt(MasterKeys::generate().unwrap().with_new_version().unwrap())
                .is_err()
        );
        let v2_only: String = two_text
            .lines()
            .filter(|l| !l.contains(" v1 "))
            .collect::<Vec<_>>()
            .join("\n");
        let done = again.adopt(two).unwrap();
        assert_eq!((done.current, done.rewrapped), (2, 1));
        assert_eq!(
            again
                .versions_in_use()
                .unwrap()
                .into_iter()
                .collect::<Vec<_>>(),
            [(2, 1)]
        );
        assert!(
            again.adopt(MasterKeys::parse(&text).unwrap()).is_err(),
            "v1 is older"
        );
        // Retiring v1: nothing is wrapped under it any more.
        let retired = again.adopt(MasterKeys::parse(&v2_only).unwrap()).unwrap();
        assert_eq!(retired.retired, [1]);
        let after = Keys::new(
            MasterKeys::parse(&v2_only).unwrap(),
            Arc::clone(&store),
            clock.clone(),
        );
        let k = after.for_read(&owner, p.key_id).unwrap();
        assert_eq!(
            &*token::decrypt(&k, &p, "user.contact.email").unwrap(),
            b"c@x.example"
        );

        // Shredding: gone for good, in this service and after a restart.
        assert!(after.destroy(&owner).unwrap());
        assert_eq!(
            after.for_read(&owner, p.key_id).unwrap_err(),
            KeysError::Destroyed
        );
        assert_eq!(after.for_write(&owner).unwrap_err(), KeysError::Destroyed);
        let restarted = Keys::new(MasterKeys::parse(&v2_only).unwrap(), store, clock);
        assert_eq!(
            restarted.for_read(&owner, p.key_id).unwrap_err(),
            KeysError::Destroyed
        );
    }

    #[test]
    fn concurrent_bindings_are_all_stored_once() {
        let store: Arc<dyn KeyStore> = Arc::new(MemoryKeyStore::default());
        let keys = Arc::new(Keys::new(
            MasterKeys::generate().unwrap(),
            Arc::clone(&store),
            ManualClock::at(5),
        ));
        keys.refill_pool().unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .build()
            .unwrap();
        let creates: Vec<_> = (0..16)
            .map(|i| {
                let keys = Arc::clone(&keys);
                rt.spawn(async move {
                    let (Some((owner, dk)), _) = keys.take_pending() else {
                        panic!("the pool is empty");
                    };
                    // Two creates answered with the same id: one binding wins.
                    let subject = (i / 2).to_string();
                    let id = dk.id;
                    let ticket = keys.bind_begin(&owner, dk, &subject)?;
                    ticket.bound().await.map(|()| (id, subject))
                })
            })
            .collect();
        let mut bound = Vec::new();
        for c in creates {
            match rt.block_on(c).unwrap() {
                Ok(won) => bound.push(won),
                Err(e) => assert_eq!(e, KeysError::Taken),
            }
        }
        assert_eq!(bound.len(), 8);
        for (id, subject) in bound {
            // The subject's stored key is the one its winning create bound.
            assert!(matches!(
                store.get(&subject_owner(&subject)).unwrap(),
                Some(StoredKey::Live(w)) if w.id == id
            ));
        }
    }
}
