//! Key endpoints of the admin API: rotation of the master key and
//! crypto-shredding of one customer's data key. Store work runs on
//! blocking threads; answers carry versions and counts, never key material.

use std::sync::Arc;

use http::{Response, StatusCode};

use super::{Admin, Problem, json};
use crate::consent::model::check_subject;
use crate::keys::master::MasterKeys;
use crate::keys::service::{Keys, KeysError, subject_owner};
use crate::proxy::body::Body;

type Result<T> = std::result::Result<T, Problem>;

fn keys(admin: &Admin) -> Result<Arc<Keys>> {
    admin.gateway().keys().cloned().ok_or_else(|| {
        Problem::new(
            StatusCode::NOT_FOUND,
            "encryption-off",
            "Encryption is not configured",
            "set `keys.master_key_file` in the config to encrypt at rest",
        )
    })
}

fn failed(e: KeysError) -> Problem {
    match e {
        KeysError::Key(crate::keys::KeyError::Invalid(why)) => Problem::new(
            StatusCode::CONFLICT,
            "key-ring-refused",
            "Key ring refused",
            why,
        ),
        e => {
            tracing::error!(error = %e, "key store failed (admin API)");
            Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "key-store-unavailable",
                "Key store unavailable",
                "the key store could not be read or written; nothing was changed",
            )
        }
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> std::result::Result<T, KeysError> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|_| failed(KeysError::Key(crate::keys::KeyError::Decrypt)))?
        .map_err(failed)
}

/// `GET /v1/keys`: the master key versions, and how many data keys each wraps.
pub async fn status(admin: &Admin) -> Result<Response<Body>> {
    let k = keys(admin)?;
    let (versions, current, by) = blocking(move || {
        let (versions, current) = k.ring_versions()?;
        Ok((versions, current, k.versions_in_use()?))
    })
    .await?;
    let by: serde_json::Map<String, serde_json::Value> = by
        .into_iter()
        .map(|(v, n)| (format!("v{v}"), n.into()))
        .collect();
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({
            "master": {"current": current, "versions": versions},
            "data_keys_by_master_version": by,
            "undecryptable_tokens_total": admin.gateway().undecryptable_tokens(),
        }),
    ))
}

/// `POST /v1/keys/rotate`: re-reads the master key file and adopts it:
/// every data key is re-wrapped under its current version, and versions
/// the file no longer holds are retired. Tokens in the CRM are untouched.
pub async fn rotate(admin: &Admin) -> Result<Response<Body>> {
    let k = keys(admin)?;
    let Some(file) = admin.gateway().config().master_key_file.clone() else {
        return Err(Problem::new(
            StatusCode::CONFLICT,
            "key-ring-refused",
            "Key ring refused",
            "the master key comes from the environment: rotation needs `keys.master_key_file`",
        ));
    };
    let done = blocking(move || k.adopt(MasterKeys::load_file(&file)?)).await?;
    tracing::info!(
        current = done.current,
        rewrapped = done.rewrapped,
        retired = ?done.retired,
        "master key adopted"
    );
    let counts = serde_json::json!({
        "current": done.current, "rewrapped": done.rewrapped, "retired": done.retired,
    });
    super::audit_act(admin, "keys", "rotated", &[], Some(counts)).await?;
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({
            "current": done.current,
            "rewrapped": done.rewrapped,
            "retired": done.retired,
        }),
    ))
}

/// `DELETE /v1/subjects/{id}/key`: destroys the customer's data key. Every
/// token of theirs, in the CRM and its backups, is unreadable from now on.
pub async fn shred(admin: &Admin, subject: &str) -> Result<Response<Body>> {
    check_subject(subject).map_err(|e| Problem::invalid_subject(e.to_string()))?;
    let k = keys(admin)?;
    let owner = subject_owner(subject);
    let destroyed = blocking(move || k.destroy(&owner)).await?;
    tracing::info!(destroyed, "a subject's data key was shredded");
    super::audit_act(
        admin,
        "keys",
        "shredded",
        &[(subject, "data key destroyed".into())],
        None,
    )
    .await?;
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({"subject": subject, "destroyed": destroyed}),
    ))
}
