//! Keys and tokens for encryption at rest.
//!
//! ```text
//! master   the master key ring (file with 0600 permissions, or environment):
//!          versioned 256-bit keys that wrap every data key
//! wrap     data keys: random AES-256 keys, one per subject (and one per
//!          deterministic category), stored wrapped by the current master key
//! token    what the CRM stores instead of a value: prefix, version, key id,
//!          base64url ciphertext; the associated data binds it to the
//!          subject and the category
//! ```
//!
//! Key material lives in `Zeroizing` buffers, is never logged, and `Debug`
//! prints no key bytes. Errors name what failed, never a key or a value.

pub mod master;
pub mod service;
pub mod store;
pub mod token;
pub mod vault;
pub mod wrap;

/// The length of every key here: AES-256.
pub const KEY_LEN: usize = 32;

/// Why a key or token could not be used. Carries no key material and no
/// plaintext.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("{0}")]
    Invalid(String),
    /// Authentication failed: wrong key, altered bytes, or bound to another
    /// subject or category.
    #[error("does not decrypt (altered, moved, or its key is gone)")]
    Decrypt,
}

/// Fresh random bytes from the operating system.
pub fn random<const N: usize>() -> Result<[u8; N], KeyError> {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).map_err(|e| KeyError::Invalid(format!("no randomness: {e}")))?;
    Ok(b)
}
