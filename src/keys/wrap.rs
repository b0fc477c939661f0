//! Data keys, wrapped by the master key for storage.
//!
//! A wrapped key is AES-256-GCM under a master key version, with a random
//! nonce; the associated data binds it to its owner (a subject, or a
//! deterministic category) and its id, so a wrapped key copied to another
//! owner does not unwrap.

use std::fmt;

use aes_gcm::aead::{AeadInOut, KeyInit};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use zeroize::Zeroizing;

use super::master::{MasterKey, MasterKeys};
use super::{KEY_LEN, KeyError, random};

/// A data key's id: 8 random bytes, written as 16 hex digits in tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyId(pub [u8; 8]);

impl KeyId {
    pub fn hex(&self) -> String {
        crate::config::hex(&self.0)
    }

    /// Exactly 16 lowercase hex digits.
    pub fn parse_hex(s: &str) -> Option<KeyId> {
        let b = s.as_bytes();
        if b.len() != 16 || !b.iter().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')) {
            return None;
        }
        let mut out = [0u8; 8];
        for (i, pair) in b.chunks(2).enumerate() {
            let v = |c: u8| if c <= b'9' { c - b'0' } else { c - b'a' + 10 };
            out[i] = v(pair[0]) << 4 | v(pair[1]);
        }
        Some(KeyId(out))
    }
}

/// A data key in clear, in memory only, with its two ciphers' key
/// schedules prepared once (a cached key is used by every request; the
/// schedules are zeroised on drop like the key).
pub struct DataKey {
    pub id: KeyId,
    pub(super) key: Zeroizing<[u8; KEY_LEN]>,
    pub(super) gcm: aes_gcm::Aes256Gcm,
    pub(super) siv: aes_gcm_siv::Aes256GcmSiv,
}

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DataKey({}, <redacted>)", self.id.hex())
    }
}

impl DataKey {
    pub fn generate() -> Result<DataKey, KeyError> {
        Ok(DataKey::new(KeyId(random()?), Zeroizing::new(random()?)))
    }

    pub(super) fn new(id: KeyId, key: Zeroizing<[u8; KEY_LEN]>) -> DataKey {
        use aes_gcm::aead::KeyInit as _;
        let gcm = aes_gcm::Aes256Gcm::new(&aes_gcm::Key::<aes_gcm::Aes256Gcm>::from(*key));
        let siv = aes_gcm_siv::Aes256GcmSiv::new(
            &aes_gcm_siv::Key::<aes_gcm_siv::Aes256GcmSiv>::from(*key),
        );
        DataKey { id, key, gcm, siv }
    }
}

/// A data key as stored: which master version wrapped it, and the bytes
/// (nonce, ciphertext, tag).
#[derive(Clone, PartialEq, Eq)]
pub struct Wrapped {
    pub id: KeyId,
    pub master_version: u32,
    pub bytes: Vec<u8>,
}

impl fmt::Debug for Wrapped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Wrapped key bytes are ciphertext, but they are key material all
        // the same: not printed.
        write!(
            f,
            "Wrapped({}, v{}, {} bytes)",
            self.id.hex(),
            self.master_version,
            self.bytes.len()
        )
    }
}

const NONCE: usize = 12;

fn aad(owner: &str, id: &KeyId, version: u32) -> Vec<u8> {
    let mut a = Vec::with_capacity(32 + owner.len());
    a.extend_from_slice(b"consentry/data-key/1\0");
    a.extend_from_slice(&version.to_be_bytes());
    a.extend_from_slice(&id.0);
    a.extend_from_slice(owner.as_bytes());
    a
}

fn cipher(k: &MasterKey) -> Aes256Gcm {
    Aes256Gcm::new(&Key::<Aes256Gcm>::from(*k.key))
}

