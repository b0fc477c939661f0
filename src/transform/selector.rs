//! Selectors: the documented subset of RFC 9535 JSONPath that policies use.
//!
//! Grammar (whitespace is not allowed inside a selector):
//!
//! ```text
//! selector  = "$" *segment
//! segment   = "." name / ".*" / "[" inner "]" / ".." name / "..*" / ".." "[" inner "]"
//! inner     = "*" / quoted            ; 'name' or "name", with JSON-style escapes
//! name      = (ALPHA / "_" / non-ASCII) *(ALPHA / DIGIT / "_" / non-ASCII)
//! ```
//!
//! `.name` selects a member of an object, `[*]` / `.*` every member or array
//! element, `..name` every member called `name` at any depth below. Member
//! names match ASCII-case-insensitively (see `automaton`): the gateway treats
//! `EMAIL` like `email` because some clients bind keys that way.
//!
//! This module only parses; it never touches a document.

use std::fmt;

/// One step of a selector.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Step {
    /// `.name` or `['name']`: the member `name` of an object (lowercased).
    Child(Box<[u8]>),
    /// `.*` or `[*]`: every member of an object or element of an array.
    Any,
    /// `..name`: every member `name` of this node or any descendant.
    Descendant(Box<[u8]>),
    /// `..*` / `..[*]`: every descendant.
    DescendantAny,
}

/// A parsed selector: `$` followed by steps.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Selector {
    steps: Vec<Step>,
    text: String,
}

/// Why a selector did not parse. `at` is a character offset into the text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} at character {at}")]
pub struct SelectorError {
    pub at: usize,
    pub message: String,
}

impl Selector {
    /// The root itself (`$`).
    pub fn root() -> Selector {
        Selector {
            steps: Vec::new(),
            text: "$".to_owned(),
        }
    }

