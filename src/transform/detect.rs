//! Free-text detectors: personal data inside prose (notes, comments, tickets).
//!
//! One left-to-right pass over the decoded text finds e-mail addresses, phone
//! numbers, payment card numbers (Luhn), IBANs (ISO 13616 mod-97), US social
//! security numbers and IPv4/IPv6 addresses. Candidates are anchored on cheap
//! bytes (`@`, digits, `+`, `(`, `:`, capital letters) and then validated, so
//! plain prose costs one table lookup per byte. Written by hand rather than as
//! one big regex: the checksums need code anyway, and a single pass keeps the
//! cost at a few hundred MB/s on notes-heavy bodies.
//!
//! Pure: reports byte ranges, never logs or stores what it found.

use std::fmt;
use std::str::FromStr;

/// A kind of personal data found in text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Detector {
    Email = 0,
    Phone = 1,
    PaymentCard = 2,
    Iban = 3,
    UsSsn = 4,
    IpAddress = 5,
}

impl Detector {
    pub const ALL: [Detector; 6] = [
        Detector::Email,
        Detector::Phone,
        Detector::PaymentCard,
        Detector::Iban,
        Detector::UsSsn,
        Detector::IpAddress,
    ];
    pub const COUNT: usize = 6;

    /// The name used in policies (`scan: [email, phone]`).
    pub fn name(self) -> &'static str {
        match self {
            Detector::Email => "email",
            Detector::Phone => "phone",
            Detector::PaymentCard => "payment_card",
            Detector::Iban => "iban",
            Detector::UsSsn => "us_ssn",
            Detector::IpAddress => "ip_address",
        }
    }

    pub fn from_name(name: &str) -> Option<Detector> {
        Detector::ALL.into_iter().find(|d| d.name() == name)
    }

    /// The fideslang data category of what this detector finds: the purpose's
    /// rule for that category decides what happens to a match.
    pub fn category(self) -> &'static str {
        match self {
            Detector::Email => "user.contact.email",
            Detector::Phone => "user.contact.phone_number",
            Detector::PaymentCard => "user.financial.credit_card",
            Detector::Iban => "user.financial.bank_account",
            Detector::UsSsn => "user.government_id.national_identification_number",
            Detector::IpAddress => "user.device.ip_address",
        }
    }

    /// Replacement text used when the rule redacts a match.
    pub fn default_replacement(self) -> &'static str {
        match self {
            Detector::Email => "[EMAIL]",
            Detector::Phone => "[PHONE]",
            Detector::PaymentCard => "[CARD]",
            Detector::Iban => "[IBAN]",
            Detector::UsSsn => "[SSN]",
            Detector::IpAddress => "[IP]",
        }
    }
}

impl fmt::Display for Detector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A set of detectors.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct DetectorSet(u8);

impl DetectorSet {
    pub const EMPTY: DetectorSet = DetectorSet(0);

    pub fn all() -> DetectorSet {
        DetectorSet((1 << Detector::COUNT) - 1)
    }

    pub fn with(self, d: Detector) -> DetectorSet {
        DetectorSet(self.0 | 1 << d as u8)
    }

    pub fn union(self, o: DetectorSet) -> DetectorSet {
        DetectorSet(self.0 | o.0)
    }

    pub fn has(self, d: Detector) -> bool {
        self.0 & (1 << d as u8) != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn iter(self) -> impl Iterator<Item = Detector> {
        Detector::ALL.into_iter().filter(move |d| self.has(*d))
    }
}

/// A match: `text[start..end]` is personal data of kind `kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Found {
    pub start: usize,
    pub end: usize,
    pub kind: Detector,
}

// Byte classes for the scan loop.
const C_NONE: u8 = 0;
const C_DIGIT: u8 = 1;
const C_AT: u8 = 2;
const C_PLUS: u8 = 3; // '+' or '('
const C_UPPER: u8 = 4;
const C_COLON: u8 = 5;

static CLASS: [u8; 256] = {
    let mut t = [C_NONE; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        t[i] = if b.is_ascii_digit() {
            C_DIGIT
        } else if b == b'@' {
            C_AT
        } else if b == b'+' || b == b'(' {
            C_PLUS
        } else if b.is_ascii_uppercase() {
            C_UPPER
        } else if b == b':' {
            C_COLON
        } else {
            C_NONE
        };
        i += 1;
    }
    t
};

