//! The master key ring.
//!
//! A key file holds one line per version, oldest first:
//!
//! ```text
//! # consentry master key ring: keep this file secret (chmod 600).
//! consentry-master-key v1 q0Xw...43 base64url characters...
//! consentry-master-key v2 ...
//! ```
//!
//! The highest version wraps new data keys; older versions stay to unwrap
//! data keys not yet re-wrapped (`keys rotate`), and can then be retired. The
//! same text may come from an environment variable instead of a file.

use std::fmt;
use std::io::Write as _;
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use zeroize::Zeroizing;

use super::{KEY_LEN, KeyError, random};

const TAG: &str = "consentry-master-key";

/// One version of the master key.
#[derive(Clone)]
pub struct MasterKey {
    pub version: u32,
    pub(super) key: Zeroizing<[u8; KEY_LEN]>,
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MasterKey(v{}, <redacted>)", self.version)
    }
}

/// Every version of the master key; the highest is current.
#[derive(Debug, Clone)]
pub struct MasterKeys {
    keys: Vec<MasterKey>,
}

impl MasterKeys {
    /// The key that wraps new data keys.
    pub fn current(&self) -> &MasterKey {
        // `parse` refuses an empty ring.
        &self.keys[self.keys.len() - 1]
    }

    pub fn get(&self, version: u32) -> Option<&MasterKey> {
        self.keys.iter().find(|k| k.version == version)
    }

    pub fn versions(&self) -> impl Iterator<Item = u32> + '_ {
        self.keys.iter().map(|k| k.version)
    }

    /// Parses a key ring. Errors name the line, never its content.
    pub fn parse(text: &str) -> Result<MasterKeys, KeyError> {
        let mut keys: Vec<MasterKey> = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |what: &str| KeyError::Invalid(format!("line {}: {what}", i + 1));
            let mut parts = line.split_whitespace();
            let (Some(TAG), Some(v), Some(b64), None) =
                (parts.next(), parts.next(), parts.next(), parts.next())
            else {
                return Err(bad(
                    "expected `consentry-master-key vN KEY` (make one with `consentry keys generate`)",
                ));
            };
            let version = v
                .strip_prefix('v')
                .and_then(|n| n.parse::<u32>().ok())
                .filter(|n| *n > 0)
                .ok_or_else(|| bad("the version is `v1`, `v2`, ..."))?;
            if keys.last().is_some_and(|k| k.version >= version) {
                return Err(bad("versions must increase, oldest first"));
            }
            let raw = Zeroizing::new(
                URL_SAFE_NO_PAD
                    .decode(b64)
                    .map_err(|_| bad("the key is not base64url"))?,
            );
            let mut key = Zeroizing::new([0u8; KEY_LEN]);
            if raw.len() != KEY_LEN {
                return Err(bad("the key is not 32 bytes"));
            }
            key.copy_from_slice(&raw);
            keys.push(MasterKey { version, key });
        }
        if keys.is_empty() {
            return Err(KeyError::Invalid(
                "no master key in it (make one with `consentry keys generate`)".into(),
            ));
        }
        Ok(MasterKeys { keys })
    }

    /// Loads a key file, refusing one that others can read or write.
    pub fn load_file(path: &Path) -> Result<MasterKeys, KeyError> {
        let meta = std::fs::metadata(path)
            .map_err(|e| KeyError::Invalid(format!("cannot read {}: {e}", path.display())))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(KeyError::Invalid(format!(
                    "{} has permissions {mode:04o}; a master key file must be 0600 (chmod 600 {})",
                    path.display(),
                    path.display()
                )));
            }
        }
        #[cfg(not(unix))]
        let _ = meta;
        let text = Zeroizing::new(
            std::fs::read_to_string(path)
                .map_err(|e| KeyError::Invalid(format!("cannot read {}: {e}", path.display())))?,
        );
        MasterKeys::parse(&text).map_err(|e| KeyError::Invalid(format!("{}: {e}", path.display())))
    }

    /// The ring with a new, random version added (for rotation).
    pub fn with_new_version(&self) -> Result<MasterKeys, KeyError> {
        let next = self.current().version + 1;
        let mut keys: Vec<MasterKey> = self
            .keys
            .iter()
            .map(|k| MasterKey {
                version: k.version,
                key: k.key.clone(),
            })
            .collect();
        keys.push(MasterKey {
            version: next,
            key: Zeroizing::new(random()?),
        });
        Ok(MasterKeys { keys })
    }

    /// The ring without `version`; refused for the current version.
    pub fn without_version(&self, version: u32) -> Result<MasterKeys, KeyError> {
        if version == self.current().version {
            return Err(KeyError::Invalid(format!(
                "v{version} is the current master key: rotate to a new version first"
            )));
        }
        if self.get(version).is_none() {
            return Err(KeyError::Invalid(format!("the ring has no v{version}")));
        }
        Ok(MasterKeys {
            keys: self
                .keys
                .iter()
                .filter(|k| k.version != version)
                .cloned()
                .collect(),
        })
    }

    /// A ring of one new random key, version 1.
    pub fn generate() -> Result<MasterKeys, KeyError> {
        Ok(MasterKeys {
            keys: vec![MasterKey {
                version: 1,
                key: Zeroizing::new(random()?),
            }],
        })
    }

    /// The ring as key-file text. Zeroised on drop.
    pub fn to_text(&self) -> Zeroizing<String> {
        const HEAD: &str = "# consentry master key ring: keep this file secret (chmod 600).\n";
        // Sized up front, so that no copy of a key is left behind by a
        // reallocation.
        let mut s = Zeroizing::new(String::with_capacity(HEAD.len() + self.keys.len() * 80));
        s.push_str(HEAD);
        for k in &self.keys {
            let b64 = Zeroizing::new(URL_SAFE_NO_PAD.encode(k.key.as_slice()));
            s.push_str(TAG);
            s.push_str(" v");
            s.push_str(&k.version.to_string());
            s.push(' ');
            s.push_str(&b64);
            s.push('\n');
        }
        s
    }

    /// Writes the ring to a new file, readable by its owner only. Never
    /// overwrites.
    pub fn write_new_file(&self, path: &Path) -> Result<(), KeyError> {
        let fail =
            |e: std::io::Error| KeyError::Invalid(format!("cannot write {}: {e}", path.display()));
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt as _;
            opts.mode(0o600);
        }
        let mut f = opts.open(path).map_err(fail)?;
        f.write_all(self.to_text().as_bytes()).map_err(fail)?;
        f.sync_all().map_err(fail)
    }
}

