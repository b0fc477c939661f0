//! Bulk consent files: CSV (with a header) or a JSON array, as consent
//! platforms export them. Parsing collects every problem with its line or
//! position; nothing is stored unless the whole file is good.
//!
//! CSV columns: `subject,purpose,status,at,source[,expires_at][,proof]`.
//! JSON: `[{"subject": ..., "purpose": ..., "status": ..., "at": ...,
//! "source": ..., "expires_at": ..., "proof": ...}, ...]`, or the same
//! objects as JSON lines (what the export writes).
//! Times are RFC 3339 in UTC (`2026-11-27T08:00:00Z`).

use serde::Deserialize;
use serde_json::value::RawValue;

use super::model::{ConsentEvent, Status};
use crate::clock::{Millis, parse_rfc3339};

/// The columns of a CSV file, in the order exports write them.
pub const COLUMNS: [&str; 7] = [
    "subject",
    "purpose",
    "status",
    "at",
    "source",
    "expires_at",
    "proof",
];

/// At most this many records per import.
pub const MAX_RECORDS: usize = 1_000_000;
/// Problems reported before giving up on listing them.
pub const MAX_PROBLEMS: usize = 20;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .problems.join("; "))]
pub struct ImportError {
    pub problems: Vec<String>,
}

/// One record of a file or change. The subject is `String` in CSV (every
/// cell is text: the csv crate would read `007` as the number 7) and a JSON
/// value in JSON (a string, or an integer for CRMs with numeric ids).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Row<S> {
    subject: S,
    purpose: String,
    status: String,
    #[serde(default)]
    at: Option<String>,
    #[serde(default)]
    source: Option<String>,
    #[serde(default)]
    expires_at: Option<String>,
    #[serde(default)]
    proof: Option<String>,
}

/// A subject cell as written in a file.
trait SubjectCell {
    fn into_id(self) -> Result<String, String>;
}

impl SubjectCell for String {
    fn into_id(self) -> Result<String, String> {
        Ok(self)
    }
}

impl SubjectCell for serde_json::Value {
    fn into_id(self) -> Result<String, String> {
        match self {
            serde_json::Value::String(s) => Ok(s),
            serde_json::Value::Number(n) if n.is_u64() => Ok(n.to_string()),
            _ => Err("`subject` must be a string (or a non-negative integer)".into()),
        }
    }
}

/// What a single change through the admin API may leave out.
#[derive(Debug, Clone, Copy)]
pub struct Defaults<'a> {
    pub at: Millis,
    pub source: &'a str,
}

impl<S: SubjectCell> Row<S> {
    fn event(self, defaults: Option<Defaults<'_>>) -> Result<ConsentEvent, String> {
        let subject = self.subject.into_id()?;
        let status = Status::parse(&self.status).ok_or_else(|| {
            format!(
                "status `{}` is not granted, withdrawn or objected",
                self.status
            )
        })?;
        let at = match (
            self.at.as_deref().map(str::trim).filter(|s| !s.is_empty()),
            defaults,
        ) {
            (Some(t), _) => {
                parse_rfc3339(t).ok_or_else(|| format!("`at` `{t}` is not an RFC 3339 time"))?
            }
            (None, Some(d)) => d.at,
            (None, None) => {
                return Err("`at` is missing (when the subject made the statement)".into());
            }
        };
        let source = match (self.source.filter(|s| !s.trim().is_empty()), defaults) {
            (Some(s), _) => s,
            (None, Some(d)) => d.source.to_owned(),
            (None, None) => {
                return Err("`source` is missing (where the statement was collected)".into());
            }
        };
        let expires = match self
            .expires_at
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            None => None,
            Some(x) => Some(
                parse_rfc3339(x)
                    .ok_or_else(|| format!("`expires_at` `{x}` is not an RFC 3339 time"))?,
            ),
        };
        Ok(ConsentEvent {
            subject,
            purpose: self.purpose.trim().to_owned(),
            status,
            at,
            source,
            expires,
            proof: self.proof.filter(|p| !p.is_empty()),
        })
    }
}