/// Finds personal data of the kinds in `set` in `text`, appending
/// non-overlapping matches in order to `out`.
pub fn detect(text: &[u8], set: DetectorSet, out: &mut Vec<Found>) {
    if set.is_empty() {
        return;
    }
    let first = out.len();
    let n = text.len();
    let mut i = 0;
    // Everything before `floor` is already inside a reported match.
    let mut floor = 0;
    while i < n {
        let c = CLASS[text[i] as usize];
        if c == C_NONE {
            i += 1;
            continue;
        }
        let boundary = i == 0 || !word_before(text, i);
        let found = match c {
            C_DIGIT | C_PLUS if boundary => numeric(text, i, set),
            C_AT if set.has(Detector::Email) => email(text, i, floor),
            C_UPPER if boundary && set.has(Detector::Iban) => iban(text, i),
            C_COLON if set.has(Detector::IpAddress) => ipv6(text, i, floor),
            _ => None,
        };
        match found {
            Some(f) if f.start >= floor => {
                // An e-mail or IPv6 found by looking back may swallow a
                // number reported a moment ago: keep the wider match.
                while out.len() > first && out.last().is_some_and(|l| l.start >= f.start) {
                    out.pop();
                }
                out.push(f);
                floor = f.end;
                i = f.end;
            }
            _ => {
                // Skip the rest of this word or number run so we do not
                // re-anchor inside something already rejected as a whole.
                let from = i;
                i += 1;
                if (c == C_DIGIT || c == C_PLUS) && boundary {
                    i = i.max(run(text, from).end);
                }
                if c == C_DIGIT || c == C_UPPER {
                    while i < n && text[i].is_ascii_alphanumeric() {
                        i += 1;
                    }
                }
                if c == C_COLON {
                    // The whole hex-and-colon run was considered: skip it.
                    while i < n && is_v6(text[i]) {
                        i += 1;
                    }
                }
            }
        }
    }
}

#[inline]
fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b >= 0x80
}

/// Whether the character before `i` is part of a word (a letter or digit,
/// in any script: `n°4111...` starts a number, `é4111` does not).
fn word_before(text: &[u8], i: usize) -> bool {
    let b = text[i - 1];
    if b < 0x80 {
        return b.is_ascii_alphanumeric() || b == b'_';
    }
    let from = i.saturating_sub(4);
    let tail = &text[from..i];
    (0..tail.len())
        .find_map(|k| std::str::from_utf8(&tail[k..]).ok())
        .and_then(|s| s.chars().next_back())
        .is_some_and(char::is_alphanumeric)
}

/// A run of digits with single phone/card separators, starting at `i`.
struct Run {
    end: usize,
    digits: u32,
    plus: bool,
    paren: bool,
    dots: u32,
    dashes: u32,
    spaces: u32,
}

fn run(text: &[u8], i: usize) -> Run {
    let n = text.len();
    let mut r = Run {
        end: i,
        digits: 0,
        plus: false,
        paren: false,
        dots: 0,
        dashes: 0,
        spaces: 0,
    };
    let mut j = i;
    if text[j] == b'+' {
        r.plus = true;
        j += 1;
    }
    let mut seps = 0; // consecutive separator characters
    let mut pending = (0u32, 0u32, 0u32, false); // separators seen since the last digit
    while j < n {
        let b = text[j];
        if b.is_ascii_digit() {
            r.digits += 1;
            r.spaces += pending.0;
            r.dashes += pending.1;
            r.dots += pending.2;
            r.paren |= pending.3;
            pending = (0, 0, 0, false);
            seps = 0;
            j += 1;
            r.end = j;
            if r.digits > 40 {
                break;
            }
            continue;
        }
        let sep = matches!(b, b' ' | b'-' | b'.' | b'(' | b')');
        if !sep || seps >= 3 {
            break;
        }
        // A separator counts only if a digit follows: `pending` holds it until then.
        match b {
            b' ' => pending.0 += 1,
            b'-' => pending.1 += 1,
            b'.' => pending.2 += 1,
            _ => pending.3 = true,
        }
        seps += 1;
        j += 1;
    }
    // A trailing ')' closes a group, like "(555)" at the end; keep digits only.
    r
}

/// Digits of `text[i..end]` in order.
fn digits_of(text: &[u8], i: usize, end: usize, buf: &mut [u8; 40]) -> usize {
    let mut k = 0;
    for &b in &text[i..end] {
        if b.is_ascii_digit() && k < buf.len() {
            buf[k] = b - b'0';
            k += 1;
        }
    }
    k
}

