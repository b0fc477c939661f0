//! The data path. `Gateway::handle` is the driver; each phase is a file:
//!
//! ```text
//! identify  screen the request; API key -> client; purpose header -> purpose
//! route     normalise the path once; match a policy resource; pick the rule
//! collect   minimise a write body to what the purpose may collect
//! encrypt   fetch the request's keys; rewrite searches on encrypted fields
//! forward   build the CRM request (header hygiene, credentials) and send it
//! respond   check status and content type, decode, rewrite, stream; each
//!           record's subject is checked against consent and its tokens
//!           opened with its key (`gate`)
//! reject    every refusal -> RFC 9457 problem+json
//! emit      the outcome: access log (audit later)
//! ```
//!
//! Per-request state lives in `context::Context`. The driver never logs or
//! returns request or response content.

pub mod body;
pub mod collect;
pub mod context;
pub mod decode;
pub mod emit;
pub mod encrypt;
pub mod forward;
pub mod gate;
pub mod identify;
pub mod reject;
pub mod respond;
pub mod route;
pub mod subject;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::SystemTime;

use arc_swap::ArcSwap;
use http::{Method, Request, Response};
use hyper::body::Incoming;

use crate::audit::writer::Audit;
use crate::audit::{Counts, Event, SubjectEntry};
use crate::config::Config;
use crate::consent::Consents;
use crate::consent::gate::ConsentGate;
use crate::keys::service::Keys;
use crate::policy::PolicySet;
use body::Body;
use context::{Context, Outcome, Release, RequestId, RequestIds};
use emit::Emitter;
use forward::{SendError, Upstream};
use gate::RecordGate;
use reject::Refusal;
use route::Plan;

/// What a reload replaces while the gateway serves: the policies and the
/// clients. A request loads it once and keeps that version to its end.
#[derive(Debug)]
pub struct Live {
    pub policies: Arc<PolicySet>,
    pub clients: Arc<crate::config::Clients>,
    /// 1 at start, one more per applied reload.
    pub version: u64,
}

/// The gateway: configuration, the current policies and the CRM client.
#[derive(Debug)]
pub struct Gateway {
    config: Config,
    live: ArcSwap<Live>,
    /// One reload at a time.
    pub(crate) reloading: tokio::sync::Mutex<()>,
    /// Reads the config file again on reload (the demo's fills in its own
    /// environment).
    pub(crate) loader: crate::reload::Loader,
    metrics: Arc<crate::metrics::Metrics>,
    upstream: Upstream,
    ids: RequestIds,
    emitter: Arc<Emitter>,
    consents: Arc<Consents>,
    /// Data keys (encryption at rest), when a master key is configured.
    keys: Option<Arc<Keys>>,
    /// The audit trail; every response waits for its event's commit.
    audit: Option<Arc<Audit>>,
}

impl Gateway {
    pub fn new(
        config: Config,
        policies: PolicySet,
        consents: Arc<Consents>,
        keys: Option<Arc<Keys>>,
    ) -> Result<Gateway, String> {
        let upstream = Upstream::new(&config.upstream)?;
        check_policies(&config, &policies, keys.as_deref())?;
        consents
            .load_erasures()
            .map_err(|e| format!("cannot read the suppression list (erased customers): {e}"))?;
        let metrics = Arc::new(crate::metrics::Metrics::new());
        let emitter = Arc::new(Emitter {
            access: config.log.access,
            metrics: Some(Arc::clone(&metrics)),
            ..Emitter::default()
        });
        let live = Live {
            policies: Arc::new(policies),
            clients: Arc::clone(&config.clients),
            version: 1,
        };
        Ok(Gateway {
            config,
            live: ArcSwap::from_pointee(live),
            reloading: tokio::sync::Mutex::new(()),
            loader: crate::reload::Loader::default(),
            metrics,
            upstream,
            ids: RequestIds::new(),
            emitter,
            consents,
            keys,
            audit: None,
        })
    }
}

