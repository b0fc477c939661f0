//! Where wrapped data keys are kept: the small interface the key service
//! needs (SQLite in `storage::sqlite`; `MemoryKeyStore` for tests).
//!
//! A destroyed key is gone for good: its wrapped bytes are overwritten and
//! only a tombstone (owner, id, when) stays, so that a later write for the
//! same owner cannot silently start a new key under the old id.

use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;

use super::wrap::{KeyId, Wrapped};
use crate::clock::Millis;
use crate::consent::store::StoreError;

/// (from, to, the key wrapped for `to`).
pub type Binding = (String, String, Wrapped);

/// A stored data key: wrapped, or destroyed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoredKey {
    Live(Wrapped),
    Destroyed { id: KeyId, at: Millis },
}

pub trait KeyStore: Send + Sync + fmt::Debug {
    /// The key of `owner`, if one was ever made.
    fn get(&self, owner: &str) -> Result<Option<StoredKey>, StoreError>;

    /// Stores `w` for `owner` unless the owner already has a key (live or
    /// destroyed); returns what is stored afterwards. Safe against races.
    fn insert(&self, owner: &str, w: &Wrapped, at: Millis) -> Result<StoredKey, StoreError>;

    /// Destroys the key of `owner`; `false` if there was none. Either way a
    /// tombstone stays, so that no key is made for `owner` again.
    fn destroy(&self, owner: &str, at: Millis) -> Result<bool, StoreError>;

    /// Every live wrapped key, for rotation.
    fn live(&self) -> Result<Vec<(String, Wrapped)>, StoreError>;

    /// Replaces wrapped keys (same ids) in one transaction.
    fn rewrap(&self, keys: &[(String, Wrapped)]) -> Result<(), StoreError>;

    /// Stores several new keys (owners that have none) in one transaction.
    fn insert_all(&self, keys: &[(String, Wrapped)], at: Millis) -> Result<(), StoreError>;

    /// Moves the live key of each `from` to its `to` (wrapped anew for `to`
    /// as `w`), all in one transaction: creates' keys, once the CRM has
    /// named the records. Per binding, `false` (and nothing changes for it)
    /// if `to` already has a key or `from` has no live key with `w`'s id.
    fn bind_all(&self, binds: &[Binding], at: Millis) -> Result<Vec<bool>, StoreError>;

    /// `bind_all` of one.
    fn bind(&self, from: &str, to: &str, w: &Wrapped, at: Millis) -> Result<bool, StoreError> {
        let b = [(from.to_owned(), to.to_owned(), w.clone())];
        Ok(self.bind_all(&b, at)?.first().copied().unwrap_or(false))
    }
}

/// An in-memory key store with the SQLite store's semantics.
#[derive(Debug, Default)]
pub struct MemoryKeyStore {
    keys: Mutex<HashMap<String, StoredKey>>,
}

impl KeyStore for MemoryKeyStore {
    fn get(&self, owner: &str) -> Result<Option<StoredKey>, StoreError> {
        let m = self
            .keys
            .lock()
            .map_err(|_| StoreError("poisoned".into()))?;
        Ok(m.get(owner).cloned())
    }

    fn insert(&self, owner: &str, w: &Wrapped, _at: Millis) -> Result<StoredKey, StoreError> {
        let mut m = self
            .keys
            .lock()
            .map_err(|_| StoreError("poisoned".into()))?;
        Ok(m.entry(owner.to_owned())
            .or_insert_with(|| StoredKey::Live(w.clone()))
            .clone())
    }

    fn destroy(&self, owner: &str, at: Millis) -> Result<bool, StoreError> {
        let mut m = self
            .keys
            .lock()
            .map_err(|_| StoreError("poisoned".into()))?;
        match m.get(owner) {
            Some(StoredKey::Live(w)) => {
                let id = w.id;
                m.insert(owner.to_owned(), StoredKey::Destroyed { id, at });
                Ok(true)
            }
            Some(StoredKey::Destroyed { .. }) => Ok(false),
            None => {
                let id = KeyId([0; 8]);
                m.insert(owner.to_owned(), StoredKey::Destroyed { id, at });
                Ok(false)
            }
        }
    }

    fn live(&self) -> Result<Vec<(String, Wrapped)>, StoreError> {
        let m = self
            .keys
            .lock()
            .map_err(|_| StoreError("poisoned".into()))?;
        Ok(m.iter()
            .filter_map(|(o, k)| match k {
                StoredKey::Live(w) => Some((o.clone(), w.clone())),
                StoredKey::Destroyed { .. } => None,
            })
            .collect())
    }

