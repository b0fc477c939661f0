//! Field actions: how one selected JSON value is rewritten.
//!
//! Input is the value's exact bytes from the body; output is the bytes that
//! replace them. A value an action cannot sensibly apply to (a mask on an
//! object, a hash of `true`) is redacted: when in doubt, nothing passes.
//! Pure and allocation-light: working buffers live in `Scratch`.

use super::detect::{self, Detector, DetectorSet, Found};
use super::lex::{quote, unescape};
use super::program::{Action, ActionTable, Mask, Render};

/// Reusable buffers for one rewriter.
#[derive(Debug, Default)]
pub struct Scratch {
    text: Vec<u8>,
    work: Vec<u8>,
    found: Vec<Found>,
}

/// What an action did to a value (for counters and, later, the audit event).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    Unchanged,
    Masked,
    Hashed,
    Redacted,
    /// Free text with this many detector matches replaced.
    Scanned(u32),
}

const MASK: &str = "***";

/// Writes the replacement of `raw` under `action` to `out`. `Action::Remove`
/// is handled by the caller (it deletes the member); here it redacts.
pub fn render(
    action: Action,
    scan: DetectorSet,
    raw: &[u8],
    table: &ActionTable,
    render: &Render,
    s: &mut Scratch,
    out: &mut Vec<u8>,
) -> Applied {
    let first = raw.first().copied().unwrap_or(b'n');
    match action {
        Action::Allow => {
            if !scan.is_empty() {
                match first {
                    b'"' => return scan_text(scan, raw, table, render, s, out),
                    b'{' | b'[' => return scan_container(scan, raw, table, render, s, out),
                    _ => {}
                }
            }
            out.extend_from_slice(raw);
            Applied::Unchanged
        }
        Action::Keep => {
            out.extend_from_slice(raw);
            Applied::Unchanged
        }
        // `Seal` and `Token` concern encrypted fields (the rewriter handles
        // those); anywhere else they show nothing.
        Action::Redact | Action::Remove | Action::Seal | Action::Token => {
            out.extend_from_slice(&render.placeholder);
            Applied::Redacted
        }
        Action::Mask(_) | Action::Hash => {
            let text: &[u8] = match first {
                b'"' => decoded(raw, &mut s.text),
                b'n' => {
                    out.extend_from_slice(raw); // null carries nothing
                    return Applied::Unchanged;
                }
                b'-' | b'0'..=b'9' => raw,
                _ => {
                    out.extend_from_slice(&render.placeholder);
                    return Applied::Redacted;
                }
            };
            s.work.clear();
            let done = replace_text(action, text, render, &mut s.work);
            if done == Applied::Redacted {
                out.extend_from_slice(&render.placeholder);
            } else {
                quote(&s.work, out);
            }
            done
        }
    }
}

/// The decoded text of a JSON string literal (with quotes).
pub(crate) fn decoded<'a>(raw: &'a [u8], buf: &'a mut Vec<u8>) -> &'a [u8] {
    let inner = &raw[1..raw.len() - 1];
    if memchr::memchr(b'\\', inner).is_none() {
        return inner;
    }
    buf.clear();
    unescape(inner, buf);
    buf
}

/// Writes the masked or hashed form of `text` (unquoted) to `out`.
fn replace_text(action: Action, text: &[u8], render: &Render, out: &mut Vec<u8>) -> Applied {
    match action {
        Action::Mask(m) => match std::str::from_utf8(text) {
            Ok(t) => {
                mask(m, t, out);
                Applied::Masked
            }
            Err(_) => Applied::Redacted,
        },
        Action::Hash => match &render.hash_key {
            Some(k) => {
                k.pseudonym(text, out);
                Applied::Hashed
            }
            None => Applied::Redacted,
        },
        _ => Applied::Redacted,
    }
}

