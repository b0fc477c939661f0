//! Phase 3c: encryption at rest on the way in. The keys a request needs are
//! fetched before its body is rewritten (`write_vault`, `read_vault`), and
//! equality searches on deterministic categories are rewritten into the
//! tokens the CRM stores (`search_query`, `search_body`), so that CRM search
//! keeps working on encrypted fields.

use std::sync::Arc;

use serde_json::Value;
use zeroize::Zeroizing;

use super::gate::keys_failed;
use super::reject::Refusal;
use crate::keys::service::{Keys, KeysError, pending_owner, subject_owner};
use crate::keys::vault::Vault;
use crate::keys::wrap::DataKey;
use crate::policy::{Resource, SearchField};
use crate::transform::{Program, Seal};

/// Runs `f` (which may read the key store) on a blocking-pool thread.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Refusal> + Send + 'static,
) -> Result<T, Refusal> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|_| Refusal::Internal)?
}

/// A create's fresh key: stored under `owner` (`store_pending`) if the
/// write sealed anything, then bound to the id in the CRM's answer.
#[derive(Debug)]
pub struct Pending {
    pub owner: String,
    key: Arc<DataKey>,
    /// Taken from the pool of keys already stored.
    stored: bool,
}

impl Pending {
    /// The pending owner and its key, to bind to the CRM's id.
    pub fn binding(self) -> (String, Arc<DataKey>) {
        (self.owner, self.key)
    }
}

/// Stores a create's key before the write that used it is sent (unless it
/// came from the pool, stored already).
pub async fn store_pending(keys: &Arc<Keys>, p: &Pending) -> Result<(), Refusal> {
    if p.stored {
        return Ok(());
    }
    let (keys, owner, key) = (Arc::clone(keys), p.owner.clone(), Arc::clone(&p.key));
    blocking(move || keys.store_pending(&owner, &key).map_err(keys_failed)).await
}

/// The keys for a write to `resource` at `path`: the key of the customer
/// the path names (made on their first write), or for a create a fresh key
/// (`Pending`).
pub async fn write_vault(
    keys: &Arc<Keys>,
    resource: &Resource,
    program: &Program,
    path: &str,
) -> Result<(Vault, Option<Pending>), Refusal> {
    let categories = &program.deterministic;
    let owner = match resource.subject_in_path(path) {
        Some(s) => Some(subject_owner(&s)),
        None if resource.path_subject.is_some() => {
            // The path names the customer, but not as a usable id.
            return Err(Refusal::SubjectUnknown);
        }
        None => None,
    };
    if let Some(o) = &owner
        && let Some(dk) = keys.cached_key(o)
        && let Some(v) = Vault::cached(keys, Some(dk), categories)
    {
        return Ok((v, None));
    }
    if owner.is_none()
        && let Some(v) = Vault::cached(keys, None, categories)
    {
        let (taken, refill) = keys.take_pending();
        if refill {
            let k = Arc::clone(keys);
            tokio::task::spawn_blocking(move || {
                if let Err(e) = k.refill_pool() {
                    tracing::warn!(error = %e, "cannot refill the pool of create keys");
                }
            });
        }
        if let Some((owner, key)) = taken {
            let v = v.with_writer(Arc::clone(&key));
            let p = Pending {
                owner,
                key,
                stored: true,
            };
            return Ok((v, Some(p)));
        }
    }
    let (keys, categories) = (Arc::clone(keys), categories.clone());
    blocking(move || {
        let Some(owner) = owner else {
            let owner = pending_owner().map_err(|e| keys_failed(e.into()))?;
            let key = Arc::new(DataKey::generate().map_err(|e| keys_failed(e.into()))?);
            let v = Vault::for_write(&keys, Some(Arc::clone(&key)), &categories)
                .map_err(keys_failed)?;
            let p = Pending {
                owner,
                key,
                stored: false,
            };
            return Ok((v, Some(p)));
        };
        let dk = keys.for_write(&owner).map_err(|e| match e {
            KeysError::Destroyed => Refusal::SubjectErased,
            e => keys_failed(e),
        })?;
        let v = Vault::for_write(&keys, Some(dk), &categories).map_err(keys_failed)?;
        Ok((v, None))
    })
    .await
}

/// The keys for reading `program`'s tokens: the deterministic categories'
/// now; the subjects' as records arrive (`gate::RecordGate`).
pub async fn read_vault(keys: &Arc<Keys>, program: &Program) -> Result<Vault, Refusal> {
    if let Some(v) = Vault::cached(keys, None, &program.deterministic) {
        return Ok(v);
    }
    let (keys, categories) = (Arc::clone(keys), program.deterministic.clone());
    blocking(move || Vault::for_read(&keys, &categories).map_err(keys_failed)).await
}

/// The encrypted search field `name` names; letters folded, as some CRMs
/// fold them (`Email=` must not slip past in clear).
fn field<'a>(fields: &'a [SearchField], name: &str) -> Option<&'a SearchField> {
    fields
        .iter()
        .find(|f| f.name.eq_ignore_ascii_case(name) && f.seal == Seal::Deterministic)
}

