//! Strict JSON lexing primitives over a byte window (RFC 8259, no extensions).
//!
//! Hand-written because this is the product's core: the rewriter must keep every
//! byte it does not rewrite, resume a token split across network chunks, and
//! validate strings at memory speed. Strings are scanned eight bytes at a time
//! (SWAR over a `u64`, no `unsafe`): one word test finds the next quote,
//! backslash, control byte or non-ASCII byte.
//!
//! Everything here is pure: no allocation, no I/O, no logging.

use std::fmt;

/// Why the input is not strict JSON. Never contains input bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Malformed {
    /// A byte that cannot start or continue the expected token.
    Unexpected,
    /// A raw control character (below U+0020) inside a string.
    ControlInString,
    /// A backslash escape other than `\" \\ \/ \b \f \n \r \t \uXXXX`.
    BadEscape,
    /// A `\u` escape that is an unpaired UTF-16 surrogate.
    LoneSurrogate,
    /// Bytes that are not UTF-8.
    InvalidUtf8,
    /// A number outside the JSON grammar (`01`, `1.`, `.5`, `+1`, `NaN`).
    BadNumber,
    /// Something that starts like `true`, `false` or `null` but is not.
    BadLiteral,
    /// The body ended inside a value.
    UnexpectedEnd,
    /// Data after the top-level value.
    TrailingData,
    /// A byte-order mark; strict JSON has none.
    ByteOrderMark,
    /// Nesting deeper than the configured limit.
    TooDeep,
}

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Malformed::Unexpected => "unexpected byte",
            Malformed::ControlInString => "raw control character in a string",
            Malformed::BadEscape => "invalid escape sequence",
            Malformed::LoneSurrogate => "unpaired UTF-16 surrogate escape",
            Malformed::InvalidUtf8 => "invalid UTF-8",
            Malformed::BadNumber => "invalid number",
            Malformed::BadLiteral => "invalid literal",
            Malformed::UnexpectedEnd => "body ends inside a value",
            Malformed::TrailingData => "data after the top-level value",
            Malformed::ByteOrderMark => "byte-order mark before the value",
            Malformed::TooDeep => "nesting too deep",
        })
    }
}

/// Result of scanning a string body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Str {
    /// The string ends at `end` (the index just past the closing quote).
    End(usize),
    /// The window ends inside the string; scanning can resume at `resume`.
    More(usize),
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGH: u64 = 0x8080_8080_8080_8080;

#[inline(always)]
pub(crate) fn load8(s: &[u8], i: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&s[i..i + 8]);
    u64::from_le_bytes(a)
}

/// High bit set in every byte lane that is `"`, `\`, below 0x20 or above 0x7F.
/// The lowest flagged lane is always exact (borrows only run upwards).
#[inline(always)]
pub(crate) fn special_lanes(w: u64) -> u64 {
    let q = w ^ (ONES * b'"' as u64);
    let b = w ^ (ONES * b'\\' as u64);
    let is_q = q.wrapping_sub(ONES) & !q;
    let is_b = b.wrapping_sub(ONES) & !b;
    let ctl = w.wrapping_sub(ONES * 0x20) & !w;
    (is_q | is_b | ctl | w) & HIGH
}

/// The end of a short plain string starting at `i` (after its opening
/// quote), looking at most four words ahead. The quote test uses the lane
/// masks, not a reload of the byte, to keep the dependency chain short.
#[inline(always)]
pub fn short_string(buf: &[u8], i: usize) -> Short {
    if i + 32 > buf.len() {
        return Short::Other;
    }
    let mut at = i;
    let (w, m) = loop {
        let w = load8(buf, at);
        let m = special_lanes(w);
        if m != 0 {
            break (w, m);
        }
        at += 8;
        if at == i + 32 {
            return Short::Plain(at);
        }
    };
    let first = m & m.wrapping_neg();
    let q = w ^ (ONES * b'"' as u64);
    let is_q = q.wrapping_sub(ONES) & !q & HIGH;
    if is_q & first != 0 {
        Short::End(at + (m.trailing_zeros() / 8) as usize + 1)
    } else {
        Short::Other
    }
}

/// What `short_string` found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Short {
    /// The string ends here (index past the closing quote).
    End(usize),
    /// 32 plain ASCII bytes: a long string; continue scanning from here.
    Plain(usize),
    /// An escape, a non-ASCII or control byte, or the window's end: use `string`.
    Other,
}

