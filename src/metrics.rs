//! Prometheus metrics, served as text by the admin listener (`GET /metrics`).
//!
//! Every request's outcome reaches `Metrics::request` once (from `emit`),
//! so the counters agree with the access log and the audit trail. Labels
//! are route templates, never raw paths (those can hold customer ids).

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::proxy::context::{Context, Outcome};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: Arc<str>,
    decision: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: Arc<str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Kind {
    kind: &'static str,
}

/// `mode`: `enforce`, or `report` for what report mode counted (and did not do).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FieldLabels {
    kind: &'static str,
    mode: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CategoryLabels {
    category: Arc<str>,
    action: &'static str,
    mode: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConsentLabels {
    purpose: Arc<str>,
    kind: &'static str,
    mode: &'static str,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency() -> Histogram {
    // 0.25 ms to ~8 s.
    Histogram::new(exponential_buckets(0.000_25, 2.0, 16))
}

/// The gateway's metrics and the registry that renders them.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    duration: Histograms<RouteLabels>,
    fields: Family<FieldLabels, Counter>,
    categories: Family<CategoryLabels, Counter>,
    consent: Family<ConsentLabels, Counter>,
    upstream_errors: Family<Kind, Counter>,
    undecryptable: Counter,
    reloads: Family<Kind, Counter>,
    policy_version: Gauge,
    connections: Gauge,
    connections_refused: Counter,
    tls_failures: Counter,
    /// Audit events handed to the writer and not yet committed.
    pub audit_queue: Gauge,
    pub audit_commit: Histogram,
    pub audit_batch: Histogram,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("consentry");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Requests by route template, decision and status",
            requests.clone(),
        );
        let duration: Histograms<RouteLabels> = Family::new_with_constructor(latency);
        registry.register(
            "request_duration_seconds",
            "Time from request to response head (to the last byte for streamed responses)",
            duration.clone(),
        );
        let fields = Family::<FieldLabels, Counter>::default();
        registry.register(
            "fields",
            "Values the policies changed, by what was done (masked, hashed, redacted, removed, detected, opened, sealed)",
            fields.clone(),
        );
        let categories = Family::<CategoryLabels, Counter>::default();
        registry.register(
            "category_values",
            "Values of each data category the policies changed, by action (masked, hashed, redacted, removed)",
            categories.clone(),
        );
        let consent = Family::<ConsentLabels, Counter>::default();
        registry.register(
            "consent_refusals",
            "Consent refusals by purpose: records dropped or redacted, requests refused",
            consent.clone(),
        );
        let upstream_errors = Family::<Kind, Counter>::default();
        registry.register(
            "upstream_errors",
            "CRM failures: unavailable, timeout, failed (bad status), aborted mid-stream",
            upstream_errors.clone(),
        );
        let undecryptable = Counter::default();
        registry.register(
            "undecryptable_tokens",
            "Tokens withheld because they did not decrypt",
            undecryptable.clone(),
        );
        let reloads = Family::<Kind, Counter>::default();
        registry.register(
            "reloads",
            "Config and policy reloads, applied or refused",
            reloads.clone(),
        );
        let policy_version = Gauge::default();
        registry.register(
            "policy_version",
            "The serving policy version: 1 at start, one more per applied reload",
            policy_version.clone(),
        );
        policy_version.set(1);
        let connections = Gauge::default();
        registry.register(
            "connections_open",
            "Client connections open on the data listener",
            connections.clone(),
        );
        let connections_refused = Counter::default();
        registry.register(
            "connections_refused",
            "Client connections closed at once because `limits.max_connections` were open",
            connections_refused.clone(),
        );
        let tls_failures = Counter::default();
        registry.register(
            "tls_handshake_failures",
            "TLS handshakes that failed or timed out (including refused client certificates)",
            tls_failures.clone(),
        );
        let audit_queue = Gauge::default();
        registry.register(
            "audit_queue_depth",
            "Audit events waiting for their commit",
            audit_queue.clone(),
        );
        let audit_commit = Histogram::new(exponential_buckets(0.000_05, 2.0, 14));
        registry.register(
            "audit_commit_seconds",
            "Time of one group commit of the audit trail (fsync included)",
            audit_commit.clone(),
        );
        let audit_batch = Histogram::new(exponential_buckets(1.0, 2.0, 13));
        registry.register(
            "audit_batch_events",
            "Events per group commit",
            audit_batch.clone(),
        );
        Metrics {
            registry,
            requests,
            duration,
            fields,
            categories,
            consent,
            upstream_errors,
            undecryptable,
            reloads,
            policy_version,
            connections,
            connections_refused,
            tls_failures,
            audit_queue,
            audit_commit,
            audit_batch,
        }
    }

    /// The metrics in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// One request's outcome (`emit`, once per request).
    pub fn request(&self, ctx: &Context) {
        let route: Arc<str> = ctx.template.clone().unwrap_or_else(|| Arc::from("-"));
        let decision = if ctx.streaming && ctx.outcome == Outcome::Pending {
            "streaming"
        } else {
            ctx.outcome.as_str()
        };
        self.requests
            .get_or_create(&RequestLabels {
                route: Arc::clone(&route),
                decision,
                status: ctx.status,
            })
            .inc();
        self.duration
            .get_or_create(&RouteLabels { route })
            .observe(ctx.started.elapsed().as_secs_f64());
        let s = &ctx.stats;
        let mode = if ctx.report { "report" } else { "enforce" };
        for (kind, n) in [
            ("masked", s.masked),
            ("hashed", s.hashed),
            ("redacted", s.redacted),
            ("removed", s.removed),
            ("detected", s.detected),
            ("opened", s.opened),
            ("sealed", ctx.sealed),
        ] {
            if n > 0 {
                self.fields
                    .get_or_create(&FieldLabels { kind, mode })
                    .inc_by(n);
            }
        }
        for (category, counts) in &ctx.changed {
            for (action, n) in crate::transform::CATEGORY_ACTIONS.iter().zip(counts) {
                if *n > 0 {
                    self.categories
                        .get_or_create(&CategoryLabels {
                            category: Arc::clone(category),
                            action,
                            mode,
                        })
                        .inc_by(u64::from(*n));
                }
            }
        }
        // Report mode withholds nothing: its count is what enforcing would.
        if s.undecryptable > 0 && !ctx.report {
            self.undecryptable.inc_by(s.undecryptable);
        }
        if let Some(purpose) = &ctx.purpose {
            let consent = |kind, n| {
                if n > 0 {
                    self.consent
                        .get_or_create(&ConsentLabels {
                            purpose: Arc::clone(purpose),
                            kind,
                            mode,
                        })
                        .inc_by(n);
                }
            };
            consent("record_dropped", s.records_dropped);
            consent("record_redacted", s.records_redacted);
            if ctx.problem == Some("consent-required") {
                consent("request_refused", 1);
            }
        }
        let upstream = match ctx.problem {
            Some("upstream-unavailable") => Some("unavailable"),
            Some("upstream-timeout") => Some("timeout"),
            Some("upstream-failed") => Some("failed"),
            // A client that went away is not the CRM's failure.
            Some("client-gone") => None,
            _ if ctx.outcome == Outcome::Aborted => Some("aborted"),
            _ => None,
        };
        if let Some(kind) = upstream {
            self.upstream_errors.get_or_create(&Kind { kind }).inc();
        }
    }

    pub fn reload(&self, applied: bool, version: u64) {
        let kind = if applied { "applied" } else { "refused" };
        self.reloads.get_or_create(&Kind { kind }).inc();
        if applied {
            self.policy_version
                .set(i64::try_from(version).unwrap_or(i64::MAX));
        }
    }

    /// A connection opened; the guard counts it closed when dropped.
    pub fn connection(self: &Arc<Self>) -> ConnectionGuard {
        self.connections.inc();
        ConnectionGuard(Arc::clone(self))
    }

    /// Tokens withheld since start because they did not decrypt.
    pub fn undecryptable_tokens(&self) -> u64 {
        self.undecryptable.get()
    }

    pub fn connection_refused(&self) {
        self.connections_refused.inc();
    }

    pub fn tls_failure(&self) {
        self.tls_failures.inc();
    }
}

/// Counts an open connection until dropped.
#[derive(Debug)]
pub struct ConnectionGuard(Arc<Metrics>);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.connections.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_what_was_counted() {
        let m = Metrics::new();
        m.reload(true, 2);
        m.reload(false, 2);
        let text = m.render();
        assert!(
            text.contains("consentry_reloads_total{kind=\"applied\"} 1"),
            "{text}"
        );
        assert!(text.contains("consentry_policy_version 2"), "{text}");
        assert!(text.ends_with("# EOF\n"));
    }
}