/// What policies must satisfy under `config`, at start and on every reload:
/// keys for what they encrypt, a rule for the access purpose, and the
/// subject record path inspected for it.
pub(crate) fn check_policies(
    config: &Config,
    policies: &PolicySet,
    keys: Option<&Keys>,
) -> Result<(), String> {
    warm_keys(policies, keys)?;
    if let Some(p) = &config.subjects.access_purpose
        && !policies.resources().iter().any(|r| {
            r.rules
                .iter()
                .any(|rule| crate::policy::taxonomy::is_within(p, &rule.purpose))
        })
    {
        return Err(format!(
            "`subjects.access_purpose` is `{p}`, which no policy has a rule for; add one (the example has `essential.legal_obligation`)"
        ));
    }
    // The record path must be a route the policies inspect for that
    // purpose, or the report would carry the CRM's bytes unread.
    if let (Some(p), Some(path)) = (
        &config.subjects.access_purpose,
        config.subjects.record_path("probe"),
    ) && !matches!(
        policies.decide(&http::Method::GET, &path, p),
        crate::policy::Decision::Inspect { .. }
    ) {
        return Err(format!(
            "`subjects.record` ({}) is not a GET route the policies inspect for `{p}`; declare it in a policy with a rule for that purpose",
            config.subjects.record.as_deref().unwrap_or_default()
        ));
    }
    Ok(())
}

impl Gateway {
    /// Reads the config file with `loader` on reload.
    pub fn with_loader(mut self, loader: crate::reload::Loader) -> Gateway {
        self.loader = loader;
        self
    }

    /// Records every request in `audit`, before its response is released.
    pub fn with_audit(mut self, audit: Arc<Audit>) -> Gateway {
        audit.observe(Arc::clone(&self.metrics));
        self.emitter = Arc::new(Emitter {
            access: self.emitter.access,
            audit: Some(Arc::clone(&audit)),
            metrics: Some(Arc::clone(&self.metrics)),
        });
        self.audit = Some(audit);
        self
    }

    /// Records that the gateway starts serving, with what: a fingerprint of
    /// the policy files (SHA-256 over their names and bytes), the number of
    /// resources, the master key version. Refuses (an error) when the event
    /// cannot be stored: nothing is served without a trail.
    pub async fn record_start(&self) -> Result<(), String> {
        let Some(audit) = &self.audit else {
            return Ok(());
        };
        let policies = self.policies();
        let fingerprint = policies.audited_fingerprint()?;
        let master = self
            .keys
            .as_ref()
            .and_then(|k| k.ring_versions().ok())
            .map(|(_, c)| c);
        let counts = serde_json::json!({
            "policy_files": fingerprint.files,
            "policies_sha256": fingerprint.sha256,
            "resources": policies.resources().len(),
            "master_key_version": master,
        });
        let event = Event::act("gateway", "consentry", "started", Vec::new(), Some(counts));
        audit
            .record(event)
            .await
            .map(|_| ())
            .map_err(|e| format!("the audit trail cannot be written ({e}); nothing was started"))
    }

    pub fn audit(&self) -> Option<&Arc<Audit>> {
        self.audit.as_ref()
    }

    pub fn keys(&self) -> Option<&Arc<Keys>> {
        self.keys.as_ref()
    }

    /// Tokens withheld since start because they did not decrypt.
    pub fn undecryptable_tokens(&self) -> u64 {
        self.metrics.undecryptable_tokens()
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn consents(&self) -> &Arc<Consents> {
        &self.consents
    }

    /// The policies requests start with now.
    pub fn policies(&self) -> Arc<PolicySet> {
        Arc::clone(&self.live.load().policies)
    }

    /// The policies and clients requests start with now.
    pub fn live(&self) -> Arc<Live> {
        self.live.load_full()
    }

    /// Swaps in the policies and clients a reload has checked
    /// (`check_policies`) and recorded as `version`, in one atomic store.
    /// Only a reload swaps, one at a time (`reloading`), so `version` is the
    /// next. Requests in flight keep the version they started with.
    pub(crate) fn swap_checked(
        &self,
        policies: PolicySet,
        clients: Arc<crate::config::Clients>,
        version: u64,
    ) {
        self.live.store(Arc::new(Live {
            policies: Arc::new(policies),
            clients,
            version,
        }));
    }

    /// Whether the CRM accepts a TCP connection now (`/readyz`).
    pub async fn upstream_reachable(&self) -> Result<(), String> {
        let up = &self.config.upstream;
        let host = up
            .authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        let port = up
            .authority
            .port_u16()
            .unwrap_or(if up.scheme == http::uri::Scheme::HTTPS {
                443
            } else {
                80
            });
        let wait = up.connect_timeout.min(std::time::Duration::from_secs(2));
        match tokio::time::timeout(wait, tokio::net::TcpStream::connect((host, port))).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(format!("cannot connect to the CRM: {e}")),
            Err(_) => Err(format!("no connection to the CRM within {wait:?}")),
        }
    }