/// Scans a string body from `i` (just after the opening quote, or a resume
/// point). Sets `*escaped` when the string contains a backslash escape.
///
/// Short strings are scanned eight bytes at a time in a `u64`; once 16 plain
/// bytes have gone by, the rest of a long string (notes, comments) is searched
/// with `memchr2` for the next quote or backslash and the run before it is
/// validated in one vectorisable pass.
#[inline]
pub fn string(buf: &[u8], mut i: usize, escaped: &mut bool) -> Result<Str, Malformed> {
    let n = buf.len();
    loop {
        let mut words = 0;
        while i + 8 <= n {
            let m = special_lanes(load8(buf, i));
            if m != 0 {
                i += (m.trailing_zeros() / 8) as usize;
                break;
            }
            i += 8;
            words += 1;
            if words == 2 {
                // A long run: jump to the next quote or backslash.
                let run_end = memchr::memchr2(b'"', b'\\', &buf[i..]).map_or(n, |o| i + o);
                match plain_run(&buf[i..run_end]) {
                    Ok(()) => i = run_end,
                    Err(PlainStop::At(k)) => i += k,
                    Err(PlainStop::Control) => return Err(Malformed::ControlInString),
                    Err(PlainStop::Utf8) => return Err(Malformed::InvalidUtf8),
                }
                if i >= n {
                    return Ok(Str::More(n));
                }
                break;
            }
        }
        // Either at a special byte or within 8 bytes of the end.
        while i < n && !is_special(buf[i]) {
            i += 1;
        }
        if i >= n {
            return Ok(Str::More(n));
        }
        match buf[i] {
            b'"' => return Ok(Str::End(i + 1)),
            b'\\' => match escape(buf, i)? {
                Some(len) => {
                    *escaped = true;
                    i += len;
                }
                None => return Ok(Str::More(i)),
            },
            c if c < 0x20 => return Err(Malformed::ControlInString),
            _ => match utf8_char(buf, i)? {
                Some(len) => i += len,
                None => return Ok(Str::More(i)),
            },
        }
    }
}

enum PlainStop {
    /// The run ends inside a UTF-8 character at this offset: resume there.
    At(usize),
    Control,
    Utf8,
}

/// Validates a run that holds no quote or backslash: no control bytes, and UTF-8.
#[inline]
fn plain_run(run: &[u8]) -> Result<(), PlainStop> {
    // Branch-free so it vectorises: OR of "below 0x20" and "high bit" per byte.
    let (ctl, high) = run.iter().fold((0u8, 0u8), |(c, h), &b| {
        (c | u8::from(b < 0x20), h | (b & 0x80))
    });
    if ctl != 0 {
        return Err(PlainStop::Control);
    }
    if high == 0 {
        return Ok(());
    }
    match std::str::from_utf8(run) {
        Ok(_) => Ok(()),
        // The run stops where the window does, in the middle of a character.
        Err(e) if e.error_len().is_none() => Err(PlainStop::At(e.valid_up_to())),
        Err(_) => Err(PlainStop::Utf8),
    }
}

#[inline(always)]
fn is_special(b: u8) -> bool {
    b == b'"' || b == b'\\' || !(0x20..0x80).contains(&b)
}

/// Validates one escape at `i` (which holds the backslash). Returns its length,
/// or `None` if the window ends before it is complete.
fn escape(buf: &[u8], i: usize) -> Result<Option<usize>, Malformed> {
    let Some(&c) = buf.get(i + 1) else {
        return Ok(None);
    };
    match c {
        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => Ok(Some(2)),
        b'u' => {
            let Some(hi) = hex4(buf, i + 2)? else {
                return Ok(None);
            };
            match hi {
                0xD800..=0xDBFF => {
                    // A high surrogate must be followed by an escaped low one.
                    match (buf.get(i + 6), buf.get(i + 7)) {
                        (None, _) | (Some(b'\\'), None) => return Ok(None),
                        (Some(b'\\'), Some(b'u')) => {}
                        _ => return Err(Malformed::LoneSurrogate),
                    }
                    match hex4(buf, i + 8)? {
                        None => Ok(None),
                        Some(0xDC00..=0xDFFF) => Ok(Some(12)),
                        Some(_) => Err(Malformed::LoneSurrogate),
                    }
                }
                0xDC00..=0xDFFF => Err(Malformed::LoneSurrogate),
                _ => Ok(Some(6)),
            }
        }
        _ => Err(Malformed::BadEscape),
    }
}

fn hex4(buf: &[u8], i: usize) -> Result<Option<u32>, Malformed> {
    let mut v = 0u32;
    for k in 0..4 {
        let Some(&c) = buf.get(i + k) else {
            return Ok(None);
        };
        let d = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            b'A'..=b'F' => c - b'A' + 10,
            _ => return Err(Malformed::BadEscape),
        };
        v = v << 4 | d as u32;
    }
    Ok(Some(v))
}

