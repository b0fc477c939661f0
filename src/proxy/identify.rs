//! Phase 1: is this a request we handle at all, who is calling, and for
//! which purpose.

use std::sync::Arc;

use http::request::Parts;
use http::{HeaderMap, Method, header};

use super::reject::Refusal;
use crate::config::{Clients, Identity};
use crate::policy::{PolicySet, taxonomy};

/// Headers that ask a server to act as if the method were another one.
const METHOD_OVERRIDES: &[&str] = &[
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
];

/// Refuses requests consentry never proxies: CONNECT, TRACE, upgrades and
/// method overrides.
pub fn screen(req: &Parts) -> Result<(), Refusal> {
    if req.method == Method::CONNECT || req.method == Method::TRACE {
        return Err(Refusal::MethodRefused);
    }
    if req.headers.contains_key(header::UPGRADE) {
        return Err(Refusal::UpgradeRefused);
    }
    if METHOD_OVERRIDES
        .iter()
        .any(|h| req.headers.contains_key(*h))
    {
        return Err(Refusal::MethodOverride);
    }
    Ok(())
}

/// The calling client's name and its declared purpose.
pub fn caller(
    clients: &Clients,
    identity: &Identity,
    policies: &PolicySet,
    headers: &HeaderMap,
    certificate: Option<&crate::tls::ClientCertificate>,
) -> Result<(Arc<str>, Arc<str>), Refusal> {
    // A verified client certificate that names a client identifies it;
    // otherwise the API key does.
    let by_cert = certificate.and_then(|c| clients.by_certificate(&c.0));
    let client = match by_cert {
        Some(c) => c,
        None => {
            let mut keys = headers.get_all(&identity.api_key_header).iter();
            let key = match (keys.next(), keys.next()) {
                (Some(k), None) => k,
                (None, _) => return Err(Refusal::ApiKeyMissing),
                (Some(_), Some(_)) => return Err(Refusal::ApiKeyUnknown),
            };
            clients
                .identify(key.as_bytes())
                .ok_or(Refusal::ApiKeyUnknown)?
        }
    };
    let mut declared = headers.get_all(&identity.purpose_header).iter();
    let purpose: Arc<str> = match (declared.next(), declared.next()) {
        (Some(_), Some(_)) => return Err(Refusal::PurposeRepeated),
        (Some(v), None) => {
            let p = v.to_str().map_err(|_| Refusal::PurposeInvalid)?.trim();
            if !taxonomy::well_formed(p) || !policies.knows_purpose(p) {
                return Err(Refusal::PurposeInvalid);
            }
            p.into()
        }
        (None, _) => match client.purposes.as_slice() {
            [only] => Arc::clone(only),
            _ => return Err(Refusal::PurposeRequired),
        },
    };
    // A client allowed `marketing` may declare `marketing.advertising`.
    if !client
        .purposes
        .iter()
        .any(|allowed| taxonomy::is_within(&purpose, allowed))
    {
        return Err(Refusal::PurposeNotAllowed);
    }
    Ok((Arc::clone(&client.name), purpose))
}