    pub fn metrics(&self) -> &Arc<crate::metrics::Metrics> {
        &self.metrics
    }

    /// Handles one request, whatever happens: every outcome is emitted once.
    pub async fn handle(&self, req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
        let id = req
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .and_then(RequestId::parse)
            .unwrap_or_else(|| self.ids.next());
        let mut ctx = Context::new(id, peer, req.method().clone(), SystemTime::now());
        let live = self.live.load_full();
        ctx.policy_version = live.version;
        let mut resp = match self.process(&mut ctx, &live, req).await {
            Ok(resp) => resp,
            Err(refusal) => {
                ctx.outcome = Outcome::Refused;
                ctx.problem = Some(refusal.slug());
                reject::problem(&ctx.id, &refusal)
            }
        };
        if !ctx.streaming {
            ctx.status = resp.status().as_u16();
        }
        // Nothing leaves before its audit event is committed, nor, for a
        // create, before its key binding is: the two commits run together.
        let mut abandoned = false;
        let mut ticket = ctx.binding.take();
        let mut refuse = |ctx: &mut Context, r: Refusal| {
            abandoned |= ctx.streaming;
            ctx.outcome = Outcome::Refused;
            ctx.problem = Some(r.slug());
            ctx.streaming = false;
            resp = reject::problem(&ctx.id, &r);
            ctx.status = resp.status().as_u16();
        };
        // A binding already known to have failed: refused, one event.
        if let Some(Err(e)) = ticket.as_ref().and_then(|t| t.ready()) {
            ticket = None;
            withhold(&mut ctx);
            refuse(&mut ctx, gate::binding_failed(e));
        }
        if let Some(audit) = &self.audit {
            let event = audit_event(&ctx, audit);
            let (recorded, bound) = tokio::join!(audit.record(event), bound(ticket));
            if let Err(e) = recorded {
                tracing::error!(error = %e, request_id = ctx.id.as_str(), "audit event not stored: the response is refused");
                refuse(&mut ctx, Refusal::AuditUnavailable);
            } else if let Err(r) = bound {
                // The event just stored describes an answer that does not
                // leave after all: a second one, same request id, says so.
                refuse(&mut ctx, r);
                withhold(&mut ctx);
                if let Err(e) = audit.record(audit_event(&ctx, audit)).await {
                    tracing::error!(error = %e, request_id = ctx.id.as_str(), "the refusal of a create whose key was not bound could not be recorded");
                }
            }
        } else if let Err(r) = bound(ticket).await {
            refuse(&mut ctx, r);
        }
        if let Some(r) = &ctx.release {
            r.send_replace(if abandoned {
                Release::Replaced
            } else {
                Release::Released
            });
        }
        if !ctx.streaming {
            self.emitter.emit(&ctx);
        }
        resp
    }

