//! Customer entries as stored beside their event, in a compact binary form
//! (a list of 100 customers is ~7 KB, not ~17 KB of JSON and hex: the
//! trail's write volume is what a list's audit costs most).
//!
//! ```text
//! entry     tag[1] commit[32] salt[16] pseudonym[16] len[1] record[len]
//! tag       1: open; 0: unlinked (salt and pseudonym zeroed, no record)
//! commit    SHA-256("consentry-audit-subject-v1\0" salt pseudonym len record)
//! ```
//!
//! The chain covers the commitments only, so unlinking (zeroing an entry's
//! salt, pseudonym and record) keeps it verifiable, and with the random salt
//! gone nobody, not even with the pseudonym key, can tell whose it was.

use sha2::{Digest, Sha256};

use super::{AuditError, SubjectEntry};

const HEAD: usize = 1 + 32 + 16 + 16 + 1;

/// One stored entry: its commitment, and the entry unless unlinked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    pub commit: [u8; 32],
    pub entry: Option<SubjectEntry>,
}

fn commitment(salt: &[u8], pseudonym: &[u8], record: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"consentry-audit-subject-v1\0");
    h.update(salt);
    h.update(pseudonym);
    h.update([record.len() as u8]);
    h.update(record);
    h.finalize().into()
}

/// A pseudonym (32 hex digits) as its 16 bytes.
pub fn pseudonym_bytes(p: &str) -> Option<[u8; 16]> {
    crate::config::unhex(p)?.try_into().ok()
}

/// Each entry under a fresh random salt: the stored bytes, and the
/// commitments the chain covers.
pub fn seal(entries: &[SubjectEntry]) -> Result<(Vec<u8>, Vec<[u8; 32]>), AuditError> {
    if entries.is_empty() {
        return Ok((Vec::new(), Vec::new()));
    }
    let mut salts = vec![0u8; 16 * entries.len()];
    getrandom::fill(&mut salts)
        .map_err(|_| AuditError::Store("no randomness for the entries' salts".into()))?;
    let mut out = Vec::with_capacity(entries.len() * (HEAD + 8));
    let mut commits = Vec::with_capacity(entries.len());
    for (e, salt) in entries.iter().zip(salts.chunks_exact(16)) {
        let p = pseudonym_bytes(&e.subject)
            .ok_or_else(|| AuditError::Store("an entry's pseudonym is malformed".into()))?;
        // At most 255 bytes of the record's text, cut at a character.
        let mut n = e.record.len().min(255);
        while !e.record.is_char_boundary(n) {
            n -= 1;
        }
        let record = &e.record.as_bytes()[..n];
        let c = commitment(salt, &p, record);
        out.push(1);
        out.extend_from_slice(&c);
        out.extend_from_slice(salt);
        out.extend_from_slice(&p);
        out.push(n as u8);
        out.extend_from_slice(record);
        commits.push(c);
    }
    Ok((out, commits))
}

/// The entries of `blob`, each checked against its commitment; `None` if
/// the bytes are malformed or an open entry does not match.
pub fn open(blob: &[u8]) -> Option<Vec<Slot>> {
    let mut slots = Vec::new();
    let mut rest = blob;
    while !rest.is_empty() {
        let head = rest.get(..HEAD)?;
        let len = head[HEAD - 1] as usize;
        let record = rest.get(HEAD..HEAD + len)?;
        let commit: [u8; 32] = head[1..33].try_into().ok()?;
        let (salt, p) = (&head[33..49], &head[49..65]);
        let entry = match head[0] {
            1 => {
                if commitment(salt, p, record) != commit {
                    return None;
                }
                Some(SubjectEntry {
                    subject: crate::config::hex(p),
                    record: String::from_utf8(record.to_vec()).ok()?,
                })
            }
            0 if len == 0 && salt.iter().chain(p).all(|&b| b == 0) => None,
            _ => return None,
        };
        slots.push(Slot { commit, entry });
        rest = &rest[HEAD + len..];
    }
    Some(slots)
}

/// Unlinks every entry of `pseudonym` in `blob`: the entry keeps its
/// commitment only (tag 0, zeroed salt and pseudonym, no record, so not even
/// the record's length is left). How many; `None` if the bytes are malformed.
pub fn unlink(blob: &mut Vec<u8>, pseudonym: &[u8; 16]) -> Option<u64> {
    let mut out = Vec::with_capacity(blob.len());
    let mut n = 0;
    let mut at = 0;
    while at < blob.len() {
        let len = *blob.get(at + HEAD - 1)? as usize;
        let end = at + HEAD + len;
        if end > blob.len() {
            return None;
        }
        if blob[at] == 1 && &blob[at + 49..at + 65] == pseudonym {
            out.push(0);
            out.extend_from_slice(&blob[at + 1..at + 33]);
            out.extend_from_slice(&[0; 33]);
            n += 1;
        } else {
            out.extend_from_slice(&blob[at..end]);
        }
        at = end;
    }
    *blob = out;
    Some(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(p: &str, r: &str) -> SubjectEntry {
        SubjectEntry {
            subject: p.into(),
            record: r.into(),
        }
    }

    #[test]
    fn entries_round_trip_unlink_and_refuse_changes() {
        let a = "0123456789abcdef0123456789abcdef";
        let b = "fedcba9876543210fedcba9876543210";
        let list = [
            entry(a, "shown"),
            entry(b, "dropped"),
            entry(a, "consent marketing granted"),
        ];
        let (mut blob, commits) = seal(&list).unwrap();
        let slots = open(&blob).unwrap();
        assert_eq!(slots.iter().map(|s| s.commit).collect::<Vec<_>>(), commits);
        assert_eq!(
            slots
                .iter()
                .map(|s| s.entry.clone().unwrap())
                .collect::<Vec<_>>(),
            list
        );
        // Two salts never repeat: equal entries get different commitments.
        let (_, again) = seal(&list).unwrap();
        assert_ne!(again, commits);

        assert_eq!(unlink(&mut blob, &pseudonym_bytes(a).unwrap()), Some(2));
        let slots = open(&blob).unwrap();
        assert_eq!(slots.iter().map(|s| s.commit).collect::<Vec<_>>(), commits);
        assert_eq!(slots[0].entry, None);
        assert_eq!(slots[1].entry, Some(list[1].clone()));
        assert!(!blob.windows(16).any(|w| w == pseudonym_bytes(a).unwrap()));

        // A changed byte anywhere in an open entry, or a cut, is refused.
        let (blob, _) = seal(&list).unwrap();
        for i in 0..blob.len() {
            let mut bad = blob.clone();
            bad[i] ^= 1;
            assert!(
                open(&bad)
                    .is_none_or(|s| s.iter().map(|s| s.commit).collect::<Vec<_>>() != commits),
                "byte {i}"
            );
        }
        assert!(open(&blob[..blob.len() - 1]).is_none());
        assert!(seal(&[entry("not-hex", "shown")]).is_err());
    }
}
