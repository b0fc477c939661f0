//! Per-request state: one `Context` is created when a request arrives, each
//! phase fills in what it learns, and the outcome (log line now, audit event
//! later) is built from it at the end.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime};

use http::Method;

use crate::transform::Stats;

/// A request id: kept from `X-Request-Id` when well-formed, else generated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(Arc<str>);

impl RequestId {
    /// Accepts 1 to 128 characters of `[A-Za-z0-9._:-]`.
    pub fn parse(s: &str) -> Option<RequestId> {
        let ok = !s.is_empty()
            && s.len() <= 128
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b':'));
        ok.then(|| RequestId(s.into()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Generates unique request ids: a random per-process prefix and a counter.
#[derive(Debug)]
pub struct RequestIds {
    prefix: String,
    next: AtomicU64,
}

impl RequestIds {
    pub fn new() -> RequestIds {
        let mut seed = [0u8; 6];
        // Without randomness the ids are still unique within this process.
        let _ = getrandom::fill(&mut seed);
        RequestIds {
            prefix: crate::config::hex(&seed),
            next: AtomicU64::new(1),
        }
    }

    pub fn next(&self) -> RequestId {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        // Hand-rolled hex: this runs on every request.
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut s = String::with_capacity(self.prefix.len() + 17);
        s.push_str(&self.prefix);
        s.push('-');
        let digits = (64 - n.leading_zeros()).div_ceil(4).max(8);
        for i in (0..digits).rev() {
            s.push(HEX[((n >> (i * 4)) & 15) as usize] as char);
        }
        RequestId(s.into())
    }
}

impl Default for RequestIds {
    fn default() -> Self {
        RequestIds::new()
    }
}

/// How a request ended, for logs and (later) the audit trail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Not finished yet.
    Pending,
    /// The response passed the policy (possibly rewritten).
    Served,
    /// Forwarded without inspection (passthrough).
    Passed,
    /// Refused by consentry, with the refusal's status.
    Refused,
    /// The response started streaming and was cut off.
    Aborted,
    /// `mode: report`: passed unchanged; the counts say what enforcing
    /// would have done, `problem` the refusal it would have made.
    Reported,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Pending => "pending",
            Outcome::Served => "served",
            Outcome::Passed => "passed",
            Outcome::Refused => "refused",
            Outcome::Aborted => "aborted",
            Outcome::Reported => "reported",
        }
    }
}

/// What the handler decided about a streamed response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Release {
    /// Its first audit event is being stored.
    Pending,
    /// It may leave; its end writes the outcome.
    Released,
    /// Replaced by a refusal (the event could not be stored), which is the
    /// outcome: its end writes nothing.
    Replaced,
}

/// Everything known about one request.
#[derive(Debug, Clone)]
pub struct Context {
    pub id: RequestId,
    pub started: Instant,
    pub received_at: SystemTime,
    pub peer: SocketAddr,
    pub method: Method,
    /// Policy, resource and route template, once matched (never the raw path).
    pub policy: Option<Arc<str>>,
    pub resource: Option<Arc<str>>,
    pub template: Option<Arc<str>>,
    pub client: Option<Arc<str>>,
    pub purpose: Option<Arc<str>>,
    pub upstream_status: Option<u16>,
    pub status: u16,
    pub outcome: Outcome,
    /// The refusal's problem type, when refused.
    pub problem: Option<&'static str>,
    pub stats: Stats,
    /// Values changed per data category (`transform::CATEGORY_ACTIONS`).
    pub changed: Vec<(Arc<str>, [u32; 4])>,
    /// Values of the request body written to the CRM as tokens.
    pub sealed: u64,
    /// The customers whose records the response held, and what became of
    /// each (for the audit event; collected only when auditing).
    pub subjects: Vec<(String, crate::transform::RecordOutcome)>,
    /// The rule's categories by action (`policy::disclosure`), once a rule applies.
    pub disclosure: Option<Arc<serde_json::Value>>,
    pub bytes_out: u64,
    /// The policy version the request started with.
    pub policy_version: u64,
    /// Decided by a policy in `mode: report`: what its counts say was not
    /// done.
    pub report: bool,
    /// The response streams: its end, not the handler, writes the outcome.
    pub streaming: bool,
    /// A streamed response's release, sent by the handler once its first
    /// audit event is stored (`Release`). Only the handler's context holds
    /// it: when the handler goes away unreleased, the stream learns so.
    pub release: Option<Arc<tokio::sync::watch::Sender<Release>>>,
    /// A create's key binding on its way to the store: the handler waits
    /// for it (beside the audit event's commit) before the answer leaves.
    pub binding: Option<crate::keys::service::BindTicket>,
}

impl Context {
    pub fn new(
        id: RequestId,
        peer: SocketAddr,
        method: Method,
        received_at: SystemTime,
    ) -> Context {
        Context {
            id,
            started: Instant::now(),
            received_at,
            peer,
            method,
            policy: None,
            resource: None,
            template: None,
            client: None,
            purpose: None,
            upstream_status: None,
            status: 0,
            outcome: Outcome::Pending,
            problem: None,
            stats: Stats::default(),
            changed: Vec::new(),
            sealed: 0,
            subjects: Vec::new(),
            disclosure: None,
            bytes_out: 0,
            policy_version: 0,
            streaming: false,
            release: None,
            binding: None,
            report: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids() {
        assert!(RequestId::parse("abc-DEF_1.2:3").is_some());
        for bad in ["", "a b", "x\u{e9}", "a\nb", &"a".repeat(129)] {
            assert!(RequestId::parse(bad).is_none(), "{bad:?}");
        }
        let ids = RequestIds::new();
        let (a, b) = (ids.next(), ids.next());
        assert_ne!(a, b);
        assert!(RequestId::parse(a.as_str()).is_some());
    }
}