/// Parses an admin API change: one JSON object or an array of them, where
/// `at` and `source` may be left out.
pub fn parse_changes(
    data: &[u8],
    defaults: Defaults<'_>,
) -> Result<Vec<ConsentEvent>, ImportError> {
    let one = |m: String| ImportError { problems: vec![m] };
    let text = utf8(data)?;
    let rows: Vec<&RawValue> = match text.trim_start().as_bytes().first() {
        Some(b'[') => serde_json::from_str(text),
        Some(b'{') => serde_json::from_str(text).map(|r| vec![r]),
        _ => {
            return Err(one(
                "send a consent change object or an array of them".into()
            ));
        }
    }
    .map_err(|e| one(format!("the body is not JSON: {e}")))?;
    rows_to_events(&rows, Some(defaults))
}

fn utf8(data: &[u8]) -> Result<&str, ImportError> {
    std::str::from_utf8(data).map_err(|_| ImportError {
        problems: vec!["the body is not UTF-8".into()],
    })
}

/// Records are kept as raw text until each is read into a `Row`, so a large
/// import costs about its own size in memory, not a tree of values.
fn rows_to_events(
    rows: &[&RawValue],
    defaults: Option<Defaults<'_>>,
) -> Result<Vec<ConsentEvent>, ImportError> {
    if rows.len() > MAX_RECORDS {
        return Err(ImportError {
            problems: vec![format!("more than {MAX_RECORDS} records; split the file")],
        });
    }
    let mut problems = Vec::new();
    let mut events = Vec::with_capacity(rows.len());
    for (i, raw) in rows.iter().enumerate() {
        match serde_json::from_str::<Row<serde_json::Value>>(raw.get())
            .map_err(|e| e.to_string())
            .and_then(|r| r.event(defaults))
        {
            Ok(e) => events.push(e),
            Err(m) => problems.push(format!("record {}: {m}", i + 1)),
        }
        if problems.len() >= MAX_PROBLEMS {
            problems.push("(further problems not listed)".into());
            break;
        }
    }
    finish(events, problems)
}

/// Which format a body is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Csv,
    Json,
}

impl Format {
    /// How a problem names the record at `index`: its line (CSV, after the
    /// header) or its position (JSON).
    pub fn label(self, index: usize) -> String {
        match self {
            Format::Csv => format!("line {}", index + 2),
            Format::Json => format!("record {}", index + 1),
        }
    }

    /// From a content type or a file name.
    pub fn guess(hint: &str) -> Option<Format> {
        let h = hint.to_ascii_lowercase();
        if h.contains("csv") {
            Some(Format::Csv)
        } else if h.contains("json") {
            Some(Format::Json)
        } else {
            None
        }
    }
}

pub fn parse(data: &[u8], format: Format) -> Result<Vec<ConsentEvent>, ImportError> {
    match format {
        Format::Csv => parse_csv(data),
        Format::Json => parse_json(data),
    }
}

fn finish(
    events: Vec<ConsentEvent>,
    problems: Vec<String>,
) -> Result<Vec<ConsentEvent>, ImportError> {
    if !problems.is_empty() {
        return Err(ImportError { problems });
    }
    if events.is_empty() {
        return Err(ImportError {
            problems: vec!["the file holds no consent records".into()],
        });
    }
    Ok(events)
}

fn parse_csv(data: &[u8]) -> Result<Vec<ConsentEvent>, ImportError> {
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_reader(data);
    let headers = reader.headers().map_err(|e| ImportError {
        problems: vec![format!("line 1: {e}")],
    })?;
    let problems: Vec<String> = headers
        .iter()
        .filter(|h| !COLUMNS.contains(h))
        .map(|h| {
            format!(
                "line 1: unknown column `{h}` (columns: {})",
                COLUMNS.join(", ")
            )
        })
        .collect();
    if !problems.is_empty() {
        // Every row would repeat the header's problem; report it once.
        return Err(ImportError { problems });
    }
    let mut problems = Vec::new();
    let mut events = Vec::new();
    for (i, rec) in reader.deserialize::<Row<String>>().enumerate() {
        let line = i + 2;
        if events.len() >= MAX_RECORDS {
            problems.push(format!("more than {MAX_RECORDS} records; split the file"));
            break;
        }
        match rec.map_err(|e| e.to_string()).and_then(|r| r.event(None)) {
            Ok(e) => events.push(e),
            Err(m) => problems.push(format!("line {line}: {m}")),
        }
        if problems.len() >= MAX_PROBLEMS {
            problems.push("(further problems not listed)".into());
            break;
        }
    }
    finish(events, problems)
}

