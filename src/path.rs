//! Request path normalisation: the one place a path is made canonical.
//!
//! A request is matched against policy templates after exactly one
//! normalisation, and the normalised path is what the CRM receives, so the
//! CRM sees the path the policy matched. Normalising decodes percent-escapes
//! of unreserved characters, upper-cases the others and collapses duplicate
//! slashes and a trailing slash. Anything two servers could read differently
//! is refused instead: encoded `/` or `\`, double encoding (`%25`), raw `\`,
//! NUL and control bytes, dot segments (literal or encoded), `;` path
//! parameters, fragments and invalid UTF-8.
//!
//! Pure; the output of `normalise` normalises to itself.

use std::fmt;

/// Why a path was refused. Names the problem, never echoes the path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    NotAbsolute,
    BadPercent,
    EncodedSlash,
    DoubleEncoding,
    Backslash,
    ControlByte,
    DotSegment,
    Semicolon,
    Fragment,
    RawNonAscii,
    InvalidUtf8,
    TooLong,
    MethodOverride,
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PathError::NotAbsolute => "the path must start with `/`",
            PathError::BadPercent => "a `%` is not followed by two hex digits",
            PathError::EncodedSlash => "encoded `/` or `\\` in the path",
            PathError::DoubleEncoding => "double percent-encoding (`%25`) in the path",
            PathError::Backslash => "`\\` in the path",
            PathError::ControlByte => "NUL or control byte in the path",
            PathError::DotSegment => "`.` or `..` segment in the path",
            PathError::Semicolon => "`;` path parameters",
            PathError::Fragment => "a fragment (`#`) in the request target",
            PathError::RawNonAscii => "unencoded non-ASCII byte in the request target",
            PathError::InvalidUtf8 => "the path is not UTF-8 once decoded",
            PathError::TooLong => "the path is too long",
            PathError::MethodOverride => "a `_method` override in the query",
        })
    }
}

const MAX_PATH: usize = 8192;

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// pchar without `%` (handled separately) and without `;` (refused).
fn plain(b: u8) -> bool {
    unreserved(b)
        || matches!(
            b,
            b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b'=' | b':' | b'@'
        )
}

/// Normalises a request path (without the query).
pub fn normalise(path: &str) -> Result<String, PathError> {
    let p = path.as_bytes();
    if p.len() > MAX_PATH {
        return Err(PathError::TooLong);
    }
    if p.first() != Some(&b'/') {
        return Err(PathError::NotAbsolute);
    }
    let mut out = String::with_capacity(p.len());
    let mut seg = String::new(); // the current segment, normalised
    let mut decoded = Vec::new(); // the current segment, fully decoded (UTF-8 check)
    let mut i = 1;
    let flush =
        |seg: &mut String, decoded: &mut Vec<u8>, out: &mut String| -> Result<(), PathError> {
            if seg.is_empty() {
                return Ok(()); // duplicate or trailing slash
            }
            if seg == "." || seg == ".." {
                return Err(PathError::DotSegment);
            }
            if std::str::from_utf8(decoded).is_err() {
                return Err(PathError::InvalidUtf8);
            }
            out.push('/');
            out.push_str(seg);
            seg.clear();
            decoded.clear();
            Ok(())
        };
    while i < p.len() {
        let b = p[i];
        match b {
            b'/' => flush(&mut seg, &mut decoded, &mut out)?,
            b'%' => {
                let (Some(h), Some(l)) = (
                    p.get(i + 1).and_then(|&c| hex(c)),
                    p.get(i + 2).and_then(|&c| hex(c)),
                ) else {
                    return Err(PathError::BadPercent);
                };
                let v = h << 4 | l;
                match v {
                    b'/' | b'\\' => return Err(PathError::EncodedSlash),
                    b'%' => return Err(PathError::DoubleEncoding),
                    b';' => return Err(PathError::Semicolon),
                    0..=0x1F | 0x7F => return Err(PathError::ControlByte),
                    _ if unreserved(v) => seg.push(v as char),
                    _ => {
                        const HEX: &[u8; 16] = b"0123456789ABCDEF";
                        seg.push('%');
                        seg.push(HEX[(v >> 4) as usize] as char);
                        seg.push(HEX[(v & 15) as usize] as char);
                    }
                }
                decoded.push(v);
                i += 3;
                continue;
            }
            b'\\' => return Err(PathError::Backslash),
            b';' => return Err(PathError::Semicolon),
            b'#' => return Err(PathError::Fragment),
            0..=0x1F | 0x7F => return Err(PathError::ControlByte),
            0x80..=0xFF => return Err(PathError::RawNonAscii),
            _ if plain(b) => {
                seg.push(b as char);
                decoded.push(b);
            }
            // Space, quotes, `<>`, `^`, backtick, `{|}`, `[]`, `?` in a path.
            _ => return Err(PathError::ControlByte),
        }
        i += 1;
    }
    flush(&mut seg, &mut decoded, &mut out)?;
    if out.is_empty() {
        out.push('/');
    }
    Ok(out)
}