fn luhn(d: &[u8]) -> bool {
    let mut sum = 0u32;
    for (k, &x) in d.iter().rev().enumerate() {
        let mut v = x as u32;
        if k % 2 == 1 {
            v *= 2;
            if v > 9 {
                v -= 9;
            }
        }
        sum += v;
    }
    sum.is_multiple_of(10)
}

/// Numbers: IPv4, SSN, payment card, phone, in that order of precedence.
fn numeric(text: &[u8], i: usize, set: DetectorSet) -> Option<Found> {
    let r = run(text, i);
    if r.digits == 0 {
        return None;
    }
    // The run must not continue into a word ("123abc").
    if r.end < text.len() && is_word(text[r.end]) {
        return None;
    }
    let found = |kind| {
        Some(Found {
            start: i,
            end: r.end,
            kind,
        })
    };
    let span = &text[i..r.end];
    if set.has(Detector::IpAddress) && r.dots == 3 && r.digits <= 12 && ipv4(span) {
        return found(Detector::IpAddress);
    }
    if set.has(Detector::UsSsn) && ssn(span) {
        return found(Detector::UsSsn);
    }
    if let Some(f) = card_or_phone(text, i, &r, set) {
        return Some(f);
    }
    // A long run with spaces can hold several numbers ("4111... 030 1234567"):
    // try the groups from the left, longest first.
    if r.spaces > 0 && r.digits > 15 {
        let mut ends = Vec::new();
        for (k, &b) in text[i..r.end].iter().enumerate() {
            if b == b' ' && text[i + k - 1].is_ascii_digit() {
                ends.push(i + k);
            }
        }
        // Only unambiguous parts qualify: a Luhn-valid card, or a phone
        // written with its country code.
        for &e in ends.iter().rev() {
            let sub = run(&text[..e], i);
            match card_or_phone(&text[..e], i, &sub, set) {
                Some(f) if f.kind == Detector::PaymentCard || sub.plus => return Some(f),
                _ => {}
            }
        }
    }
    None
}

fn card_or_phone(text: &[u8], i: usize, r: &Run, set: DetectorSet) -> Option<Found> {
    let mut buf = [0u8; 40];
    let k = digits_of(text, i, r.end, &mut buf);
    let d = &buf[..k];
    let found = |kind| {
        Some(Found {
            start: i,
            end: r.end,
            kind,
        })
    };
    if set.has(Detector::PaymentCard)
        && !r.plus
        && !r.paren
        && r.dots == 0
        && (13..=19).contains(&k)
        && luhn(d)
    {
        return found(Detector::PaymentCard);
    }
    if set.has(Detector::Phone) {
        let seps = r.spaces + r.dashes + r.dots;
        let date_like = !r.plus && k == 8 && (r.dashes == 2 || r.dots == 2);
        // Without a country code only full national numbers (10+ digits)
        // count: shorter digit groups are too often order or ticket numbers.
        let ok = if r.plus {
            (7..=15).contains(&k)
        } else {
            (10..=15).contains(&k) && seps + u32::from(r.paren) <= 6
        };
        let dotted_quad = r.dots == 3 && !r.plus;
        if ok && !date_like && !dotted_quad {
            return found(Detector::Phone);
        }
    }
    None
}

fn ipv4(span: &[u8]) -> bool {
    let mut parts = 0;
    for part in span.split(|&b| b == b'.') {
        parts += 1;
        if part.is_empty() || part.len() > 3 || !part.iter().all(u8::is_ascii_digit) {
            return false;
        }
        if part.len() > 1 && part[0] == b'0' {
            return false; // leading zeros are ambiguous (octal)
        }
        let v: u32 = part.iter().fold(0, |a, &b| a * 10 + (b - b'0') as u32);
        if v > 255 {
            return false;
        }
    }
    parts == 4
}

fn ssn(span: &[u8]) -> bool {
    if span.len() != 11 || !(span[3] == span[6] && (span[3] == b'-' || span[3] == b' ')) {
        return false;
    }
    let num = |a: usize, b: usize| -> Option<u32> {
        span[a..b].iter().try_fold(0u32, |acc, &c| {
            c.is_ascii_digit().then(|| acc * 10 + (c - b'0') as u32)
        })
    };
    let (Some(area), Some(group), Some(serial)) = (num(0, 3), num(4, 6), num(7, 11)) else {
        return false;
    };
    area != 0 && area != 666 && area < 900 && group != 0 && serial != 0
}

/// Local-part bytes; UTF-8 is allowed (RFC 6531 addresses).
fn is_local(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b >= 0x80 || matches!(b, b'.' | b'_' | b'%' | b'+' | b'-')
}

