//! The CRM as subject requests see it: a customer's current record fetched
//! and rendered for the access report, and the delete an erasure forwards.
//! Both go to the CRM the way the data path does (its credentials, its
//! timeouts), outside any client's request.

use std::net::SocketAddr;

use bytes::Bytes;
use http::request::Parts;
use http::{Method, StatusCode};

use super::body::{ReadError, read_limited};
use super::gate::RecordGate;
use super::reject::Refusal;
use super::route::{self, Plan, Target};
use super::{Gateway, forward, respond};

/// What the CRM answered to a subject request.
#[derive(Debug)]
pub struct CrmAnswer {
    pub status: StatusCode,
    pub body: Bytes,
}

impl Gateway {
    /// Sends `method path` to the CRM, with no body; the answer read whole
    /// (within the response body limit).
    pub async fn crm(&self, method: Method, path: &str) -> Result<CrmAnswer, Refusal> {
        let (parts, target) = request_to(method, path)?;
        self.crm_at(&parts, &target).await
    }

    async fn crm_at(&self, parts: &Parts, target: &Target) -> Result<CrmAnswer, Refusal> {
        let cfg = self.config();
        let peer = SocketAddr::from(([127, 0, 0, 1], 0));
        let req = forward::request(
            &cfg.upstream,
            &cfg.identity,
            parts,
            target,
            forward::Forward::default(),
            super::body::empty(),
            &self.ids.next(),
            peer,
        )?;
        let resp = self.upstream.send(req).await.map_err(|e| match e {
            forward::SendError::Connect => Refusal::UpstreamUnavailable,
            forward::SendError::Timeout => Refusal::UpstreamTimeout,
            forward::SendError::Failed => Refusal::UpstreamFailed,
        })?;
        let status = resp.status();
        let limit = cfg.limits.response_body;
        let idle = cfg.upstream.body_idle_timeout;
        let body = read_limited(resp.into_body(), limit, idle)
            .await
            .map_err(|e| match e {
                ReadError::TooLarge => Refusal::ResponseTooLarge,
                ReadError::Unreadable => Refusal::UpstreamFailed,
            })?;
        Ok(CrmAnswer { status, body })
    }

    /// The customer's record as the CRM holds it now, rendered under the
    /// access purpose's rule (tokens decrypted where it shows them; no
    /// consent check: the report is for the customer). `None` when
    /// `subjects.record` or `subjects.access_purpose` is not configured.
    pub async fn subject_record(
        &self,
        subject: &str,
    ) -> Result<Option<serde_json::Value>, Refusal> {
        let s = &self.config().subjects;
        let (Some(path), Some(purpose)) = (s.record_path(subject), s.access_purpose.clone()) else {
            return Ok(None);
        };
        // An erased customer's record is not fetched, nor shown, again.
        if self.consents.is_erased(subject) {
            return Ok(Some(
                serde_json::json!({"path": path, "erased": true, "record": null}),
            ));
        }
        let policies = self.policies();
        let (parts, target) = request_to(Method::GET, &path)?;
        let plan = route::plan(
            &policies,
            self.config().unmatched,
            &Method::GET,
            &target,
            &purpose,
        )?;
        let answer = self.crm_at(&parts, &target).await?;
        if answer.status == StatusCode::NOT_FOUND {
            return Ok(Some(
                serde_json::json!({"path": path, "status": 404, "record": null}),
            ));
        }
        if !answer.status.is_success() {
            return Err(Refusal::UpstreamFailed);
        }
        // The report renders by the rule whatever the policy's mode: it is
        // the gateway's own answer to the customer.
        let rendered = match plan {
            Plan::Inspect { resource, rule }
            | Plan::Report {
                resource,
                rule: Some(rule),
                ..
            } => {
                let gate = RecordGate::new(None, self.read_keys(&resource).await?, None);
                let limits = self.config().limits.clone();
                let body = answer.body;
                tokio::task::spawn_blocking(move || {
                    respond::render_blocking(&resource, &rule, gate, &body, &limits)
                })
                .await
                .map_err(|_| Refusal::Internal)??
            }
            Plan::Pass { .. } => answer.body.to_vec(),
            Plan::Report { rule: None, .. } => return Err(Refusal::Internal),
        };
        let record: serde_json::Value =
            serde_json::from_slice(&rendered).map_err(|_| Refusal::NotJson)?;
        Ok(Some(serde_json::json!({
            "path": path,
            "status": answer.status.as_u16(),
            "purpose": &*purpose,
            "record": record,
        })))
    }
}

/// A bodiless request's head and its normalised target.
fn request_to(method: Method, path: &str) -> Result<(Parts, Target), Refusal> {
    let (parts, ()) = http::Request::builder()
        .method(method)
        .uri(path)
        .body(())
        .map_err(|_| Refusal::Internal)?
        .into_parts();
    let target = route::target(&parts.uri)?;
    Ok((parts, target))
}