    async fn process(
        &self,
        ctx: &mut Context,
        live: &Live,
        req: Request<Incoming>,
    ) -> Result<Response<Body>, Refusal> {
        let cfg = &self.config;
        let policies = &*live.policies;
        let (parts, body) = req.into_parts();
        identify::screen(&parts)?;
        let (client, purpose) = identify::caller(
            &live.clients,
            &cfg.identity,
            policies,
            &parts.headers,
            parts.extensions.get::<crate::tls::ClientCertificate>(),
        )?;
        ctx.client = Some(client);
        ctx.purpose = Some(Arc::clone(&purpose));
        let target = route::target(&parts.uri)?;
        let plan = route::plan(policies, cfg.unmatched, &parts.method, &target, &purpose)?;
        if let Some(r) = plan.resource() {
            ctx.policy = Some(Arc::clone(&r.policy));
            ctx.resource = Some(Arc::clone(&r.name));
            ctx.template = Some(Arc::clone(&r.template));
        }
        ctx.report = matches!(plan, Plan::Report { .. });
        // An erased customer's path is closed, whatever the method: nothing
        // of theirs is served, and nothing is written about them again.
        if self.consents.any_erased()
            && let Some(id) = plan
                .resource()
                .and_then(|r| r.subject_in_path(&target.path))
            && self.consents.is_erased(&id)
        {
            return Err(Refusal::RecordErased);
        }
        let reading = parts.method == Method::GET || parts.method == Method::HEAD;
        // Report mode forwards the request as it came (a read as an
        // inspected read: the answer must come whole and decodable).
        let inspected = match &plan {
            Plan::Inspect { .. } => true,
            Plan::Report { .. } => reading,
            Plan::Pass { .. } => false,
        };
        // A write about a customer needs their consent first; report mode
        // only notes the refusal (`before`).
        let mut before = None;
        let ruled = match &plan {
            Plan::Inspect { resource, rule }
            | Plan::Report {
                resource,
                rule: Some(rule),
                ..
            } => Some((resource, rule)),
            _ => None,
        };
        if let Some((resource, rule)) = ruled
            && let Some(check) = resource.write_consent(rule, &parts.method)
        {
            let checked =
                collect::check_subject(&self.consents, resource, check, &purpose, &target.path)
                    .await;
            match (&plan, checked) {
                (Plan::Report { .. }, Err(r)) => before = Some(r.slug()),
                (_, checked) => checked?,
            }
        }
        let mut target = target;
        let mut pending = None;
        let (up_body, too_large) = match &plan {
            Plan::Inspect { resource, rule } if collect::applies(&parts.method, resource) => {
                let vault = match (&resource.request_program, &self.keys) {
                    (Some(p), Some(keys)) if p.sealed => {
                        let (v, p) = encrypt::write_vault(keys, resource, p, &target.path).await?;
                        pending = p;
                        Some(Arc::new(v))
                    }
                    _ => None,
                };
                let (b, _removed, sealed) = collect::write_body(
                    &parts,
                    body,
                    resource,
                    rule,
                    &purpose,
                    &cfg.limits,
                    cfg.upstream.body_idle_timeout,
                    vault,
                )
                .await?;
                // A create's key is stored before anything sealed with it
                // leaves; a create that sealed nothing needs no key.
                ctx.sealed = sealed;
                pending = pending.filter(|_| sealed > 0);
                if let (Some(p), Some(keys)) = (&pending, &self.keys) {
                    encrypt::store_pending(keys, p).await?;
                }
                (b, None)
            }
            Plan::Inspect { resource, .. } if resource.search_rewrites() => {
                let keys = self.keys.as_ref().ok_or(Refusal::KeysUnavailable)?;
                let vault = encrypt::read_vault(keys, &resource.program).await?;
                if let Some(q) = &target.query
                    && let Some(q) = encrypt::search_query(&vault, resource, q)?
                {
                    target.query = Some(q);
                }
                if parts.method == Method::POST && resource.search_body() {
                    let idle = cfg.upstream.body_idle_timeout;
                    let data = collect::read_json(&parts, body, &cfg.limits, idle).await?;
                    let b = if data.is_empty() {
                        data.to_vec()
                    } else {
                        encrypt::search_body(&vault, resource, &data)?
                    };
                    (body::full(b), None)
                } else {
                    forward::body(&parts.method, body, cfg.limits.request_body)?
                }
            }
            _ => forward::body(&parts.method, body, cfg.limits.request_body)?,
        };
        let how = forward::Forward {
            inspected,
            decoded: !matches!(plan, Plan::Pass { .. }),
            https: cfg.tls.is_some(),
        };
        let up_req = forward::request(
            &cfg.upstream,
            &cfg.identity,
            &parts,
            &target,
            how,
            up_body,
            &ctx.id,
            ctx.peer,
        )?;
        let up_resp = match self.upstream.send(up_req).await {
            Ok(r) => r,
            Err(_) if too_large.is_some_and(|f| f.load(Ordering::Relaxed)) => {
                return Err(Refusal::RequestBodyTooLarge);
            }
            Err(SendError::Connect) => return Err(Refusal::UpstreamUnavailable),
            Err(SendError::Timeout) => return Err(Refusal::UpstreamTimeout),
            Err(SendError::Failed) => return Err(Refusal::UpstreamFailed),
        };
        let status = up_resp.status().as_u16();
        ctx.upstream_status = Some(status);
        let how = respond::How {
            limits: &cfg.limits,
            idle: cfg.upstream.body_idle_timeout,
            head: parts.method == Method::HEAD,
            http10: parts.version <= http::Version::HTTP_10,
            emitter: &self.emitter,
        };
        match plan {
            Plan::Inspect { resource, rule } => {
                ctx.disclosure = Some(Arc::clone(&rule.disclosure));
                let (consent, keys) = self
                    .record_sources(&resource, &rule, &parts.method, status, &purpose)
                    .await?;
                // A create's key is bound to the id in a successful answer.
                let bind = pending
                    .filter(|_| (200..300).contains(&status) && keys.is_some())
                    .map(encrypt::Pending::binding);
                let gate = self.released(RecordGate::new(consent, keys, bind));
                respond::inspect(ctx, &resource, &rule, gate, up_resp, how, None).await
            }
            Plan::Report {
                resource,
                rule,
                would,
            } => {
                // The answer leaves as stored (only erased customers are
                // withheld); the rule's own reading only counts.
                let keep = resource.keep.clone().ok_or(Refusal::Internal)?;
                ctx.disclosure = Some(Arc::clone(&keep.disclosure));
                let (analysed, sources) = match &rule {
                    Some(rule) => (
                        rule,
                        self.record_sources(&resource, rule, &parts.method, status, &purpose)
                            .await?,
                    ),
                    None => (&keep, (None, None)),
                };
                let mut analysis = respond::Analysis::new(
                    &resource,
                    analysed,
                    RecordGate::new(sources.0, sources.1, None),
                    &cfg.limits,
                    Arc::clone(&purpose),
                );
                // A refusal found before the answer (purpose not covered,
                // a write without consent); otherwise the reading decides.
                analysis.would_refuse(would.or(before));
                let gate = self.released(RecordGate::new(None, None, None));
                respond::inspect(ctx, &resource, &keep, gate, up_resp, how, Some(analysis)).await
            }
            Plan::Pass { resource } => {
                respond::pass(ctx, resource.as_deref(), up_resp, &cfg.limits, how.idle).await
            }
        }
    }
}

