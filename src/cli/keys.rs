//! `consentry keys rotate|retire|shred`: the master key file and the data
//! keys, from the command line.
//!
//! The key file is changed here (atomically); the data keys live in the
//! store. When the gateway is running, it owns the store: the change goes
//! through its admin API, so that its key cache stays right. When it is
//! not, the store is changed directly.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use bytes::Bytes;
use http::Method;

use crate::clock::SystemClock;
use crate::config::Config;
use crate::keys::master::MasterKeys;
use crate::keys::service::{Keys, subject_owner};
use crate::keys::store::KeyStore;
use crate::storage::sqlite::{self, SqliteStore};

fn key_file(cfg: &Config) -> anyhow::Result<&std::path::Path> {
    cfg.master_key_file.as_deref().context(
        "the config has no `keys.master_key_file`: rotation writes that file (a ring from the environment cannot be rotated in place)",
    )
}

/// The gateway's answer, printed; success if 2xx.
fn via_admin(cfg: &Config, method: Method, path: &str) -> anyhow::Result<ExitCode> {
    let (status, text, addr) = super::admin::call(cfg, method, path, None, Bytes::new())?;
    println!("the gateway is running: done through its admin API at {addr}");
    println!("{status}: {text}");
    Ok(if status.is_success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The store's data keys, when no gateway owns the store.
fn offline(cfg: &Config, ring: MasterKeys) -> anyhow::Result<Option<Keys>> {
    let Some(lock) = sqlite::lock(&cfg.sqlite).map_err(anyhow::Error::msg)? else {
        return Ok(None);
    };
    let store = SqliteStore::open_locked(&cfg.sqlite, lock).map_err(anyhow::Error::msg)?;
    let store: Arc<dyn KeyStore> = Arc::new(store);
    Ok(Some(Keys::new(ring, store, Arc::new(SystemClock))))
}

/// Adds a new master key version to the key file, then re-wraps every data
/// key under it (online through the admin API, or here if the gateway is
/// not running). Tokens in the CRM are not touched.
pub fn rotate(cfg: &Config) -> anyhow::Result<ExitCode> {
    let file = key_file(cfg)?;
    let ring = MasterKeys::load_file(file).map_err(anyhow::Error::msg)?;
    let next = ring.with_new_version().map_err(anyhow::Error::msg)?;
    let version = next.current().version;
    next.replace_file(file).map_err(anyhow::Error::msg)?;
    println!(
        "{}: added master key v{version} (back the file up again)",
        file.display()
    );
    match offline(cfg, ring)? {
        Some(keys) => {
            let done = keys.adopt(next).map_err(anyhow::Error::msg)?;
            println!(
                "re-wrapped {} data key(s) under v{} in {}",
                done.rewrapped,
                done.current,
                cfg.sqlite.display()
            );
            let counts = serde_json::json!({
                "current": done.current, "rewrapped": done.rewrapped, "retired": done.retired,
            });
            drop(keys);
            super::act::record(cfg, "keys", "rotated", &[], Some(counts))?;
            Ok(ExitCode::SUCCESS)
        }
        None => via_admin(cfg, Method::POST, "/v1/keys/rotate"),
    }
}

/// Removes an old master key version from the key file, once no data key
/// is wrapped under it any more.
pub fn retire(cfg: &Config, version: u32) -> anyhow::Result<ExitCode> {
    let file = key_file(cfg)?;
    let ring = MasterKeys::load_file(file).map_err(anyhow::Error::msg)?;
    let fewer = ring.without_version(version).map_err(anyhow::Error::msg)?;
    let in_use = match offline(cfg, ring.clone())? {
        Some(keys) => keys.versions_in_use(),
        None => {
            let store = SqliteStore::open_read_only(&cfg.sqlite).map_err(anyhow::Error::msg)?;
            Keys::new(ring, Arc::new(store), Arc::new(SystemClock)).versions_in_use()
        }
    }
    .map_err(anyhow::Error::msg)?;
    if let Some(n) = in_use.get(&version).filter(|n| **n > 0) {
        bail!(
            "{n} data key(s) are still wrapped under v{version}: run `consentry keys rotate` first; nothing was changed"
        );
    }
    fewer.replace_file(file).map_err(anyhow::Error::msg)?;
    println!("{}: retired master key v{version}", file.display());
    if sqlite::lock(&cfg.sqlite)
        .map_err(anyhow::Error::msg)?
        .is_none()
    {
        // The running gateway drops it from memory too (and records it).
        return via_admin(cfg, Method::POST, "/v1/keys/rotate");
    }
    let counts = serde_json::json!({ "retired": [version] });
    super::act::record(cfg, "keys", "retired", &[], Some(counts))?;
    Ok(ExitCode::SUCCESS)
}

/// Destroys one customer's data key: every token of theirs is unreadable
/// from now on, wherever it is stored.
pub fn shred(cfg: &Config, subject: &str) -> anyhow::Result<ExitCode> {
    crate::consent::model::check_subject(subject).map_err(anyhow::Error::msg)?;
    let ring = cfg
        .master_keys
        .as_deref()
        .cloned()
        .context("the config has no master key: there are no data keys to destroy")?;
    match offline(cfg, ring)? {
        Some(keys) => {
            let done = keys
                .destroy(&subject_owner(subject))
                .map_err(anyhow::Error::msg)?;
            if done {
                println!("destroyed the data key of subject {subject}");
            } else {
                println!("subject {subject} had no data key");
            }
            drop(keys);
            super::act::record(
                cfg,
                "keys",
                "shredded",
                &[(subject, "data key destroyed".into())],
                None,
            )?;
            Ok(ExitCode::SUCCESS)
        }
        None => {
            let seg =
                percent_encoding::utf8_percent_encode(subject, percent_encoding::NON_ALPHANUMERIC);
            via_admin(cfg, Method::DELETE, &format!("/v1/subjects/{seg}/key"))
        }
    }
}