    fn rewrap(&self, keys: &[(String, Wrapped)]) -> Result<(), StoreError> {
        let mut m = self
            .keys
            .lock()
            .map_err(|_| StoreError("poisoned".into()))?;
        for (o, w) in keys {
            if let Some(StoredKey::Live(old)) = m.get(o)
                && old.id == w.id
            {
                m.insert(o.clone(), StoredKey::Live(w.clone()));
            }
        }
        Ok(())
    }

    fn insert_all(&self, keys: &[(String, Wrapped)], _at: Millis) -> Result<(), StoreError> {
        let mut m = self
            .keys
            .lock()
            .map_err(|_| StoreError("poisoned".into()))?;
        for (o, w) in keys {
            m.entry(o.clone())
                .or_insert_with(|| StoredKey::Live(w.clone()));
        }
        Ok(())
    }

    fn bind_all(&self, binds: &[Binding], _at: Millis) -> Result<Vec<bool>, StoreError> {
        let mut m = self
            .keys
            .lock()
            .map_err(|_| StoreError("poisoned".into()))?;
        let mut out = Vec::with_capacity(binds.len());
        for (from, to, w) in binds {
            let from_ok = matches!(m.get(from), Some(StoredKey::Live(old)) if old.id == w.id);
            if !from_ok || m.contains_key(to) {
                out.push(false);
                continue;
            }
            m.remove(from);
            m.insert(to.clone(), StoredKey::Live(w.clone()));
            out.push(true);
        }
        Ok(out)
    }
}

/// The contract both stores meet.
#[cfg(test)]
pub mod contract {
    use super::*;

    fn w(id: u8, v: u32) -> Wrapped {
        Wrapped {
            id: KeyId([id; 8]),
            master_version: v,
            bytes: vec![id; 60],
        }
    }

    pub fn run(s: &dyn KeyStore) {
        assert_eq!(s.get("subject:7").unwrap(), None);
        assert_eq!(
            s.insert("subject:7", &w(1, 1), 10).unwrap(),
            StoredKey::Live(w(1, 1))
        );
        // A second insert (a racing writer) gets the first key.
        assert_eq!(
            s.insert("subject:7", &w(2, 1), 11).unwrap(),
            StoredKey::Live(w(1, 1))
        );
        s.insert("subject:8", &w(3, 1), 12).unwrap();
        // Rotation replaces the wrapping, not the key.
        s.rewrap(&[("subject:7".into(), w(1, 2))]).unwrap();
        assert_eq!(s.get("subject:7").unwrap(), Some(StoredKey::Live(w(1, 2))));
        assert_eq!(s.live().unwrap().len(), 2);
        // Destroyed for good: a tombstone stays, and no new key replaces it.
        assert!(s.destroy("subject:7", 20).unwrap());
        assert!(!s.destroy("subject:7", 21).unwrap());
        let dead = StoredKey::Destroyed {
            id: KeyId([1; 8]),
            at: 20,
        };
        assert_eq!(s.get("subject:7").unwrap(), Some(dead.clone()));
        assert_eq!(s.insert("subject:7", &w(4, 2), 22).unwrap(), dead);
        assert_eq!(s.live().unwrap().len(), 1);
        // A customer erased before any key was made: a tombstone all the same.
        assert!(!s.destroy("subject:70", 23).unwrap());
        assert!(matches!(
            s.insert("subject:70", &w(9, 2), 24).unwrap(),
            StoredKey::Destroyed { .. }
        ));
        assert!(!s.bind("pending:none", "subject:70", &w(9, 2), 25).unwrap());

        // Several at once (a create's key pool).
        s.insert_all(
            &[
                ("pending:p1".into(), w(7, 2)),
                ("pending:p2".into(), w(8, 2)),
            ],
            40,
        )
        .unwrap();
        assert_eq!(s.get("pending:p2").unwrap(), Some(StoredKey::Live(w(8, 2))));
        // Binding a create's key to the id the CRM assigned.
        s.insert("pending:ab", &w(5, 2), 30).unwrap();
        assert!(
            !s.bind("pending:ab", "subject:8", &w(5, 3), 31).unwrap(),
            "taken"
        );
        assert!(
            !s.bind("pending:ab", "subject:9", &w(6, 3), 31).unwrap(),
            "other key"
        );
        assert!(s.bind("pending:ab", "subject:9", &w(5, 3), 31).unwrap());
        assert_eq!(s.get("pending:ab").unwrap(), None);
        assert_eq!(s.get("subject:9").unwrap(), Some(StoredKey::Live(w(5, 3))));
        assert!(
            !s.bind("pending:ab", "subject:10", &w(5, 3), 32).unwrap(),
            "gone"
        );
    }

    #[test]
    fn memory_key_store_meets_the_contract() {
        run(&MemoryKeyStore::default());
    }
}