impl MasterKeys {
    /// Wraps `dk` for `owner` under the current master key.
    pub fn wrap(&self, owner: &str, dk: &DataKey) -> Result<Wrapped, KeyError> {
        let mk = self.current();
        let nonce: [u8; NONCE] = random()?;
        let mut buf = Zeroizing::new(dk.key.to_vec());
        cipher(mk)
            .encrypt_in_place(
                &Nonce::from(nonce),
                &aad(owner, &dk.id, mk.version),
                &mut *buf,
            )
            .map_err(|_| KeyError::Invalid("cannot wrap a data key".into()))?;
        let mut bytes = nonce.to_vec();
        bytes.extend_from_slice(&buf);
        Ok(Wrapped {
            id: dk.id,
            master_version: mk.version,
            bytes,
        })
    }

    /// Unwraps a stored data key of `owner`.
    pub fn unwrap(&self, owner: &str, w: &Wrapped) -> Result<DataKey, KeyError> {
        let mk = self.get(w.master_version).ok_or_else(|| {
            KeyError::Invalid(format!(
                "the data key was wrapped by master key v{}, which is not in the key ring",
                w.master_version
            ))
        })?;
        if w.bytes.len() != NONCE + KEY_LEN + 16 {
            return Err(KeyError::Decrypt);
        }
        let (nonce, ct) = w.bytes.split_at(NONCE);
        let nonce: [u8; NONCE] = nonce.try_into().map_err(|_| KeyError::Decrypt)?;
        let mut buf = Zeroizing::new(ct.to_vec());
        cipher(mk)
            .decrypt_in_place(
                &Nonce::from(nonce),
                &aad(owner, &w.id, mk.version),
                &mut *buf,
            )
            .map_err(|_| KeyError::Decrypt)?;
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        key.copy_from_slice(&buf);
        Ok(DataKey::new(w.id, key))
    }

    /// Re-wraps under the current master key (rotation); the data key and
    /// every token under it stay the same.
    pub fn rewrap(&self, owner: &str, w: &Wrapped) -> Result<Wrapped, KeyError> {
        let dk = self.unwrap(owner, w)?;
        self.wrap(owner, &dk)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrapped_keys_unwrap_for_their_owner_only_and_survive_rotation() {
        let ring = MasterKeys::generate().unwrap();
        let dk = DataKey::generate().unwrap();
        let w = ring.wrap("subject:7", &dk).unwrap();
        assert_eq!(*ring.unwrap("subject:7", &w).unwrap().key, *dk.key);
        assert_eq!(ring.unwrap("subject:8", &w).unwrap_err(), KeyError::Decrypt);
        let mut flipped = w.clone();
        flipped.bytes[20] ^= 1;
        assert_eq!(
            ring.unwrap("subject:7", &flipped).unwrap_err(),
            KeyError::Decrypt
        );
        let mut other_id = w.clone();
        other_id.id.0[0] ^= 1;
        assert_eq!(
            ring.unwrap("subject:7", &other_id).unwrap_err(),
            KeyError::Decrypt
        );
        // Rotation: the new version re-wraps the same key; the old version
        // can then be retired.
        let two = ring.with_new_version().unwrap();
        let w2 = two.rewrap("subject:7", &w).unwrap();
        assert_eq!(w2.master_version, 2);
        assert_eq!(*two.unwrap("subject:7", &w2).unwrap().key, *dk.key);
        assert!(
            ring.unwrap("subject:7", &w2)
                .unwrap_err()
                .to_string()
                .contains("v2")
        );
        assert!(!format!("{dk:?}").contains(&crate::config::hex(dk.key.as_slice())));
    }

    #[test]
    fn key_ids_are_strict_hex() {
        let id = KeyId([0xab, 1, 2, 3, 4, 5, 6, 0xff]);
        assert_eq!(KeyId::parse_hex(&id.hex()), Some(id));
        for bad in [
            "",
            "ab0102030405060",
            "AB010203040506FF",
            "ab0102030405060g",
            "ab01020304050607ff",
        ] {
            assert_eq!(KeyId::parse_hex(bad), None, "{bad}");
        }
    }
}