    pub fn steps(&self) -> &[Step] {
        &self.steps
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Parses a selector such as `$.results[*]` or `$.properties['e-mail']`.
    pub fn parse(text: &str) -> Result<Selector, SelectorError> {
        let mut p = Parser {
            s: text.as_bytes(),
            i: 0,
        };
        let steps = p.selector()?;
        Ok(Selector {
            steps,
            text: text.to_owned(),
        })
    }

    /// The selector with `other`'s steps appended (`$.a` + `$.b` = `$.a.b`).
    pub fn join(&self, other: &Selector) -> Selector {
        let mut steps = self.steps.clone();
        steps.extend(other.steps.iter().cloned());
        Selector {
            steps,
            text: format!("{}{}", self.text, &other.text[1..]),
        }
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn err<T>(&self, message: impl Into<String>) -> Result<T, SelectorError> {
        let at = String::from_utf8_lossy(&self.s[..self.i.min(self.s.len())])
            .chars()
            .count();
        Err(SelectorError {
            at,
            message: message.into(),
        })
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn selector(&mut self) -> Result<Vec<Step>, SelectorError> {
        if self.peek() != Some(b'$') {
            return self.err("a selector starts with `$`");
        }
        self.i += 1;
        let mut steps = Vec::new();
        while let Some(b) = self.peek() {
            match b {
                b'.' => {
                    self.i += 1;
                    if self.peek() == Some(b'.') {
                        self.i += 1;
                        match self.peek() {
                            Some(b'*') => {
                                self.i += 1;
                                steps.push(Step::DescendantAny);
                            }
                            Some(b'[') => match self.bracket()? {
                                None => steps.push(Step::DescendantAny),
                                Some(n) => steps.push(Step::Descendant(n)),
                            },
                            _ => steps.push(Step::Descendant(self.name()?)),
                        }
                    } else if self.peek() == Some(b'*') {
                        self.i += 1;
                        steps.push(Step::Any);
                    } else {
                        steps.push(Step::Child(self.name()?));
                    }
                }
                b'[' => match self.bracket()? {
                    None => steps.push(Step::Any),
                    Some(n) => steps.push(Step::Child(n)),
                },
                _ => return self.err("expected `.`, `..` or `[` after a step"),
            }
        }
        Ok(steps)
    }

    /// `.name` shorthand: RFC 9535 member-name-shorthand.
    fn name(&mut self) -> Result<Box<[u8]>, SelectorError> {
        let start = self.i;
        while let Some(b) = self.peek() {
            let first = self.i == start;
            let ok =
                b.is_ascii_alphabetic() || b == b'_' || b >= 0x80 || (!first && b.is_ascii_digit());
            if !ok {
                break;
            }
            self.i += 1;
        }
        if self.i == start {
            return self.err(
                "expected a member name (letters, digits, `_`); quote other names: ['my-name']",
            );
        }
        Ok(self.s[start..self.i]
            .to_ascii_lowercase()
            .into_boxed_slice())
    }

    /// `[*]` (returns None) or `['name']` / `["name"]`.
    fn bracket(&mut self) -> Result<Option<Box<[u8]>>, SelectorError> {
        self.i += 1; // '['
        let out = match self.peek() {
            Some(b'*') => {
                self.i += 1;
                None
            }
            Some(q @ (b'\'' | b'"')) => {
                self.i += 1;
                Some(self.quoted(q)?)
            }
            Some(b) if b.is_ascii_digit() || b == b'-' => {
                return self
                    .err("array indexes are not supported; use [*] to select every element");
            }
            _ => return self.err("expected `*` or a quoted name inside `[...]`"),
        };
        if self.peek() != Some(b']') {
            return self.err("expected `]`");
        }
        self.i += 1;
        Ok(out)
    }

    fn quoted(&mut self, quote: u8) -> Result<Box<[u8]>, SelectorError> {
        let mut out = Vec::new();
        loop {
            let Some(b) = self.peek() else {
                return self.err("unterminated quoted name");
            };
            self.i += 1;
            if b == quote {
                break;
            }
            if b != b'\\' {
                out.push(b);
                continue;
            }
            let Some(e) = self.peek() else {
                return self.err("unterminated escape");
            };
            self.i += 1;
            match e {
                b'\'' | b'"' | b'\\' | b'/' => out.push(e),
                b'b' => out.push(8),
                b'f' => out.push(12),
                b'n' => out.push(b'\n'),
                b'r' => out.push(b'\r'),
                b't' => out.push(b'\t'),
                b'u' => {
                    let hex = self.s.get(self.i..self.i + 4).unwrap_or_default();
                    let code = std::str::from_utf8(hex)
                        .ok()
                        .filter(|h| h.len() == 4)
                        .and_then(|h| u32::from_str_radix(h, 16).ok())
                        .and_then(char::from_u32);
                    let Some(c) = code else {
                        return self.err("expected four hex digits of a non-surrogate after \\u");
                    };
                    self.i += 4;
                    let mut tmp = [0u8; 4];
                    out.extend_from_slice(c.encode_utf8(&mut tmp).as_bytes());
                }
                _ => return self.err("unknown escape in quoted name"),
            }
        }
        if std::str::from_utf8(&out).is_err() {
            return self.err("quoted name is not valid UTF-8");
        }
        Ok(out.to_ascii_lowercase().into_boxed_slice())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn steps(s: &str) -> Vec<Step> {
        Selector::parse(s)
            .map(|s| s.steps)
            .unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn child(n: &str) -> Step {
        Step::Child(n.as_bytes().into())
    }

    #[test]
    fn parses_the_documented_subset() {
        assert_eq!(steps("$"), vec![]);
        assert_eq!(steps("$.results[*]"), vec![child("results"), Step::Any]);
        assert_eq!(
            steps("$.properties['e-mail']"),
            vec![child("properties"), child("e-mail")]
        );
        assert_eq!(steps("$[\"a\\\"b\"]"), vec![child("a\"b")]);
        assert_eq!(
            steps("$..email"),
            vec![Step::Descendant("email".as_bytes().into())]
        );
        assert_eq!(steps("$..*"), vec![Step::DescendantAny]);
        assert_eq!(steps("$..[*]"), vec![Step::DescendantAny]);
        assert_eq!(steps("$.*"), vec![Step::Any]);
        assert_eq!(
            steps("$.Email"),
            vec![child("email")],
            "names are lowercased"
        );
        assert_eq!(steps("$['\\u0065mail']"), vec![child("email")]);
    }

    #[test]
    fn rejects_what_it_does_not_support() {
        for bad in [
            "",
            "results",
            "$.",
            "$.[0]",
            "$[0]",
            "$[",
            "$['a'",
            "$['a]",
            "$.a-b",
            "$ .a",
            "$.1a",
            "$[?@.a]",
            "$['\\ud800']",
            "$..",
        ] {
            assert!(Selector::parse(bad).is_err(), "{bad:?} should not parse");
        }
    }

    #[test]
    fn join_appends_steps() {
        let a = Selector::parse("$.results[*]").unwrap_or_else(|e| panic!("{e}"));
        let b = Selector::parse("$.properties.email").unwrap_or_else(|e| panic!("{e}"));
        let j = a.join(&b);
        assert_eq!(j.as_str(), "$.results[*].properties.email");
        assert_eq!(j.steps().len(), 4);
    }
}