/// Validates one UTF-8 encoded character at `i` (a byte >= 0x80). Returns its
/// length, or `None` if the window ends inside it. Rejects overlong forms,
/// surrogates and code points above U+10FFFF.
pub fn utf8_char(buf: &[u8], i: usize) -> Result<Option<usize>, Malformed> {
    let lead = buf[i];
    let (len, lo, hi) = match lead {
        0xC2..=0xDF => (2, 0x80, 0xBF),
        0xE0 => (3, 0xA0, 0xBF),
        0xE1..=0xEC | 0xEE..=0xEF => (3, 0x80, 0xBF),
        0xED => (3, 0x80, 0x9F),
        0xF0 => (4, 0x90, 0xBF),
        0xF1..=0xF3 => (4, 0x80, 0xBF),
        0xF4 => (4, 0x80, 0x8F),
        _ => return Err(Malformed::InvalidUtf8),
    };
    for k in 1..len {
        let Some(&c) = buf.get(i + k) else {
            return Ok(None);
        };
        let (l, h) = if k == 1 { (lo, hi) } else { (0x80, 0xBF) };
        if !(l..=h).contains(&c) {
            return Err(Malformed::InvalidUtf8);
        }
    }
    Ok(Some(len))
}

/// Scans a number starting at `i`. Returns the index just past it, or `None`
/// when the window ends inside it and more input may follow.
pub fn number(buf: &[u8], start: usize, last: bool) -> Result<Option<usize>, Malformed> {
    let n = buf.len();
    let mut i = start;
    let more = |i: usize| {
        if i >= n && !last {
            Ok(None)
        } else {
            Err(Malformed::BadNumber)
        }
    };
    if buf.get(i) == Some(&b'-') {
        i += 1;
    }
    match buf.get(i) {
        Some(b'0') => i += 1,
        Some(b'1'..=b'9') => {
            i += 1;
            while i < n && buf[i].is_ascii_digit() {
                i += 1;
            }
        }
        _ => return more(i),
    }
    if i < n && buf[i] == b'.' {
        i += 1;
        let d = i;
        while i < n && buf[i].is_ascii_digit() {
            i += 1;
        }
        if i == d {
            return more(i);
        }
    }
    if i < n && (buf[i] == b'e' || buf[i] == b'E') {
        i += 1;
        if i < n && (buf[i] == b'+' || buf[i] == b'-') {
            i += 1;
        }
        let d = i;
        while i < n && buf[i].is_ascii_digit() {
            i += 1;
        }
        if i == d {
            return more(i);
        }
    }
    if i >= n && !last {
        return Ok(None); // more digits may follow in the next chunk
    }
    Ok(Some(i))
}

/// Matches the literal `word` (`true`, `false`, `null`) at `i`.
pub fn literal(buf: &[u8], i: usize, word: &[u8], last: bool) -> Result<Option<usize>, Malformed> {
    let have = &buf[i..buf.len().min(i + word.len())];
    if have != &word[..have.len()] {
        return Err(Malformed::BadLiteral);
    }
    if have.len() < word.len() {
        return if last {
            Err(Malformed::BadLiteral)
        } else {
            Ok(None)
        };
    }
    Ok(Some(i + word.len()))
}

#[inline(always)]
pub fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\n' | b'\r' | b'\t')
}

/// Decodes a validated string body (no quotes) into UTF-8 bytes.
pub fn unescape(raw: &[u8], out: &mut Vec<u8>) {
    let mut i = 0;
    while i < raw.len() {
        let Some(off) = memchr::memchr(b'\\', &raw[i..]) else {
            out.extend_from_slice(&raw[i..]);
            return;
        };
        out.extend_from_slice(&raw[i..i + off]);
        i += off;
        let c = raw.get(i + 1).copied().unwrap_or(b'\\');
        i += 2;
        let simple = match c {
            b'b' => Some(8),
            b'f' => Some(12),
            b'n' => Some(b'\n'),
            b'r' => Some(b'\r'),
            b't' => Some(b'\t'),
            b'u' => None,
            other => Some(other),
        };
        if let Some(b) = simple {
            out.push(b);
            continue;
        }
        let hex = |at: usize| -> u32 {
            raw.get(at..at + 4)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u32::from_str_radix(h, 16).ok())
                .unwrap_or(0xFFFD)
        };
        let mut code = hex(i);
        i += 4;
        if (0xD800..0xDC00).contains(&code) {
            let lo = hex(i + 2);
            i += 6;
            code = 0x10000 + ((code - 0xD800) << 10) + (lo.wrapping_sub(0xDC00) & 0x3FF);
        }
        let ch = char::from_u32(code).unwrap_or('\u{FFFD}');
        let mut tmp = [0u8; 4];
        out.extend_from_slice(ch.encode_utf8(&mut tmp).as_bytes());
    }
}