impl MasterKeys {
    /// Replaces the key file at `path` with this ring, atomically: written
    /// to a new 0600 file beside it, synced, then renamed over it. A crash
    /// leaves the old ring or the new one, never half of either.
    pub fn replace_file(&self, path: &Path) -> Result<(), KeyError> {
        let fail =
            |e: std::io::Error| KeyError::Invalid(format!("cannot write {}: {e}", path.display()));
        let tmp = path.with_extension("new");
        let _ = std::fs::remove_file(&tmp);
        self.write_new_file(&tmp)?;
        std::fs::rename(&tmp, path).map_err(fail)?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(fail)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_ring_round_trips_and_never_prints_its_key() {
        let ring = MasterKeys::generate().unwrap();
        let text = ring.to_text();
        let back = MasterKeys::parse(&text).unwrap();
        assert_eq!(back.current().version, 1);
        assert_eq!(*back.current().key, *ring.current().key);
        let b64 = URL_SAFE_NO_PAD.encode(ring.current().key.as_slice());
        assert!(!format!("{ring:?}").contains(&b64));
        let two = ring.with_new_version().unwrap();
        assert_eq!(two.versions().collect::<Vec<_>>(), [1, 2]);
        assert_ne!(*two.current().key, *ring.current().key);
        assert!(two.get(1).is_some());
    }

    #[test]
    fn bad_rings_name_the_line_not_the_key() {
        for (text, says) in [
            ("", "no master key"),
            ("consentry-master-key v1", "line 1: expected"),
            ("# c\nconsentry-master-key 1 AAAA", "line 2: the version"),
            (
                "consentry-master-key v1 not-base64!",
                "line 1: the key is not base64url",
            ),
            (
                "consentry-master-key v1 AAAA",
                "line 1: the key is not 32 bytes",
            ),
        ] {
            let e = MasterKeys::parse(text).unwrap_err().to_string();
            assert!(e.contains(says), "{text:?}: {e}");
            assert!(!e.contains("AAAA") && !e.contains("not-base64"), "{e}");
        }
        let k = URL_SAFE_NO_PAD.encode([7u8; 32]);
        let e = MasterKeys::parse(&format!("{TAG} v2 {k}\n{TAG} v1 {k}\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 2: versions must increase"), "{e}");
    }

    #[cfg(unix)]
    #[test]
    fn key_files_are_0600_and_never_overwritten() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        let ring = MasterKeys::generate().unwrap();
        ring.write_new_file(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(ring.write_new_file(&path).is_err(), "never overwrites");
        assert_eq!(MasterKeys::load_file(&path).unwrap().current().version, 1);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = MasterKeys::load_file(&path).unwrap_err().to_string();
        assert!(
            e.contains("permissions 0644") && e.contains("chmod 600"),
            "{e}"
        );
    }
}
