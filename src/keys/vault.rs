//! The keys one request uses, held where the rewriter can reach them
//! without blocking: fetched before a write is rewritten, and in the same
//! deferred batch as consent while a response streams.

use std::collections::HashMap;
use std::sync::Arc;

use super::service::{Held, Keys, KeysError, category_owner};
use super::token::{self, Kind};
use super::wrap::DataKey;
use crate::transform::{Gate, RecordOutcome, Seal, Subject};

#[derive(Debug, Default)]
pub struct Vault {
    /// The key new randomised tokens use (writes).
    writer: Option<Arc<DataKey>>,
    /// Each record subject's key.
    subjects: HashMap<String, Held>,
    /// The deterministic categories' keys.
    categories: HashMap<String, Arc<DataKey>>,
}

impl Vault {
    /// A vault for writes whose randomised tokens use `writer`, and
    /// deterministic tokens the keys of `categories` (made on first use).
    /// Blocking on cache misses.
    pub fn for_write(
        keys: &Keys,
        writer: Option<Arc<DataKey>>,
        categories: &[String],
    ) -> Result<Vault, KeysError> {
        Ok(Vault {
            writer,
            subjects: HashMap::new(),
            categories: category_keys(keys, categories)?,
        })
    }

    /// A vault from cached keys only (no store access, so no blocking);
    /// `None` if a category's key is not cached yet.
    pub fn cached(
        keys: &Keys,
        writer: Option<Arc<DataKey>>,
        categories: &[String],
    ) -> Option<Vault> {
        let mut map = HashMap::with_capacity(categories.len());
        for c in categories {
            map.insert(c.clone(), keys.cached_key(&category_owner(c))?);
        }
        Some(Vault {
            writer,
            subjects: HashMap::new(),
            categories: map,
        })
    }

    /// The vault, with `key` for new randomised tokens.
    pub fn with_writer(mut self, key: Arc<DataKey>) -> Vault {
        self.writer = Some(key);
        self
    }

    /// A vault for reads: subjects' keys arrive through `learn`.
    pub fn for_read(keys: &Keys, categories: &[String]) -> Result<Vault, KeysError> {
        Vault::for_write(keys, None, categories)
    }

    /// Whether `subject`'s key (or its absence) is known.
    pub fn knows(&self, subject: &str) -> bool {
        self.subjects.contains_key(subject)
    }

    pub fn learn(&mut self, found: HashMap<String, Held>) {
        self.subjects.extend(found);
    }

    pub fn remember(&mut self, subject: &str, key: Held) {
        self.subjects.insert(subject.to_owned(), key);
    }

    /// Appends the token of `plain` (unquoted); `false` without a key.
    pub fn seal(&self, category: &str, seal: Seal, plain: &[u8], out: &mut Vec<u8>) -> bool {
        let t = match seal {
            Seal::Randomised => match &self.writer {
                Some(dk) => token::encrypt(dk, category, plain),
                None => return false,
            },
            Seal::Deterministic => match self.categories.get(category) {
                Some(dk) => token::encrypt_deterministic(dk, category, plain),
                None => return false,
            },
            Seal::No => return false,
        };
        match t {
            Ok(t) => {
                out.extend_from_slice(t.as_bytes());
                true
            }
            Err(_) => false,
        }
    }

    /// Appends what `token` stands for, if it decrypts: a randomised token
    /// only with the key of the record's own subject, a deterministic one
    /// with its category's key. Nothing opens in the record of a subject
    /// whose key was destroyed: their deterministic tokens (under a shared
    /// category key, so that the CRM can search them) are withheld too.
    pub fn open(
        &self,
        subject: Option<&str>,
        category: &str,
        token: &str,
        out: &mut Vec<u8>,
    ) -> bool {
        let Some(t) = token::parse(token) else {
            return false;
        };
        let held = subject.and_then(|s| self.subjects.get(s));
        if matches!(held, Some(Held::Shredded)) {
            return false;
        }
        let dk = match t.kind {
            Kind::Randomised => match held {
                Some(Held::Live(k)) => Some(k),
                _ => None,
            },
            Kind::Deterministic => self.categories.get(category),
        };
        let Some(dk) = dk else {
            return false;
        };
        match token::decrypt_owned(dk, t, category) {
            Ok(plain) => {
                out.extend_from_slice(&plain);
                true
            }
            Err(_) => false,
        }
    }

    /// The deterministic token of a searched value, given as the JSON the
    /// CRM would have been sent (a string as `lex::quote` spells it).
    pub fn search_token(&self, category: &str, json: &[u8]) -> Option<String> {
        let dk = self.categories.get(category)?;
        token::encrypt_deterministic(dk, category, json).ok()
    }
}

/// The gate of a write: keeps its record and seals its encrypted fields
/// with the vault's keys (`None`: nothing is encrypted, and a sealed field
/// fails the write).
#[derive(Debug)]
pub struct Sealer<'a>(pub Option<&'a Vault>);

impl Gate for Sealer<'_> {
    fn decide(&mut self, _: Subject<'_>) -> Option<RecordOutcome> {
        Some(RecordOutcome::Keep)
    }

    fn seal(&mut self, category: &str, seal: Seal, plain: &[u8], out: &mut Vec<u8>) -> bool {
        self.0.is_some_and(|v| v.seal(category, seal, plain, out))
    }
}

/// The keys of deterministic `categories`, made on first use. Blocking on
/// cache misses.
fn category_keys(
    keys: &Keys,
    categories: &[String],
) -> Result<HashMap<String, Arc<DataKey>>, KeysError> {
    let mut out = HashMap::with_capacity(categories.len());
    for c in categories {
        out.insert(c.clone(), keys.for_write(&category_owner(c))?);
    }
    Ok(out)
}