/// A JSON array, or JSON lines (one object per line, as `export` writes).
fn parse_json(data: &[u8]) -> Result<Vec<ConsentEvent>, ImportError> {
    let text = utf8(data)?;
    if text.trim_start().starts_with('[') {
        let rows: Vec<&RawValue> = serde_json::from_str(text).map_err(|e| ImportError {
            problems: vec![format!("not a JSON array of consent records: {e}")],
        })?;
        return rows_to_events(&rows, None);
    }
    let mut rows = Vec::new();
    for (i, line) in text.split('\n').enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let v: &RawValue = serde_json::from_str(line).map_err(|e| ImportError {
            problems: vec![format!("line {}: not a JSON object: {e}", i + 1)],
        })?;
        rows.push(v);
    }
    rows_to_events(&rows, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_and_json() {
        let csv = "subject,purpose,status,at,source,expires_at,proof\n\
                   7,marketing,granted,2026-01-01T00:00:00Z,web-form,2027-01-01T00:00:00Z,form-123\n\
                   8, marketing , opt-out ,2026-01-02T00:00:00Z,crm-import,,\n";
        let ev = parse(csv.as_bytes(), Format::Csv).unwrap();
        assert_eq!(ev.len(), 2);
        assert_eq!(ev[0].proof.as_deref(), Some("form-123"));
        assert_eq!(ev[1].status, Status::Withdrawn);
        assert_eq!(ev[1].purpose, "marketing");
        let csv =
            "subject,purpose,status,at,source\n007,marketing,granted,2026-01-01T00:00:00Z,x\n";
        assert_eq!(
            parse(csv.as_bytes(), Format::Csv).unwrap()[0].subject,
            "007"
        );
        let json = r#"[{"subject":"7","purpose":"marketing","status":"granted","at":"2026-01-01T00:00:00Z","source":"x"}]"#;
        assert_eq!(parse(json.as_bytes(), Format::Json).unwrap().len(), 1);
        let lines = "{\"subject\":\"7\",\"purpose\":\"marketing\",\"status\":\"granted\",\"at\":\"2026-01-01T00:00:00Z\",\"source\":\"x\"}\n\n{\"subject\":8,\"purpose\":\"marketing\",\"status\":\"withdrawn\",\"at\":\"2026-01-01T00:00:00Z\",\"source\":\"x\"}\n";
        let ev = parse(lines.as_bytes(), Format::Json).unwrap();
        assert_eq!((ev.len(), ev[1].subject.as_str()), (2, "8"));
    }

    #[test]
    fn every_problem_is_reported_with_its_line() {
        let csv = "subject,purpose,status,at,source,colour\n7,marketing,granted,2026-01-01T00:00:00Z,x,red\n";
        let all = parse(csv.as_bytes(), Format::Csv).unwrap_err().to_string();
        assert!(all.contains("line 1: unknown column `colour`"), "{all}");
        let csv = "subject,purpose,status,at,source\n\
                   7,marketing,maybe,2026-01-01T00:00:00Z,x\n\
                   8,marketing,granted,yesterday,x\n\
                   9,marketing,granted\n";
        let all = parse(csv.as_bytes(), Format::Csv).unwrap_err().to_string();
        assert!(all.contains("line 2: status `maybe`"), "{all}");
        assert!(all.contains("line 3: `at` `yesterday`"), "{all}");
        assert!(all.contains("line 4: "), "{all}");
        assert!(parse(b"{}", Format::Json).is_err());
        assert!(parse(b"[]", Format::Json).is_err());
        assert!(
            parse(br#"[{"subject":"7"}]"#, Format::Json)
                .unwrap_err()
                .to_string()
                .contains("record 1")
        );
    }
}