/// Applies a mask to `text`, writing the result to `out` (no allocation).
pub fn mask(m: Mask, text: &str, out: &mut Vec<u8>) {
    let mut tmp = [0u8; 4];
    let mut put =
        |c: char, out: &mut Vec<u8>| out.extend_from_slice(c.encode_utf8(&mut tmp).as_bytes());
    match m {
        Mask::Last(n) => {
            // The last n letters or digits, found from the end.
            let n = n as usize;
            let mut keep = ['\0'; 32];
            let mut k = 0;
            let mut more = false;
            for c in text.chars().rev().filter(|c| c.is_alphanumeric()) {
                if k == n {
                    more = true;
                    break;
                }
                keep[k] = c;
                k += 1;
            }
            out.extend_from_slice(MASK.as_bytes());
            if more {
                for &c in keep[..k].iter().rev() {
                    put(c, out);
                }
            }
        }
        Mask::First(n) => {
            if text.chars().nth(n as usize).is_some() {
                text.chars().take(n as usize).for_each(|c| put(c, out));
            }
            out.extend_from_slice(MASK.as_bytes());
        }
        Mask::FirstLast(a, b) => {
            let count = text.chars().count();
            if count > (a + b) as usize {
                text.chars().take(a as usize).for_each(|c| put(c, out));
                out.extend_from_slice(MASK.as_bytes());
                text.chars()
                    .skip(count - b as usize)
                    .for_each(|c| put(c, out));
            } else {
                out.extend_from_slice(MASK.as_bytes());
            }
        }
        Mask::EmailDomain => {
            out.extend_from_slice(MASK.as_bytes());
            if let Some((_, domain)) = text.rsplit_once('@') {
                out.push(b'@');
                out.extend_from_slice(domain.as_bytes());
            }
        }
    }
}

/// Runs the detectors over every string (member names included) inside an
/// object or array, e.g. a notes field that holds a list of notes.
fn scan_container(
    scan: DetectorSet,
    raw: &[u8],
    table: &ActionTable,
    render: &Render,
    s: &mut Scratch,
    out: &mut Vec<u8>,
) -> Applied {
    let start_len = out.len();
    let mut found = 0u32;
    let mut i = 0;
    while let Some(off) = memchr::memchr(b'"', &raw[i..]) {
        let start = i + off;
        out.extend_from_slice(&raw[i..start]);
        let mut escaped = false;
        let end = match super::lex::string(raw, start + 1, &mut escaped) {
            Ok(super::lex::Str::End(e)) => e,
            // Unreachable for a validated value; never pass what was not scanned.
            _ => {
                out.truncate(start_len);
                out.extend_from_slice(&render.placeholder);
                return Applied::Redacted;
            }
        };
        if let Applied::Scanned(n) = scan_text(scan, &raw[start..end], table, render, s, out) {
            found += n;
        }
        i = end;
    }
    out.extend_from_slice(&raw[i..]);
    if found > 0 {
        Applied::Scanned(found)
    } else {
        Applied::Unchanged
    }
}

/// Runs the detectors over a string value and replaces what the rule does not allow.
fn scan_text(
    scan: DetectorSet,
    raw: &[u8],
    table: &ActionTable,
    render: &Render,
    s: &mut Scratch,
    out: &mut Vec<u8>,
) -> Applied {
    // Only run the detectors whose matches the purpose may not see.
    let mut active = DetectorSet::EMPTY;
    for d in scan.iter() {
        if table.detectors[d as usize] != Action::Allow {
            active = active.with(d);
        }
    }
    let inner = &raw[1..raw.len() - 1];
    let escaped = memchr::memchr(b'\\', inner).is_some();
    let text: &[u8] = if escaped {
        s.text.clear();
        unescape(inner, &mut s.text);
        &s.text
    } else {
        inner
    };
    s.found.clear();
    detect::detect(text, active, &mut s.found);
    if s.found.is_empty() {
        out.extend_from_slice(raw);
        return Applied::Unchanged;
    }
    // Build the new text, then write it as a JSON string. Without escapes in
    // the input, the untouched parts are copied byte for byte.
    s.work.clear();
    let mut at = 0;
    for f in &s.found {
        s.work.extend_from_slice(&text[at..f.start]);
        replacement(f.kind, &text[f.start..f.end], table, render, &mut s.work);
        at = f.end;
    }
    s.work.extend_from_slice(&text[at..]);
    quote(&s.work, out);
    Applied::Scanned(s.found.len() as u32)
}