/// Checks a query string; it is forwarded as received.
pub fn check_query(q: &str) -> Result<(), PathError> {
    let b = q.as_bytes();
    if b.len() > MAX_PATH {
        return Err(PathError::TooLong);
    }
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                if b.get(i + 1).and_then(|&c| hex(c)).is_none()
                    || b.get(i + 2).and_then(|&c| hex(c)).is_none()
                {
                    return Err(PathError::BadPercent);
                }
                i += 3;
                continue;
            }
            b'#' => return Err(PathError::Fragment),
            0..=0x20 | 0x7F => return Err(PathError::ControlByte),
            0x80..=0xFF => return Err(PathError::RawNonAscii),
            _ => {}
        }
        i += 1;
    }
    // `_method=DELETE` in the query makes some frameworks change the method;
    // the name may arrive percent-encoded, and `;` separates pairs for some.
    for pair in q.split(['&', ';']) {
        let name = pair.split('=').next().unwrap_or("");
        let mut decoded = Vec::with_capacity(name.len());
        let nb = name.as_bytes();
        let mut i = 0;
        while i < nb.len() {
            match (
                nb[i],
                nb.get(i + 1).and_then(|&c| hex(c)),
                nb.get(i + 2).and_then(|&c| hex(c)),
            ) {
                (b'%', Some(h), Some(l)) => {
                    decoded.push(h << 4 | l);
                    i += 3;
                }
                (b'+', _, _) => {
                    decoded.push(b' ');
                    i += 1;
                }
                (c, _, _) => {
                    decoded.push(c);
                    i += 1;
                }
            }
        }
        if decoded.trim_ascii().eq_ignore_ascii_case(b"_method") {
            return Err(PathError::MethodOverride);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_once() {
        for (input, want) in [
            ("/", "/"),
            ("//", "/"),
            ("/crm/v3/objects/contacts/1", "/crm/v3/objects/contacts/1"),
            ("/crm//v3///objects/", "/crm/v3/objects"),
            ("/%63rm/%7Euser/a%2db", "/crm/~user/a-b"),
            ("/a%20b/%c3%a9", "/a%20b/%C3%A9"),
            ("/a:b@c/x+y,z=1", "/a:b@c/x+y,z=1"),
            ("/.well-known/x", "/.well-known/x"),
            ("/a/...", "/a/..."),
        ] {
            let got = normalise(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(got, want, "{input}");
            assert_eq!(
                normalise(&got).as_deref(),
                Ok(want),
                "idempotent for {input}"
            );
        }
    }

    #[test]
    fn refuses_ambiguous_paths() {
        use PathError::*;
        for (input, err) in [
            ("a/b", NotAbsolute),
            ("", NotAbsolute),
            ("/a%2fb", EncodedSlash),
            ("/a%2Fb", EncodedSlash),
            ("/a%5cb", EncodedSlash),
            ("/a%252fb", DoubleEncoding),
            ("/a\\b", Backslash),
            ("/a%00b", ControlByte),
            ("/a%0ab", ControlByte),
            ("/a/../b", DotSegment),
            ("/a/./b", DotSegment),
            ("/a/%2e%2e/b", DotSegment),
            ("/a/.%2E", DotSegment),
            ("/a/..", DotSegment),
            ("/a;jsessionid=1/b", Semicolon),
            ("/a%3bb", Semicolon),
            ("/a#frag", Fragment),
            ("/a%zz", BadPercent),
            ("/a%4", BadPercent),
            ("/a%", BadPercent),
            ("/a%c3%28", InvalidUtf8),
            ("/a%ff", InvalidUtf8),
            ("/a b", ControlByte),
            ("/\u{e9}", RawNonAscii),
        ] {
            assert_eq!(normalise(input), Err(err), "{input:?}");
        }
        assert_eq!(normalise(&format!("/{}", "a".repeat(9000))), Err(TooLong));
    }

    #[test]
    fn queries() {
        assert_eq!(check_query("limit=10&after=5"), Ok(()));
        assert_eq!(check_query("q=a%20b"), Ok(()));
        assert_eq!(check_query("q=%zz"), Err(PathError::BadPercent));
        assert_eq!(
            check_query("_method=DELETE"),
            Err(PathError::MethodOverride)
        );
        assert_eq!(
            check_query("a=1&_METHOD=put"),
            Err(PathError::MethodOverride)
        );
        assert_eq!(check_query("a=\u{e9}"), Err(PathError::RawNonAscii));
    }
}
