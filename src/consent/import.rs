//! Bulk consent files: CSV (with a header) or a JSON array, as consent
//! platforms export them. Parsing collects every problem with its line or
//! position; nothing is stored unless the whole file is good.
//!
//! CSV columns: `subject,purpose,status,at,source[,expires_at][,proof]`.
//! JSON: `[{"subject": ..., "purpose": ..., "status": ..., "at": ...,
//! "source": ..., "expires_at": ..., "proof": ...}, ...]`.
//! Times are RFC 3339 in UTC (`2026-11-27T08:00:00Z`).

use serde::Deserialize;

use super::model::{ConsentEvent, Status};
use crate::clock::parse_rfc3339;

/// At most this many records per import.
pub const MAX_RECORDS: usize = 1_000_000;
/// Problems reported before giving up on listing them.
const MAX_PROBLEMS: usize = 20;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .problems.join("; "))]
pub struct ImportError {
    pub problems: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Row {
    subject: String,
    purpose: String,
    status: String,
    at: String,
    source: String,
    #[serde(default)]
    expires_at: Option<String>,
    #[serde(default)]
    proof: Option<String>,
}

impl Row {
    fn event(self) -> Result<ConsentEvent, String> {
        let status = Status::parse(&self.status)
            .ok_or_else(|| format!("status `{}` is not granted, withdrawn or objected", self.status))?;
        let at = parse_rfc3339(&self.at).ok_or_else(|| format!("`at` `{}` is not an RFC 3339 time", self.at))?;
        let expires = match self.expires_at.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
            None => None,
            Some(x) => Some(parse_rfc3339(x).ok_or_else(|| format!("`expires_at` `{x}` is not an RFC 3339 time"))?),
        };
        Ok(ConsentEvent {
            subject: self.subject,
            purpose: self.purpose.trim().to_owned(),
            status,
            at,
            source: self.source,
            expires,
            proof: self.proof.filter(|p| !p.is_empty()),
        })
    }
}

/// Which format a body is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Csv,
    Json,
}

impl Format {
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

fn finish(events: Vec<ConsentEvent>, problems: Vec<String>) -> Result<Vec<ConsentEvent>, ImportError> {
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
    let mut reader = csv::ReaderBuilder::new().trim(csv::Trim::All).from_reader(data);
    let headers = reader.headers().map_err(|e| ImportError {
        problems: vec![format!("line 1: {e}")],
    })?;
    let known = ["subject", "purpose", "status", "at", "source", "expires_at", "proof"];
    let problems: Vec<String> = headers
        .iter()
        .filter(|h| !known.contains(h))
        .map(|h| format!("line 1: unknown column `{h}` (columns: {})", known.join(", ")))
        .collect();
    if !problems.is_empty() {
        // Every row would repeat the header's problem; report it once.
        return Err(ImportError { problems });
    }
    let mut problems = Vec::new();
    let mut events = Vec::new();
    for (i, rec) in reader.deserialize::<Row>().enumerate() {
        let line = i + 2;
        if events.len() >= MAX_RECORDS {
            problems.push(format!("more than {MAX_RECORDS} records; split the file"));
            break;
        }
        match rec.map_err(|e| e.to_string()).and_then(Row::event) {
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

fn parse_json(data: &[u8]) -> Result<Vec<ConsentEvent>, ImportError> {
    let rows: Vec<serde_json::Value> = serde_json::from_slice(data).map_err(|e| ImportError {
        problems: vec![format!("not a JSON array of consent records: {e}")],
    })?;
    if rows.len() > MAX_RECORDS {
        return Err(ImportError {
            problems: vec![format!("more than {MAX_RECORDS} records; split the file")],
        });
    }
    let mut problems = Vec::new();
    let mut events = Vec::new();
    for (i, v) in rows.into_iter().enumerate() {
        match serde_json::from_value::<Row>(v).map_err(|e| e.to_string()).and_then(Row::event) {
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
        let json = r#"[{"subject":"7","purpose":"marketing","status":"granted","at":"2026-01-01T00:00:00Z","source":"x"}]"#;
        assert_eq!(parse(json.as_bytes(), Format::Json).unwrap().len(), 1);
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
        assert!(parse(br#"[{"subject":"7"}]"#, Format::Json).unwrap_err().to_string().contains("record 1"));
    }
}