/// Domain bytes; UTF-8 is allowed (internationalised domain names).
fn is_domain(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b >= 0x80 || b == b'-' || b == b'.'
}

fn email(text: &[u8], at: usize, floor: usize) -> Option<Found> {
    let mut s = at;
    while s > floor && is_local(text[s - 1]) {
        s -= 1;
    }
    // The local part may not start or end with a dot.
    while s < at && text[s] == b'.' {
        s += 1;
    }
    if s == at || text[at - 1] == b'.' {
        return None;
    }
    let n = text.len();
    let mut e = at + 1;
    while e < n && is_domain(text[e]) {
        // Two dots in a row end the domain.
        if text[e] == b'.' && (e == at + 1 || text[e - 1] == b'.') {
            break;
        }
        e += 1;
    }
    // Drop a trailing dot (end of sentence) or hyphen.
    while e > at + 1 && matches!(text[e - 1], b'.' | b'-') {
        e -= 1;
    }
    let dot = at + 1 + text[at + 1..e].iter().rposition(|&b| b == b'.')?;
    let tld = &text[dot + 1..e];
    if tld.len() < 2 || !tld.iter().all(u8::is_ascii_alphabetic) {
        return None;
    }
    Some(Found {
        start: s,
        end: e,
        kind: Detector::Email,
    })
}

fn iban(text: &[u8], i: usize) -> Option<Found> {
    let n = text.len();
    if i + 4 > n
        || !text[i + 1].is_ascii_uppercase()
        || !text[i + 2].is_ascii_digit()
        || !text[i + 3].is_ascii_digit()
    {
        return None;
    }
    // Collect alphanumerics, allowing single spaces between groups.
    let mut ends = Vec::new(); // candidate end positions (after a group)
    let mut j = i;
    let mut count = 0;
    while j < n && count < 34 {
        let b = text[j];
        if b.is_ascii_digit() || b.is_ascii_uppercase() {
            count += 1;
            j += 1;
            if j == n || !(text[j].is_ascii_digit() || text[j].is_ascii_uppercase()) {
                ends.push((j, count));
            }
        } else if b == b' ' && j + 1 < n && text[j + 1].is_ascii_alphanumeric() && j > i {
            j += 1;
        } else {
            break;
        }
    }
    for &(end, count) in ends.iter().rev() {
        if !(15..=34).contains(&count) || (end < n && is_word(text[end])) {
            continue;
        }
        if mod97(&text[i..end]) {
            return Some(Found {
                start: i,
                end,
                kind: Detector::Iban,
            });
        }
    }
    None
}

/// ISO 13616: move the first four characters to the end, letters to numbers, mod 97 == 1.
fn mod97(s: &[u8]) -> bool {
    let chars: Vec<u8> = s.iter().copied().filter(|b| *b != b' ').collect();
    if chars.len() < 5 || chars.iter().any(|b| b.is_ascii_lowercase()) {
        return false;
    }
    let mut rem = 0u32;
    for &b in chars[4..].iter().chain(&chars[..4]) {
        if b.is_ascii_digit() {
            rem = (rem * 10 + (b - b'0') as u32) % 97;
        } else {
            let v = (b - b'A' + 10) as u32;
            rem = (rem * 100 + v) % 97;
        }
    }
    rem == 1
}

fn is_v6(b: u8) -> bool {
    b.is_ascii_hexdigit() || b == b':' || b == b'.'
}

/// The longest textual IPv6 address (with an embedded IPv4 part).
const MAX_V6: usize = 45;

