//! `consentry consent import|export`: bulk consent files from the command line.
//!
//! The store has one owner (`storage::sqlite::lock`). When the gateway is not
//! running, `import` writes the store directly; when it is, the file goes to
//! the running gateway's admin API, so its consent cache stays right.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use bytes::Bytes;

use crate::clock::SystemClock;
use crate::config::Config;
use crate::consent::import::{self, Format};
use crate::consent::{Consents, Invalid};
use crate::policy::PolicySet;
use crate::storage::sqlite::{self, SqliteStore};

pub fn import_file(cfg: &Config, set: &PolicySet, file: &Path) -> anyhow::Result<ExitCode> {
    let name = file.to_string_lossy();
    let format = Format::guess(&name).with_context(|| {
        format!("cannot tell the format of {name}: name it *.csv, *.json or *.jsonl")
    })?;
    let data = std::fs::read(file).with_context(|| format!("cannot read {name}"))?;
    let events = match import::parse(&data, format) {
        Ok(e) => e,
        Err(e) => return Ok(refused(file, &e)),
    };
    let Some(lock) = sqlite::lock(&cfg.sqlite).map_err(anyhow::Error::msg)? else {
        return via_admin(cfg, &data, format);
    };
    let store = SqliteStore::open_locked(&cfg.sqlite, lock).map_err(anyhow::Error::msg)?;
    let consents = Consents::new(Arc::new(store), Arc::new(SystemClock));
    let applied =
        match consents.record_labelled(&events, &|p| set.knows_purpose(p), &|i| format.label(i)) {
            Ok(a) => a,
            Err(Invalid::Bad(problems)) => {
                return Ok(refused(file, &import::ImportError { problems }));
            }
            Err(Invalid::Store(e)) => return Err(anyhow::Error::msg(e)),
        };
    println!(
        "imported {} record(s) into {}: {} new, {} already there",
        events.len(),
        cfg.sqlite.display(),
        applied.inserted,
        applied.unchanged
    );
    drop(consents);
    let counts = serde_json::json!({
        "records": events.len(), "inserted": applied.inserted,
        "unchanged": applied.unchanged, "superseded": applied.superseded,
    });
    super::act::record(cfg, "consent", "imported", &[], Some(counts))?;
    Ok(ExitCode::SUCCESS)
}

fn refused(file: &Path, e: &import::ImportError) -> ExitCode {
    eprintln!("{}: import refused, nothing was stored:", file.display());
    for p in &e.problems {
        eprintln!("  {p}");
    }
    ExitCode::FAILURE
}

/// Sends the file to the running gateway's admin API.
fn via_admin(cfg: &Config, data: &[u8], format: Format) -> anyhow::Result<ExitCode> {
    let ct = match format {
        Format::Csv => "text/csv",
        Format::Json => "application/json",
    };
    let (status, text, addr) = super::admin::call(
        cfg,
        http::Method::POST,
        "/v1/consents/import",
        Some(ct),
        Bytes::copy_from_slice(data),
    )?;
    println!("the gateway is running: imported through its admin API at {addr}");
    println!("{status}: {text}");
    Ok(if status.is_success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

pub fn export(cfg: &Config, csv: bool) -> anyhow::Result<ExitCode> {
    if !cfg.sqlite.exists() {
        bail!("no consent store at {} yet", cfg.sqlite.display());
    }
    let store = sqlite::SqliteStore::open_read_only(&cfg.sqlite).map_err(anyhow::Error::msg)?;
    let consents = Consents::new(Arc::new(store), Arc::new(SystemClock));
    let out =
        crate::admin::consent::export_bytes(&consents, csv).map_err(|p| anyhow::anyhow!("{p}"))?;
    use std::io::Write as _;
    std::io::stdout()
        .write_all(&out)
        .context("cannot write the export")?;
    Ok(ExitCode::SUCCESS)
}