impl Gateway {
    /// What a rule's reading of an answer consults per record: the consent
    /// gate (when the rule's basis needs one) and the data keys (when the
    /// resource holds tokens).
    async fn record_sources(
        &self,
        resource: &crate::policy::Resource,
        rule: &crate::policy::Rule,
        method: &Method,
        status: u16,
        purpose: &Arc<str>,
    ) -> Result<
        (
            Option<ConsentGate>,
            Option<(Arc<Keys>, crate::keys::vault::Vault)>,
        ),
        Refusal,
    > {
        let consent = resource.consent_for(rule, method, status).map(|check| {
            ConsentGate::new(
                check,
                Arc::clone(purpose),
                self.consents.now(),
                Arc::clone(&self.consents),
            )
        });
        Ok((consent, self.read_keys(resource).await?))
    }

    /// The keys that open `resource`'s tokens in an answer, if it has any.
    async fn read_keys(
        &self,
        resource: &crate::policy::Resource,
    ) -> Result<Option<(Arc<Keys>, crate::keys::vault::Vault)>, Refusal> {
        Ok(match &self.keys {
            Some(k) if resource.program.sealed => Some((
                Arc::clone(k),
                encrypt::read_vault(k, &resource.program).await?,
            )),
            _ => None,
        })
    }

