//! `consentry subject access|erase ID`: a customer's requests, answered.
//!
//! `access` reads the store and the audit trail directly (read-only, beside
//! a running gateway); with `--record` it asks the running gateway instead,
//! which adds the CRM's current record. `erase` always goes through the
//! running gateway's admin API: the gateway holds the suppression list in
//! memory, owns the key cache, and forwards the delete to the CRM.

use std::process::ExitCode;

use anyhow::bail;
use bytes::Bytes;
use http::Method;

use crate::config::Config;

fn segment(id: &str) -> String {
    percent_encoding::utf8_percent_encode(id, percent_encoding::NON_ALPHANUMERIC).to_string()
}

pub fn access(cfg: &Config, subject: &str, record: bool) -> anyhow::Result<ExitCode> {
    if !record {
        let report = crate::audit::report::access_report(cfg, subject)?;
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(ExitCode::SUCCESS);
    }
    let path = format!("/v1/subjects/{}/access", segment(subject));
    let (status, text, _) = super::admin::call(cfg, Method::GET, &path, None, Bytes::new())?;
    print_json(&text);
    Ok(exit(status))
}

pub fn erase(cfg: &Config, subject: &str, unlink: bool) -> anyhow::Result<ExitCode> {
    crate::consent::model::check_subject(subject).map_err(anyhow::Error::msg)?;
    if cfg.admin.is_none() {
        bail!(
            "erasure goes through the running gateway's admin API: configure `admin:` and start it"
        );
    }
    let path = format!("/v1/subjects/{}/erase", segment(subject));
    let body = serde_json::to_vec(&serde_json::json!({ "unlink": unlink }))?;
    let (status, text, _) = super::admin::call(
        cfg,
        Method::POST,
        &path,
        Some("application/json"),
        Bytes::from(body),
    )?;
    print_json(&text);
    Ok(exit(status))
}

fn print_json(text: &str) {
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(v) => println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default()),
        Err(_) => println!("{text}"),
    }
}

fn exit(status: http::StatusCode) -> ExitCode {
    if status.is_success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