fn replacement(
    kind: Detector,
    matched: &[u8],
    table: &ActionTable,
    render: &Render,
    out: &mut Vec<u8>,
) {
    let action = table.detectors[kind as usize];
    let start = out.len();
    match replace_text(action, matched, render, out) {
        Applied::Masked | Applied::Hashed => {}
        _ => {
            out.truncate(start);
            out.extend_from_slice(render.replacements[kind as usize].as_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transform::program::HashKey;
    use std::sync::Arc;

    fn table() -> ActionTable {
        ActionTable {
            fields: vec![],
            detectors: [Action::Redact; Detector::COUNT],
            unlisted: Action::Allow,
        }
    }

    fn run(action: Action, scan: DetectorSet, raw: &str, render: &Render) -> String {
        let mut out = Vec::new();
        let mut s = Scratch::default();
        super::render(
            action,
            scan,
            raw.as_bytes(),
            &table(),
            render,
            &mut s,
            &mut out,
        );
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn masks() {
        let r = Render::default();
        let m = |spec: &str, v: &str| {
            run(
                Action::Mask(Mask::parse(spec).unwrap()),
                DetectorSet::EMPTY,
                v,
                &r,
            )
        };
        assert_eq!(m("last4", r#""+1 (555) 234-5678""#), r#""***5678""#);
        assert_eq!(m("last4", r#""+33 1 23 45 67 89""#), r#""***6789""#);
        assert_eq!(
            m("last4", r#""123""#),
            r#""***""#,
            "short values are fully masked"
        );
        assert_eq!(
            m("last4", "4111111111111111"),
            r#""***1111""#,
            "numbers become strings"
        );
        assert_eq!(
            m("email_domain", r#""jane@example.com""#),
            r#""***@example.com""#
        );
        assert_eq!(
            m("email_domain", r#""j\u0061ne@ex.org""#),
            r#""***@ex.org""#
        );
        assert_eq!(m("first1_last2", r#""Andersen""#), r#""A***en""#);
        assert_eq!(m("first2", r#""Zoë""#), r#""Zo***""#);
        assert_eq!(m("last4", "null"), "null");
        assert_eq!(m("last4", "true"), "null");
        assert_eq!(m("last4", r#"{"a":1}"#), "null");
    }

    #[test]
    fn mask_specs_parse_and_print() {
        for s in ["last4", "first2", "first1_last2", "email_domain"] {
            assert_eq!(Mask::parse(s).unwrap().to_string(), s);
        }
        for s in ["last", "last0", "last99", "first_last", "middle3", ""] {
            assert!(Mask::parse(s).is_none(), "{s}");
        }
    }

    #[test]
    fn hash_is_keyed_and_stable() {
        let r = Render {
            hash_key: Some(Arc::new(HashKey::new(b"0123456789abcdef0123").unwrap())),
            ..Render::default()
        };
        let a = run(
            Action::Hash,
            DetectorSet::EMPTY,
            r#""jane@example.com""#,
            &r,
        );
        let b = run(
            Action::Hash,
            DetectorSet::EMPTY,
            r#""jane@ex\u0061mple.com""#,
            &r,
        );
        assert_eq!(a, b, "the decoded value is hashed");
        assert_eq!(a.len(), 34);
        let r2 = Render {
            hash_key: Some(Arc::new(HashKey::new(b"another key of 20 by").unwrap())),
            ..Render::default()
        };
        assert_ne!(
            a,
            run(
                Action::Hash,
                DetectorSet::EMPTY,
                r#""jane@example.com""#,
                &r2
            )
        );
        assert_eq!(
            run(
                Action::Hash,
                DetectorSet::EMPTY,
                r#""x""#,
                &Render::default()
            ),
            "null"
        );
        assert!(HashKey::new(b"short").is_none());
    }

    #[test]
    fn scanning_reaches_strings_inside_containers() {
        let r = Render::default();
        assert_eq!(
            run(
                Action::Allow,
                DetectorSet::all(),
                r#"["card 4111111111111111", {"a@b.example": "x", "n": 1}]"#,
                &r
            ),
            r#"["card [CARD]", {"[EMAIL]": "x", "n": 1}]"#
        );
    }

    #[test]
    fn scanning_replaces_only_matches_and_keeps_other_bytes() {
        let r = Render::default();
        let all = DetectorSet::all();
        assert_eq!(
            run(Action::Allow, all, r#""mail a@b.example, \/ ok""#, &r),
            r#""mail [EMAIL], / ok""#
        );
        assert_eq!(
            run(Action::Allow, all, r#""call +1 555 234 5678 now""#, &r),
            r#""call [PHONE] now""#
        );
        let clean = r#""nothing to see \u00e9 here""#;
        assert_eq!(
            run(Action::Allow, all, clean, &r),
            clean,
            "untouched strings keep their escapes"
        );
        assert_eq!(run(Action::Redact, all, clean, &r), "null");
    }
}