    /// The gate of the records that leave: erased customers withheld in
    /// every mode, and each record noted for the audit event.
    fn released(&self, gate: RecordGate) -> RecordGate {
        let gate = gate.suppress(&self.consents);
        if self.audit.is_some() {
            gate.collect_subjects()
        } else {
            gate
        }
    }
}

/// Makes sure every key the policies' deterministic categories need exists
/// and is cached, so that no request waits for one; refuses policies that
/// encrypt when there are no keys.
fn warm_keys(policies: &PolicySet, keys: Option<&Keys>) -> Result<(), String> {
    for r in policies.resources() {
        let programs = std::iter::once(&r.program).chain(r.request_program.as_ref());
        for p in programs {
            if !p.sealed {
                continue;
            }
            let Some(keys) = keys else {
                return Err(format!(
                    "resource `{}` of policy `{}` stores encrypted fields, but no master key is configured (keys.master_key_file)",
                    r.name, r.policy
                ));
            };
            crate::keys::vault::Vault::for_read(keys, &p.deterministic)
                .map_err(|e| format!("cannot make the encryption keys: {e}"))?;
        }
    }
    Ok(())
}

/// A create refused for its key binding: its record did not leave, so the
/// event names the customer as blocked and counts nothing disclosed (a
/// refusal's event lists no categories either, `audit_event`).
fn withhold(ctx: &mut Context) {
    for (_, o) in &mut ctx.subjects {
        *o = crate::transform::RecordOutcome::Block;
    }
    ctx.stats = Default::default();
    ctx.changed.clear();
}

/// Waits for a create's key binding (if any) to be stored.
async fn bound(ticket: Option<crate::keys::service::BindTicket>) -> Result<(), Refusal> {
    let Some(t) = ticket else {
        return Ok(());
    };
    match tokio::time::timeout(respond::LOOKUP_TIMEOUT, t.bound()).await {
        Ok(r) => r.map_err(gate::binding_failed),
        Err(_) => {
            tracing::warn!("a create's key binding timed out");
            Err(Refusal::KeysUnavailable)
        }
    }
}

/// The audit event of a request, from what the data path learned. A
/// streamed response is recorded as `streaming` before its first byte.
pub(crate) fn audit_event(ctx: &Context, audit: &Audit) -> Event {
    let name = |v: &Option<Arc<str>>| v.as_deref().map(str::to_owned);
    let s = &ctx.stats;
    let subjects = ctx
        .subjects
        .iter()
        .map(|(id, o)| SubjectEntry {
            subject: audit.pseudonym(id),
            record: match o {
                crate::transform::RecordOutcome::Keep => "shown",
                crate::transform::RecordOutcome::Redact => "redacted",
                crate::transform::RecordOutcome::Drop => "dropped",
                crate::transform::RecordOutcome::Block => "blocked",
                crate::transform::RecordOutcome::Suppress => "erased",
            }
            .to_owned(),
        })
        .collect();
    let counts = (s.records > 0 || ctx.sealed > 0).then(|| {
        // Values sealed into the request body are counted on the context.
        Counts::Request(crate::transform::Stats {
            sealed: ctx.sealed,
            ..*s
        })
    });
    Event {
        at: crate::clock::to_ms(ctx.received_at),
        kind: "request".into(),
        request_id: Some(ctx.id.as_str().to_owned()),
        client: name(&ctx.client),
        purpose: name(&ctx.purpose),
        method: Some(ctx.method.to_string()),
        route: name(&ctx.template),
        status: Some(ctx.status),
        decision: if ctx.streaming {
            "streaming".into()
        } else {
            ctx.outcome.as_str().into()
        },
        problem: ctx.problem.map(str::to_owned),
        subjects,
        counts,
        categories: ctx
            .disclosure
            .as_ref()
            .filter(|_| matches!(ctx.outcome, Outcome::Served | Outcome::Reported) || ctx.streaming)
            .cloned(),
        policy_version: Some(ctx.policy_version),
    }
}
