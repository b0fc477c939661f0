//! The one place an outcome leaves the data path: the access log line and
//! the metrics (the audit event is recorded before the response leaves).
//!
//! Logs name the route template, policy, resource, client and purpose, never
//! the raw path, query, headers or any body content: those can carry
//! personal data.

use super::context::Context;

#[derive(Debug, Default)]
pub struct Emitter {
    pub access: bool,
    /// The audit trail, for the final event of a streamed response (its
    /// first event was committed before its first byte).
    pub audit: Option<std::sync::Arc<crate::audit::writer::Audit>>,
    pub metrics: Option<std::sync::Arc<crate::metrics::Metrics>>,
}

impl Emitter {
    /// The end of a streamed response: access line, and its final audit
    /// event (how it ended, every customer it held). The data has left by
    /// now, so a failure to store it is logged, not answered.
    pub fn finish_stream(&self, ctx: &Context) {
        self.emit(ctx);
        if let Some(audit) = &self.audit {
            let audit = std::sync::Arc::clone(audit);
            let event = super::audit_event(ctx, &audit);
            tokio::spawn(async move {
                if let Err(e) = audit.record(event).await {
                    tracing::error!(error = %e, "the final audit event of a streamed response was not stored");
                }
            });
        }
    }

    pub fn emit(&self, ctx: &Context) {
        let ms = ctx.started.elapsed().as_secs_f64() * 1e3;
        if let Some(m) = &self.metrics {
            m.request(ctx);
        }
        let s = &ctx.stats;
        if s.undecryptable > 0 && !ctx.report {
            // Which record or field is not said: the route and the count only.
            tracing::warn!(
                target: "consentry::access",
                request_id = ctx.id.as_str(),
                route = ctx.template.as_deref().unwrap_or("-"),
                undecryptable = s.undecryptable,
                "tokens that do not decrypt were withheld (altered, moved, or their key destroyed)"
            );
        }
        let dash = || "-".to_owned();
        let name = |v: &Option<std::sync::Arc<str>>| v.as_deref().map_or_else(dash, str::to_owned);
        if ctx.status >= 500 || ctx.outcome == super::context::Outcome::Aborted {
            tracing::warn!(
                target: "consentry::access",
                request_id = ctx.id.as_str(),
                route = %name(&ctx.template),
                status = ctx.status,
                outcome = ctx.outcome.as_str(),
                problem = ctx.problem.unwrap_or("-"),
                "response not delivered whole"
            );
        }
        if !self.access {
            return;
        }
        tracing::info!(
            target: "consentry::access",
            request_id = ctx.id.as_str(),
            client = %name(&ctx.client),
            purpose = %name(&ctx.purpose),
            method = %ctx.method,
            policy = %name(&ctx.policy),
            resource = %name(&ctx.resource),
            route = %name(&ctx.template),
            status = ctx.status,
            upstream_status = ctx.upstream_status.unwrap_or(0),
            outcome = ctx.outcome.as_str(),
            problem = ctx.problem.unwrap_or("-"),
            records = s.records,
            records_dropped = s.records_dropped,
            masked = s.masked,
            hashed = s.hashed,
            redacted = s.redacted,
            removed = s.removed,
            detected = s.detected,
            sealed = ctx.sealed,
            opened = s.opened,
            tokens = s.tokens,
            undecryptable = s.undecryptable,
            bytes_out = ctx.bytes_out,
            duration_ms = format_args!("{ms:.2}"),
            "request"
        );
    }
}
