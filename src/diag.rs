//! Diagnostics for configuration and policy files.
//!
//! Every problem names its file, line and column, says what is wrong and,
//! where we can tell, what to write instead. Loaders collect all of them and
//! report them at once instead of stopping at the first. Diagnostics quote
//! names and selectors from the files, never secret values.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde_saphyr::{Location, Spanned};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Error,
    Warning,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub severity: Severity,
    pub file: PathBuf,
    pub line: u64,
    pub column: u64,
    pub message: String,
    pub hint: Option<String>,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sev = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(f, "{}", self.file.display())?;
        if self.line > 0 {
            write!(f, ":{}:{}", self.line, self.column)?;
        }
        write!(f, ": {sev}: {}", self.message)?;
        if let Some(h) = &self.hint {
            write!(f, "\n    hint: {h}")?;
        }
        Ok(())
    }
}

/// All diagnostics of one load.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    pub items: Vec<Diagnostic>,
}

impl Report {
    pub fn has_errors(&self) -> bool {
        self.items.iter().any(|d| d.severity == Severity::Error)
    }

    pub fn errors(&self) -> usize {
        self.items
            .iter()
            .filter(|d| d.severity == Severity::Error)
            .count()
    }

    pub fn warnings(&self) -> impl Iterator<Item = &Diagnostic> {
        self.items
            .iter()
            .filter(|d| d.severity == Severity::Warning)
    }

    pub fn push(&mut self, d: Diagnostic) {
        self.items.push(d);
    }

    pub fn extend(&mut self, other: Report) {
        self.items.extend(other.items);
    }

    /// An error at `at` in `file`.
    pub fn error(
        &mut self,
        file: &Path,
        at: Location,
        message: impl Into<String>,
        hint: Option<String>,
    ) {
        self.add(Severity::Error, file, at, message.into(), hint);
    }

    pub fn warning(
        &mut self,
        file: &Path,
        at: Location,
        message: impl Into<String>,
        hint: Option<String>,
    ) {
        self.add(Severity::Warning, file, at, message.into(), hint);
    }

    fn add(
        &mut self,
        severity: Severity,
        file: &Path,
        at: Location,
        message: String,
        hint: Option<String>,
    ) {
        self.items.push(Diagnostic {
            severity,
            file: file.to_path_buf(),
            line: at.line(),
            column: at.column(),
            message,
            hint,
        });
    }

    /// Orders diagnostics by file and position, for stable output.
    pub fn sort(&mut self) {
        self.items.sort_by(|a, b| {
            (&a.file, a.line, a.column, a.severity).cmp(&(&b.file, b.line, b.column, b.severity))
        });
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.items.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Report {}

/// Where a spanned value was written.
pub fn at<T>(s: &Spanned<T>) -> Location {
    s.referenced
}

/// Parses a YAML document into `T`, turning a syntax or shape error into a
/// diagnostic with its position.
pub fn parse_yaml<T: DeserializeOwned>(file: &Path, text: &str) -> Result<T, Diagnostic> {
    // The default options refuse duplicate keys and bound aliases and depth.
    serde_saphyr::from_str::<T>(text).map_err(|e| {
        let loc = e.location();
        let message = e.without_snippet().to_string();
        // The library's message may repeat the position; keep the first line.
        let message = message
            .lines()
            .next()
            .unwrap_or("invalid YAML")
            .trim()
            .to_owned();
        Diagnostic {
            severity: Severity::Error,
            file: file.to_path_buf(),
            line: loc.map_or(0, |l| l.line()),
            column: loc.map_or(0, |l| l.column()),
            hint: hint_for(&message),
            message,
        }
    })
}

fn hint_for(message: &str) -> Option<String> {
    if message.contains("unknown field") {
        Some("check the spelling against the reference in README.md; unknown keys are refused so a typo cannot switch a protection off".into())
    } else if message.contains("missing field") {
        Some("this key is required here".into())
    } else if message.contains("flow mapping") || message.contains("flow sequence") {
        Some("inside `{ ... }` or `[ ... ]`, quote values that contain `{`, `}`, `[`, `]` or `,`, e.g. path: \"/contacts/{id}\"".into())
    } else if message.contains("duplicate") {
        Some("a key may appear only once in a mapping".into())
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct T {
        name: Spanned<String>,
        n: u32,
    }

    #[test]
    fn yaml_errors_have_positions_and_hints() {
        let p = Path::new("x.yaml");
        let t: T = parse_yaml(p, "name: a\nn: 3\n").unwrap();
        assert_eq!(at(&t.name).line(), 1);
        let e = parse_yaml::<T>(p, "name: a\nn: 3\nnmae: b\n").unwrap_err();
        assert_eq!(e.line, 3, "{e}");
        assert!(e.message.contains("unknown field"), "{e}");
        assert!(e.hint.is_some());
        let e = parse_yaml::<T>(p, "name: a\nn: x\n").unwrap_err();
        assert_eq!(e.line, 2, "{e}");
        let e = parse_yaml::<T>(p, "name: a\nname: b\nn: 1\n").unwrap_err();
        assert_eq!(e.line, 2, "{e}");
        let shown = e.to_string();
        assert!(shown.starts_with("x.yaml:2:"), "{shown}");
    }
}
