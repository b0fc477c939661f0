//! The audit trail's signing key (Ed25519), separate from the master key:
//! it signs checkpoints, so that a trail cut short below a checkpoint, or
//! rewritten whole, is found out by whoever kept the checkpoints or the
//! public key.

use std::io::Write as _;
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use zeroize::Zeroizing;

use super::AuditError;
use crate::clock::Millis;

const TAG: &str = "consentry-audit-signing-key v1";

/// The public key (hex) of the signing key at `path`, if there is one: what
/// checkpoints must be signed with when no other key is given to `verify`.
pub fn public_key(path: &Path) -> Result<Option<String>, AuditError> {
    if !path.exists() {
        return Ok(None);
    }
    let key = load_or_create(path)?;
    Ok(Some(crate::config::hex(&key.verifying_key().to_bytes())))
}

/// Loads the key from `path`, or makes one there (0600) if there is none.
/// A file others can read is refused.
pub fn load_or_create(path: &Path) -> Result<SigningKey, AuditError> {
    let bad = |m: String| AuditError::Store(m);
    if !path.exists() {
        let seed: [u8; 32] = crate::keys::random().map_err(|e| bad(e.to_string()))?;
        let seed = Zeroizing::new(seed);
        let text = Zeroizing::new(format!("{TAG} {}\n", URL_SAFE_NO_PAD.encode(*seed)));
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| bad(format!("cannot create {}: {e}", dir.display())))?;
        }
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt as _;
            opts.mode(0o600);
        }
        let mut f = opts
            .open(path)
            .map_err(|e| bad(format!("cannot write {}: {e}", path.display())))?;
        f.write_all(text.as_bytes())
            .and_then(|()| f.sync_all())
            .map_err(|e| bad(format!("cannot write {}: {e}", path.display())))?;
        return Ok(SigningKey::from_bytes(&seed));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(path)
            .map_err(|e| bad(format!("cannot read {}: {e}", path.display())))?
            .permissions()
            .mode()
            & 0o777;
        if mode & 0o077 != 0 {
            return Err(bad(format!(
                "{} has permissions {mode:04o}; the audit signing key must be 0600 (chmod 600 {})",
                path.display(),
                path.display()
            )));
        }
    }
    let text = Zeroizing::new(
        std::fs::read_to_string(path)
            .map_err(|e| bad(format!("cannot read {}: {e}", path.display())))?,
    );
    let b64 = text
        .trim()
        .strip_prefix(TAG)
        .map(str::trim)
        .ok_or_else(|| bad(format!("{} is not an audit signing key", path.display())))?;
    let seed = Zeroizing::new(
        URL_SAFE_NO_PAD
            .decode(b64)
            .ok()
            .and_then(|v| <[u8; 32]>::try_from(v).ok())
            .ok_or_else(|| bad(format!("{} is not an audit signing key", path.display())))?,
    );
    Ok(SigningKey::from_bytes(&seed))
}

/// What a checkpoint signs.
pub fn message(seq: u64, at: Millis, hash: &[u8; 32]) -> Vec<u8> {
    let mut m = Vec::with_capacity(64);
    m.extend_from_slice(b"consentry-audit-checkpoint-v1\0");
    m.extend_from_slice(&seq.to_be_bytes());
    m.extend_from_slice(&at.to_be_bytes());
    m.extend_from_slice(hash);
    m
}

pub fn sign(key: &SigningKey, seq: u64, at: Millis, hash: &[u8; 32]) -> [u8; 64] {
    key.sign(&message(seq, at, hash)).to_bytes()
}

pub fn verify(public: &[u8], seq: u64, at: Millis, hash: &[u8; 32], sig: &[u8]) -> bool {
    let (Ok(pk), Ok(sig)) = (<[u8; 32]>::try_from(public), <[u8; 64]>::try_from(sig)) else {
        return false;
    };
    let Ok(vk) = VerifyingKey::from_bytes(&pk) else {
        return false;
    };
    vk.verify(&message(seq, at, hash), &Signature::from_bytes(&sig))
        .is_ok()
}