/// The token a searched value must be to find what the CRM stores.
fn token_for(vault: &Vault, f: &SearchField, json: &[u8]) -> Result<String, Refusal> {
    vault
        .search_token(&f.category, json)
        .ok_or(Refusal::KeysUnavailable)
}

/// Rewrites the query parameters that search encrypted categories; other
/// parameters are kept byte for byte. `None`: nothing to change.
pub fn search_query(
    vault: &Vault,
    resource: &Resource,
    query: &str,
) -> Result<Option<String>, Refusal> {
    let Some(search) = resource.search.as_ref().filter(|s| !s.params.is_empty()) else {
        return Ok(None);
    };
    let mut changed = false;
    let mut out = String::with_capacity(query.len() + 64);
    for (i, pair) in query.split('&').enumerate() {
        if i > 0 {
            out.push('&');
        }
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let name_text = percent_encoding::percent_decode_str(name).decode_utf8_lossy();
        let Some(f) = field(&search.params, &name_text) else {
            out.push_str(pair);
            continue;
        };
        let text = percent_encoding::percent_decode_str(value)
            .decode_utf8()
            .map_err(|_| {
                Refusal::SearchUnsupported(format!(
                    "the value of query parameter `{}` is not UTF-8 text",
                    f.name
                ))
            })?;
        let mut json = Zeroizing::new(Vec::with_capacity(text.len() + 2));
        crate::transform::lex::quote(text.as_bytes(), &mut json);
        out.push_str(name);
        out.push('=');
        // Tokens are spelled in URL-safe characters only.
        out.push_str(&token_for(vault, f, &json)?);
        changed = true;
    }
    Ok(changed.then_some(out))
}

/// Rewrites a HubSpot-style search body: each filter on an encrypted
/// property (`EQ`, `NEQ`, `IN`, `NOT_IN`) searches for the tokens the CRM
/// stores. Other operators cannot work on tokens and are refused.
pub fn search_body(vault: &Vault, resource: &Resource, body: &[u8]) -> Result<Vec<u8>, Refusal> {
    let Some(search) = resource.search.as_ref() else {
        return Ok(body.to_vec());
    };
    let bad = |why: &str| Refusal::SearchUnsupported(why.to_owned());
    let mut doc: Value = serde_json::from_slice(body)
        .ok()
        .filter(Value::is_object)
        .ok_or_else(|| bad("the search body is not a JSON object with `filterGroups`"))?;
    // Full-text search cannot match tokens, and would carry the text to the
    // CRM in clear.
    if doc.get("query").is_some_and(|q| !q.is_null()) && resource.search_rewrites() {
        return Err(bad(
            "full-text `query` cannot find encrypted values, and would send the searched text to the CRM: use `filterGroups` with EQ",
        ));
    }
    let token = |f: &SearchField, v: &Value| -> Result<Value, Refusal> {
        let json = Zeroizing::new(match v {
            Value::String(s) => {
                let mut q = Vec::with_capacity(s.len() + 2);
                crate::transform::lex::quote(s.as_bytes(), &mut q);
                q
            }
            other => other.to_string().into_bytes(),
        });
        Ok(Value::String(token_for(vault, f, &json)?))
    };
    let groups = doc
        .get_mut("filterGroups")
        .and_then(Value::as_array_mut)
        .map(|g| g.as_mut_slice())
        .unwrap_or_default();
    for group in groups {
        let Some(filters) = group.get_mut("filters").and_then(Value::as_array_mut) else {
            continue;
        };
        for filter in filters {
            let Some(name) = filter.get("propertyName").and_then(Value::as_str) else {
                continue;
            };
            let Some(f) = field(&search.hubspot_filters, name) else {
                continue;
            };
            let op = filter
                .get("operator")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned();
            match op.as_str() {
                "EQ" | "NEQ" => {
                    let v = filter.get("value").cloned().unwrap_or(Value::Null);
                    filter["value"] = token(f, &v)?;
                }
                "IN" | "NOT_IN" => {
                    let vs = filter.get("values").and_then(Value::as_array).cloned();
                    let vs = vs.ok_or_else(|| bad("an IN filter needs `values`"))?;
                    let t: Result<Vec<Value>, Refusal> = vs.iter().map(|v| token(f, v)).collect();
                    filter["values"] = Value::Array(t?);
                }
                "HAS_PROPERTY" | "NOT_HAS_PROPERTY" => {}
                _ => {
                    return Err(Refusal::SearchUnsupported(format!(
                        "`{}` is stored encrypted: it can be searched with EQ, NEQ, IN, NOT_IN, HAS_PROPERTY and NOT_HAS_PROPERTY only",
                        f.name
                    )));
                }
            }
        }
    }
    serde_json::to_vec(&doc).map_err(|_| Refusal::Internal)
}