/// Writes `text` (UTF-8) as a JSON string literal, quotes included.
pub fn quote(text: &[u8], out: &mut Vec<u8>) {
    out.push(b'"');
    let mut start = 0;
    for (i, &b) in text.iter().enumerate() {
        let esc: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1F => b"",
            _ => continue,
        };
        out.extend_from_slice(&text[start..i]);
        if esc.is_empty() {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.extend_from_slice(b"\\u00");
            out.push(HEX[(b >> 4) as usize]);
            out.push(HEX[(b & 15) as usize]);
        } else {
            out.extend_from_slice(esc);
        }
        start = i + 1;
    }
    out.extend_from_slice(&text[start..]);
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(s: &[u8]) -> Result<Str, Malformed> {
        let mut e = false;
        string(s, 0, &mut e)
    }

    #[test]
    fn strings_end_at_the_first_unescaped_quote() {
        assert_eq!(scan(b"abc\" tail"), Ok(Str::End(4)));
        assert_eq!(scan(b"a long ascii run of text here\""), Ok(Str::End(30)));
        assert_eq!(scan(b"x\\\"y\"z"), Ok(Str::End(5)));
        assert_eq!(scan("caf\u{e9} \u{1F600}\"".as_bytes()), Ok(Str::End(11)));
        let mut e = false;
        assert_eq!(
            string(b"\\u0041\\ud83d\\ude00\"", 0, &mut e),
            Ok(Str::End(19))
        );
        assert!(e);
    }

    #[test]
    fn strings_split_across_chunks_ask_for_more() {
        assert_eq!(scan(b"abcdefghijklmnop"), Ok(Str::More(16)));
        assert_eq!(scan(b"ab\\"), Ok(Str::More(2)));
        assert_eq!(scan(b"ab\\u00"), Ok(Str::More(2)));
        assert_eq!(scan(b"ab\\ud83d"), Ok(Str::More(2)));
        assert_eq!(scan(b"ab\\ud83d\\"), Ok(Str::More(2)));
        assert_eq!(scan(&[b'a', 0xE2, 0x82]), Ok(Str::More(1)));
    }

    #[test]
    fn strict_strings_reject_what_json_forbids() {
        assert_eq!(scan(b"a\tb\""), Err(Malformed::ControlInString));
        assert_eq!(scan(b"0123456789\x01\""), Err(Malformed::ControlInString));
        assert_eq!(scan(b"\\x\""), Err(Malformed::BadEscape));
        assert_eq!(scan(b"\\ud800\""), Err(Malformed::LoneSurrogate));
        assert_eq!(scan(b"\\udc00\""), Err(Malformed::LoneSurrogate));
        assert_eq!(scan(b"\\ud800\\u0041\""), Err(Malformed::LoneSurrogate));
        assert_eq!(scan(b"\\u12g4\""), Err(Malformed::BadEscape));
        for bad in [
            &[0xC0, 0x80][..],
            &[0xED, 0xA0, 0x80],
            &[0xF4, 0x90, 0x80, 0x80],
            &[0xFF],
            &[0x80],
            &[0xE2, 0x28, 0xA1],
        ] {
            let mut s = bad.to_vec();
            s.push(b'"');
            assert_eq!(scan(&s), Err(Malformed::InvalidUtf8), "{bad:x?}");
        }
    }

    #[test]
    fn numbers_follow_the_json_grammar() {
        for (s, end) in [
            ("0,", 1),
            ("-0]", 2),
            ("123456789012345678901234567890 ", 30),
            ("1e400}", 5),
            ("1.0E+2,", 6),
            ("-12.5e-3 ", 8),
        ] {
            assert_eq!(number(s.as_bytes(), 0, false), Ok(Some(end)), "{s}");
        }
        for s in ["-", "1.", "1e", "1e+", ".5", "+1", "-a"] {
            assert_eq!(
                number(s.as_bytes(), 0, true),
                Err(Malformed::BadNumber),
                "{s}"
            );
        }
        assert_eq!(number(b"12", 0, false), Ok(None));
        assert_eq!(number(b"12", 0, true), Ok(Some(2)));
        assert_eq!(number(b"1.", 0, false), Ok(None));
    }

    #[test]
    fn literals() {
        assert_eq!(literal(b"true,", 0, b"true", false), Ok(Some(4)));
        assert_eq!(literal(b"tr", 0, b"true", false), Ok(None));
        assert_eq!(literal(b"tr", 0, b"true", true), Err(Malformed::BadLiteral));
        assert_eq!(
            literal(b"trUe", 0, b"true", false),
            Err(Malformed::BadLiteral)
        );
    }

    #[test]
    fn unescape_and_quote_round_trip() {
        let mut out = Vec::new();
        unescape(br#"a\"b\\c\/d\n\u00e9\ud83d\ude00\u0000"#, &mut out);
        assert_eq!(out, "a\"b\\c/d\n\u{e9}\u{1F600}\0".as_bytes());
        let mut q = Vec::new();
        quote(&out, &mut q);
        assert_eq!(q, "\"a\\\"b\\\\c/d\\n\u{e9}\u{1F600}\\u0000\"".as_bytes());
    }
}
