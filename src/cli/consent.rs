//! `consentry consent import|export`: bulk consent files from the command line.
//!
//! The store has one owner (`storage::sqlite::lock`). When the gateway is not
//! running, `import` writes the store directly; when it is, the file goes to
//! the running gateway's admin API, so its consent cache stays right.

use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};

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
    let Some(admin) = &cfg.admin else {
        bail!(
            "{} is in use by a running consentry without an admin API; \
             stop it, or configure `admin:` and import through it",
            cfg.sqlite.display()
        );
    };
    let mut addr = admin.listen;
    if addr.ip().is_unspecified() {
        addr = SocketAddr::from(([127, 0, 0, 1], addr.port()));
    }
    let ct = match format {
        Format::Csv => "text/csv",
        Format::Json => "application/json",
    };
    let token = admin.token.expose_for_client();
    let body = Bytes::copy_from_slice(data);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let (status, text) = rt.block_on(async move {
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http::<Full<Bytes>>();
        let req = http::Request::post(format!("http://{addr}/v1/consents/import"))
            .header(http::header::CONTENT_TYPE, ct)
            .header(http::header::AUTHORIZATION, format!("Bearer {}", &*token))
            .body(Full::new(body))?;
        let resp = client.request(req).await.with_context(|| {
            format!("the store is in use, and the admin API at {addr} does not answer")
        })?;
        let status = resp.status();
        let bytes = resp.into_body().collect().await?.to_bytes();
        anyhow::Ok((status, String::from_utf8_lossy(&bytes).into_owned()))
    })?;
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