fn ipv6(text: &[u8], colon: usize, floor: usize) -> Option<Found> {
    // Bounded both ways, so a long run of hex and colons costs linear time.
    let mut s = colon;
    while s > floor && colon - s < MAX_V6 && is_v6(text[s - 1]) {
        s -= 1;
    }
    let mut e = colon;
    while e < text.len() && e - s <= MAX_V6 && is_v6(text[e]) {
        e += 1;
    }
    if e - s > MAX_V6 || (s > floor && is_v6(text[s - 1])) {
        return None;
    }
    while e > colon && text[e - 1] == b'.' {
        e -= 1;
    }
    if (s > 0 && is_word(text[s - 1])) || (e < text.len() && is_word(text[e])) {
        return None;
    }
    let span = &text[s..e];
    if span.iter().filter(|&&b| b == b':').count() < 2 {
        return None;
    }
    let ok = std::str::from_utf8(span)
        .ok()
        .is_some_and(|t| std::net::Ipv6Addr::from_str(t).is_ok());
    ok.then_some(Found {
        start: s,
        end: e,
        kind: Detector::IpAddress,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn find(text: &str) -> Vec<(String, Detector)> {
        let mut out = Vec::new();
        detect(text.as_bytes(), DetectorSet::all(), &mut out);
        out.iter()
            .map(|f| (text[f.start..f.end].to_owned(), f.kind))
            .collect()
    }

    #[test]
    fn finds_each_kind_in_prose() {
        use Detector::*;
        let text = "Call +1 (555) 234-5678 or mail jane.doe+crm@mail.example.org. \
                    Card 4111 1111 1111 1111, IBAN DE89 3704 0044 0532 0130 00 and \
                    SSN 123-45-6789 from 192.168.10.1 / 2001:db8::1.";
        assert_eq!(
            find(text),
            vec![
                ("+1 (555) 234-5678".into(), Phone),
                ("jane.doe+crm@mail.example.org".into(), Email),
                ("4111 1111 1111 1111".into(), PaymentCard),
                ("DE89 3704 0044 0532 0130 00".into(), Iban),
                ("123-45-6789".into(), UsSsn),
                ("192.168.10.1".into(), IpAddress),
                ("2001:db8::1".into(), IpAddress),
            ]
        );
    }

    #[test]
    fn fixture_style_numbers() {
        use Detector::*;
        assert_eq!(
            find("call +49 30 1234567 now"),
            vec![("+49 30 1234567".into(), Phone)]
        );
        assert_eq!(
            find("call +33 1 23 45 67 89."),
            vec![("+33 1 23 45 67 89".into(), Phone)]
        );
        assert_eq!(
            find("card 6011000990139424"),
            vec![("6011000990139424".into(), PaymentCard)]
        );
        assert_eq!(
            find("x 555-234-5678 y"),
            vec![("555-234-5678".into(), Phone)]
        );
    }

    #[test]
    fn validation_rejects_lookalikes() {
        // Luhn-invalid card, dates, times, versions, SSN area 000, bad IBAN checksum.
        for text in [
            "card 4111 1111 1111 1112",
            "on 2024-05-17 at 10:30",
            "version 1.2.3",
            "ticket 123456",
            "ssn 000-12-3456",
            "iban DE88 3704 0044 0532 0130 00",
            "see 999.1.1.1",
            "address@localhost",
            "order A1234B",
            "12:30:45",
        ] {
            assert_eq!(find(text), vec![], "{text}");
        }
    }

    #[test]
    fn more_number_spellings() {
        use Detector::*;
        assert_eq!(
            find("n\u{b0}4111111111111111"),
            vec![("4111111111111111".into(), PaymentCard)]
        );
        assert_eq!(
            find("x 4111 - 1111 - 1111 - 1111 y"),
            vec![("4111 - 1111 - 1111 - 1111".into(), PaymentCard)]
        );
        assert_eq!(
            find("x 555 - 234 - 5678 y"),
            vec![("555 - 234 - 5678".into(), Phone)]
        );
        assert_eq!(find("ssn 123 45 6789"), vec![("123 45 6789".into(), UsSsn)]);
        assert_eq!(
            find("caf\u{e9}4111111111111111"),
            vec![],
            "a letter before the digits makes it a word"
        );
        assert_eq!(
            find("mail jane@ex\u{e4}mple.de ok"),
            vec![("jane@ex\u{e4}mple.de".into(), Email)]
        );
    }

    #[test]
    fn long_colon_runs_are_linear() {
        // A quadratic scan of this would take minutes; linear takes milliseconds.
        let text = "1:".repeat(400_000);
        let mut out = Vec::new();
        detect(text.as_bytes(), DetectorSet::all(), &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn respects_the_enabled_set() {
        let mut out = Vec::new();
        let set = DetectorSet::EMPTY.with(Detector::Email);
        detect(b"a@b.example call +1 555 234 5678", set, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].kind, Detector::Email);
    }

    #[test]
    fn adjacent_card_and_phone_in_one_run() {
        use Detector::*;
        assert_eq!(
            find("4111111111111111 5552345678"),
            vec![
                ("4111111111111111".into(), PaymentCard),
                ("5552345678".into(), Phone)
            ]
        );
    }

    #[test]
    fn non_ascii_text_is_fine() {
        use Detector::*;
        assert_eq!(
            find("Grüße an zoë@exämple.de und jörg@example.de."),
            vec![
                ("zoë@exämple.de".to_owned(), Email),
                ("jörg@example.de".to_owned(), Email)
            ]
        );
    }
}
