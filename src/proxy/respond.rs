//! Phases 5-7: check what the CRM sent, decode it, rewrite it, and stream it.
//!
//! On an inspected route nothing leaves before it has been checked: the
//! status, content type and encoding are checked first, then the body runs
//! through the decoder and the rewriter. Bodies up to `limits.stream_after`
//! are checked whole before the response head is sent, so any problem is a
//! clean 502 with none of the CRM's bytes. Larger bodies stream record by
//! record; a problem after the first byte cuts the connection, so the client
//! sees an incomplete response rather than unchecked data.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Response, StatusCode, header};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Incoming;

use super::body::{self, Body, BoxError};
use super::context::{Context, Outcome, Release};
use super::decode::{DecodeError, Decoder};
use super::emit::Emitter;
use super::forward::filter_headers;
use super::gate::RecordGate;
use super::reject::Refusal;
use crate::config::Limits;
use crate::consent::Consents;
use crate::consent::model::SubjectConsents;
use crate::consent::store::StoreError;
use crate::policy::{Resource, Rule, SENSITIVE_RESPONSE_HEADERS};
use crate::transform::{self, Rewriter, TransformError};

/// Response headers that describe the CRM's bytes, not ours.
const BODY_DESCRIBING: &[&str] = &[
    "content-length",
    "content-encoding",
    "etag",
    "content-md5",
    "digest",
    "content-digest",
    "repr-digest",
    "content-range",
    "accept-ranges",
];

/// The response headers a client may see.
fn response_headers(
    src: &HeaderMap,
    resource: Option<&Resource>,
    inspected: bool,
    ctx: &Context,
) -> HeaderMap {
    let mut drop: Vec<&str> = SENSITIVE_RESPONSE_HEADERS
        .iter()
        .copied()
        .filter(|name| {
            !resource.is_some_and(|r| r.response_headers.iter().any(|a| a.as_str() == *name))
        })
        .collect();
    if inspected {
        drop.extend_from_slice(BODY_DESCRIBING);
    }
    let mut h = filter_headers(src, &[], &drop, "");
    if inspected {
        // The body depends on the caller and purpose: no shared or stale copies.
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("none"));
    }
    h.append(header::VIA, HeaderValue::from_static("1.1 consentry"));
    if let Ok(v) = HeaderValue::from_str(ctx.id.as_str()) {
        h.insert(super::forward::X_REQUEST_ID, v);
    }
    h
}

/// A rewriting failure as a refusal; a blocked record is always a consent
/// outcome (no other check blocks records).
fn from_transform(e: TransformError, purpose: &str) -> Refusal {
    match e {
        TransformError::Malformed { kind, .. } => Refusal::MalformedJson(kind),
        TransformError::TooLarge { .. } => Refusal::ResponseTooLarge,
        TransformError::Blocked { .. } => Refusal::ConsentRequired {
            purpose: purpose.to_owned(),
            write: false,
        },
        TransformError::Erased { .. } => Refusal::RecordErased,
        TransformError::Seal => Refusal::KeysUnavailable,
        TransformError::TokenAsValue => Refusal::Internal,
    }
}

fn from_decode(e: DecodeError) -> Refusal {
    match e {
        DecodeError::Unsupported => Refusal::UnsupportedEncoding,
        DecodeError::TooLarge => Refusal::ResponseTooLarge,
        DecodeError::Corrupt => Refusal::DecompressionFailed,
    }
}

/// Deferred records are settled once this much of the body is held (or at
/// its end), so that a list costs one batched store lookup per this many
/// bytes, not one per record.
const SETTLE_AT: usize = 256 << 10;

/// Fetches what `rw`'s waiting records need (one batch) and resumes it.
/// Blocking: call it on a blocking-pool thread.
fn settle_blocking(
    rw: &mut Rewriter,
    gate: &mut RecordGate,
    out: &mut Vec<u8>,
    purpose: &str,
) -> Result<(), Refusal> {
    let needs = gate.needs(rw);
    if !needs.is_empty() {
        let (consents, keys) = gate.sources();
        gate.learn(RecordGate::fetch(needs, consents, keys)?);
    }
    resume(rw, gate, out, purpose)
}

/// The pieces `data` is fed in: bounded while records may wait, so that
/// they are settled every `settle_at` bytes.
fn piece_len(gate: &RecordGate, settle_at: usize) -> usize {
    if gate.defers() {
        FEED.min(settle_at).max(1)
    } else {
        FEED
    }
}

/// Rewrites `data` into `out` piece by piece, settling waiting records
/// once `settle_at` bytes are held. Blocking (the settling reads stores).
fn push_blocking(
    rw: &mut Rewriter,
    gate: &mut RecordGate,
    data: &[u8],
    settle_at: usize,
    out: &mut Vec<u8>,
    purpose: &str,
) -> Result<(), Refusal> {
    for piece in data.chunks(piece_len(gate, settle_at)) {
        rw.push(piece, gate, out)
            .map_err(|e| from_transform(e, purpose))?;
        if gate.defers() && rw.pending() > 0 && rw.held() >= settle_at {
            settle_blocking(rw, gate, out, purpose)?;
        }
    }
    Ok(())
}

/// The end of a body: the last records, settled. Blocking.
fn finish_blocking(
    rw: &mut Rewriter,
    gate: &mut RecordGate,
    out: &mut Vec<u8>,
    purpose: &str,
) -> Result<(), Refusal> {
    rw.finish(gate, out)
        .map_err(|e| from_transform(e, purpose))?;
    if rw.pending() > 0 {
        settle_blocking(rw, gate, out, purpose)?;
    }
    Ok(())
}

/// Rewrites a whole body at once, settling every record in one batch (the
/// record of a subject access report). Blocking.
pub(super) fn render_blocking(
    resource: &Resource,
    rule: &Rule,
    mut gate: RecordGate,
    body: &[u8],
    limits: &crate::config::Limits,
) -> Result<Vec<u8>, Refusal> {
    let tlimits = transform::Limits {
        max_depth: limits.json_depth,
        max_buffer: limits.record,
    };
    let mut rw = Rewriter::new(
        Arc::clone(&resource.program),
        Arc::clone(&rule.table),
        tlimits,
    );
    let purpose = &*rule.purpose;
    let mut out = Vec::with_capacity(body.len());
    rw.push(body, &mut gate, &mut out)
        .map_err(|e| from_transform(e, purpose))?;
    finish_blocking(&mut rw, &mut gate, &mut out, purpose)?;
    Ok(out)
}

fn lookup_failed(e: StoreError) -> Refusal {
    tracing::warn!(error = %e, "consent lookup failed");
    Refusal::ConsentUnavailable
}

/// Fetches `subjects`' consent in one batch on a blocking-pool thread, for
/// at most `LOOKUP_TIMEOUT`; any failure refuses (503).
pub(super) async fn lookup(
    consents: Arc<Consents>,
    subjects: Vec<String>,
) -> Result<HashMap<String, Arc<SubjectConsents>>, Refusal> {
    let fetch = tokio::task::spawn_blocking(move || consents.fetch(&subjects));
    tokio::time::timeout(LOOKUP_TIMEOUT, fetch)
        .await
        .map_err(|_| {
            tracing::warn!("consent lookup timed out");
            Refusal::ConsentUnavailable
        })?
        .map_err(|_| Refusal::Internal)?
        .map_err(lookup_failed)
}

fn resume(
    rw: &mut Rewriter,
    gate: &mut RecordGate,
    out: &mut Vec<u8>,
    purpose: &str,
) -> Result<(), Refusal> {
    rw.resume(gate, out)
        .map_err(|e| from_transform(e, purpose))?;
    if rw.pending() > 0 {
        // Every subject was fetched: nothing may still wait.
        return Err(Refusal::Internal);
    }
    Ok(())
}

/// The next frame of the CRM's body, waiting at most `idle` for it. A frame
/// that is already buffered is taken without arming a timer: timers cost a
/// few percent of a small request, and most frames of a small body are there.
async fn next_frame(
    body: &mut Incoming,
    idle: Duration,
) -> Result<Option<Result<Frame<Bytes>, hyper::Error>>, tokio::time::error::Elapsed> {
    use std::future::Future;
    use std::task::Poll;
    let mut fut = std::pin::pin!(body.frame());
    let first = std::future::poll_fn(|cx| Poll::Ready(fut.as_mut().poll(cx))).await;
    match first {
        Poll::Ready(frame) => Ok(frame),
        Poll::Pending => tokio::time::timeout(idle, fut).await,
    }
}

/// Upstream body -> decoder -> rewriter -> output chunks.
struct Pipeline {
    upstream: Incoming,
    decoder: Decoder,
    /// `None` only while a chunk is being rewritten on another thread.
    rewriter: Option<Box<Rewriter>>,
    /// `None` only while a chunk is being rewritten on another thread.
    gate: Option<RecordGate>,
    purpose: Arc<str>,
    /// Deferred records are settled once the rewriter holds this much.
    settle_at: usize,
    /// Compressed bytes read from the CRM.
    read: u64,
    /// Decoded bytes handed to the rewriter.
    fed: u64,
    limit: u64,
    idle: Duration,
    decoded: Vec<u8>,
    done: bool,
    /// Report mode: the rule's own reading, which only counts.
    analysis: Option<Box<Analysis>>,
    /// Report mode (the analysis may have been given up: `lost`).
    reported: bool,
    /// Why report mode's analysis was given up (a consent lookup that
    /// took too long): the answer still goes out, as report mode promises.
    lost: Option<&'static str>,
}

/// Report mode's second reading of a response: the rule's rewriter and the
/// consent gate, on a copy of what the client gets unchanged. Its output is
/// dropped; it counts what enforcing would have done and remembers the
/// refusal enforcing would have made. Runs where the answer is read, or
/// on a blocking-pool thread when its gate reads the consent store.
pub struct Analysis {
    rewriter: Rewriter,
    gate: RecordGate,
    purpose: Arc<str>,
    settle_at: usize,
    /// The refusal enforcing would have made; reading stops there.
    would: Option<&'static str>,
    /// Where the reading's output goes, emptied after each read.
    sink: Vec<u8>,
}

impl std::fmt::Debug for Analysis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Analysis")
            .field("would", &self.would)
            .finish_non_exhaustive()
    }
}

impl Analysis {
    pub fn new(
        resource: &Resource,
        rule: &Rule,
        gate: RecordGate,
        limits: &Limits,
        purpose: Arc<str>,
    ) -> Analysis {
        let tlimits = transform::Limits {
            max_depth: limits.json_depth,
            max_buffer: limits.record,
        };
        Analysis {
            rewriter: Rewriter::new(
                Arc::clone(&resource.program),
                Arc::clone(&rule.table),
                tlimits,
            ),
            gate,
            purpose,
            settle_at: SETTLE_AT.min(limits.record / 2),
            would: None,
            sink: Vec::new(),
        }
    }

    /// Records a refusal enforcing would have made before the answer (a
    /// purpose not covered, a write without consent); nothing is read then.
    pub fn would_refuse(&mut self, slug: Option<&'static str>) {
        if slug.is_some() {
            self.would = slug;
        }
    }

    /// Reads `data`, or the end with `None`; its output is dropped.
    /// Blocking when its gate defers (store lookups).
    fn read(&mut self, data: Option<&[u8]>) {
        if self.would.is_some() {
            return;
        }
        let (rw, gate, purpose, sink) = (
            &mut self.rewriter,
            &mut self.gate,
            &*self.purpose,
            &mut self.sink,
        );
        let r = match data {
            Some(d) => push_blocking(rw, gate, d, self.settle_at, sink, purpose),
            None => finish_blocking(rw, gate, sink, purpose),
        };
        sink.clear();
        if let Err(e) = r {
            self.would = Some(e.slug());
        }
    }
}

/// A consent lookup that takes longer fails the response closed (503).
pub(super) const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

/// How long records waiting for a consent lookup wait for the CRM's next
/// frame before they are settled without it.
const SETTLE_WAIT: Duration = Duration::from_millis(5);

/// The rewriter never sees more than this at once (decoders can expand a lot).
const FEED: usize = 64 << 10;

/// Past this many bytes of one body, chunks of at least `OFFLOAD_CHUNK` are
/// rewritten on a blocking-pool thread, so that a large export's rewriting
/// overlaps with this thread's socket reads and writes. Small and medium
/// bodies never pay for the hand-off.
const OFFLOAD_AFTER: u64 = 1 << 20;
const OFFLOAD_CHUNK: usize = 32 << 10;

impl Pipeline {
    fn refusal(&self, e: TransformError) -> Refusal {
        from_transform(e, &self.purpose)
    }

    /// Hands `data` (or the end, with `None`) to report mode's analysis.
    async fn analyse(&mut self, data: Option<&[u8]>) -> Result<(), Refusal> {
        let Some(mut a) = self.analysis.take() else {
            return Ok(());
        };
        if a.would.is_some() {
            self.analysis = Some(a);
            return Ok(());
        }
        // Without store lookups the reading is only CPU: done here, as the
        // answer's own rewriting is.
        if !a.gate.defers() {
            a.read(data);
            self.analysis = Some(a);
            return Ok(());
        }
        let data = data.map(<[u8]>::to_vec);
        let task = tokio::task::spawn_blocking(move || {
            a.read(data.as_deref());
            a
        });
        // Its consent lookups get the time enforcing would give them.
        match tokio::time::timeout(LOOKUP_TIMEOUT, task).await {
            Ok(Ok(a)) => self.analysis = Some(a),
            Ok(Err(_)) => return Err(Refusal::Internal),
            Err(_) => {
                tracing::warn!(
                    "report mode: a consent lookup timed out; the answer is not analysed further"
                );
                self.lost = Some(Refusal::ConsentUnavailable.slug());
            }
        }
        Ok(())
    }

    /// What enforcing would have done (report mode) or did: the counts,
    /// and the refusal enforcing would have made.
    fn outcome(&self) -> (Outcome, transform::Stats, Option<&'static str>) {
        match (&self.analysis, self.reported) {
            (Some(a), _) => (Outcome::Reported, a.rewriter.stats(), a.would),
            (None, true) => (Outcome::Reported, transform::Stats::default(), self.lost),
            (None, false) => (Outcome::Served, self.stats(), None),
        }
    }

    /// Values changed per data category (by the analysis in report mode).
    fn changed(&self) -> Vec<(Arc<str>, [u32; 4])> {
        let rw = match &self.analysis {
            Some(a) => Some(&a.rewriter),
            None => self.rewriter.as_deref(),
        };
        rw.map(|rw| {
            rw.category_counts()
                .map(|(c, n)| (Arc::clone(c), n))
                .collect()
        })
        .unwrap_or_default()
    }

    /// The next output chunk; `None` at the end.
    async fn next(&mut self) -> Result<Option<Bytes>, Refusal> {
        loop {
            if self.done {
                return Ok(None);
            }
            // Records waiting for a consent lookup are settled when the CRM
            // has nothing more to send for a moment (SETTLE_WAIT): a list
            // sent in several frames, microseconds apart, is one lookup, and
            // a paused CRM never holds back records that could be sent.
            // Without waiting records this is the plain frame read.
            let frame = if self.waiting() {
                match tokio::time::timeout(SETTLE_WAIT, self.upstream.frame()).await {
                    Ok(f) => Ok(f),
                    Err(_) => {
                        let mut out = Vec::new();
                        self.settle(&mut out, true).await?;
                        if !out.is_empty() {
                            return Ok(Some(Bytes::from(out)));
                        }
                        next_frame(&mut self.upstream, self.idle).await
                    }
                }
            } else {
                next_frame(&mut self.upstream, self.idle).await
            };
            let frame = match frame {
                Err(_) => return Err(Refusal::UpstreamTimeout),
                Ok(Some(Err(_))) => return Err(Refusal::UpstreamFailed),
                Ok(Some(Ok(f))) => f,
                Ok(None) => {
                    self.done = true;
                    let mut out = Vec::new();
                    if self.read == 0 {
                        // No body at all: nothing to inspect, nothing to send.
                        return Ok(None);
                    }
                    self.decoded.clear();
                    self.decoder
                        .finish(&mut self.decoded)
                        .map_err(from_decode)?;
                    let tail = std::mem::take(&mut self.decoded);
                    self.feed(&tail, &mut out).await?;
                    self.analyse(None).await?;
                    let (rw, gate) = self.parts()?;
                    let r = rw.finish(gate, &mut out);
                    r.map_err(|e| self.refusal(e))?;
                    self.settle(&mut out, true).await?;
                    return Ok((!out.is_empty()).then(|| Bytes::from(out)));
                }
            };
            let Ok(data) = frame.into_data() else {
                continue;
            };
            self.read += data.len() as u64;
            if self.read > self.limit {
                return Err(Refusal::ResponseTooLarge);
            }
            // Rewriting rarely grows a chunk: one allocation per chunk.
            let mut out = Vec::with_capacity(data.len() + 1024);
            if self.decoder.is_identity()
                && self.fed >= OFFLOAD_AFTER
                && data.len() >= OFFLOAD_CHUNK
            {
                out = self.feed_elsewhere(data, out).await?;
            } else if self.decoder.is_identity() {
                self.feed(&data, &mut out).await?;
            } else {
                let mut decoded = std::mem::take(&mut self.decoded);
                decoded.clear();
                self.decoder
                    .push(&data, &mut decoded)
                    .map_err(from_decode)?;
                self.feed(&decoded, &mut out).await?;
                self.decoded = decoded;
            }
            if !out.is_empty() {
                return Ok(Some(Bytes::from(out)));
            }
        }
    }

    /// How much the rewriter is given at once. Under a consent gate at most
    /// `settle_at`, so that waiting records never hold more than
    /// `2 * settle_at <= limits.record` before they are settled.
    fn piece_len(&self) -> usize {
        self.gate
            .as_ref()
            .map_or(FEED, |g| piece_len(g, self.settle_at))
    }

    /// Whether records wait for a consent lookup.
    fn waiting(&self) -> bool {
        self.gate.as_ref().is_some_and(|g| g.defers())
            && self.rewriter.as_ref().is_some_and(|rw| rw.pending() > 0)
    }

    fn parts(&mut self) -> Result<(&mut Rewriter, &mut RecordGate), Refusal> {
        match (self.rewriter.as_deref_mut(), self.gate.as_mut()) {
            (Some(rw), Some(g)) => Ok((rw, g)),
            _ => Err(Refusal::Internal),
        }
    }

    async fn feed(&mut self, data: &[u8], out: &mut Vec<u8>) -> Result<(), Refusal> {
        self.analyse(Some(data)).await?;
        self.fed += data.len() as u64;
        let piece_len = self.piece_len();
        for piece in data.chunks(piece_len) {
            let (rw, gate) = self.parts()?;
            let r = rw.push(piece, gate, out);
            r.map_err(|e| self.refusal(e))?;
            self.settle(out, false).await?;
        }
        Ok(())
    }

    /// Settles deferred consent decisions: when `now` (the body ended, or the
    /// CRM has nothing ready), or once the held bytes reach `settle_at`. The
    /// store is read on a blocking-pool thread.
    async fn settle(&mut self, out: &mut Vec<u8>, now: bool) -> Result<(), Refusal> {
        let purpose = Arc::clone(&self.purpose);
        let settle_at = self.settle_at;
        let (rw, gate) = self.parts()?;
        if !gate.defers() || rw.pending() == 0 || (!now && rw.held() < settle_at) {
            return Ok(());
        }
        let needs = gate.needs(rw);
        if !needs.is_empty() {
            let (consents, keys) = gate.sources();
            let fetch =
                tokio::task::spawn_blocking(move || RecordGate::fetch(needs, consents, keys));
            let got = tokio::time::timeout(LOOKUP_TIMEOUT, fetch)
                .await
                .map_err(|_| {
                    tracing::warn!("consent or key lookup timed out");
                    Refusal::ConsentUnavailable
                })?
                .map_err(|_| Refusal::Internal)??;
            let (_, gate) = self.parts()?;
            gate.learn(got);
        }
        let (rw, gate) = self.parts()?;
        resume(rw, gate, out, &purpose)
    }

    /// `feed` on a blocking-pool thread (which may also read the consent
    /// store). Report mode's reading goes along unless it reads a store
    /// itself (then `analyse` gives it its own thread and time limit).
    async fn feed_elsewhere(&mut self, data: Bytes, mut out: Vec<u8>) -> Result<Vec<u8>, Refusal> {
        let mut along = self.analysis.take_if(|a| !a.gate.defers());
        if along.is_none() {
            self.analyse(Some(&data)).await?;
        }
        self.fed += data.len() as u64;
        let mut rw = self.rewriter.take().ok_or(Refusal::Internal)?;
        let mut gate = self.gate.take().ok_or(Refusal::Internal)?;
        let purpose = Arc::clone(&self.purpose);
        let settle_at = self.settle_at;
        let (rw, gate, along, result) = tokio::task::spawn_blocking(move || {
            if let Some(a) = along.as_mut() {
                a.read(Some(&data));
            }
            let r = push_blocking(&mut rw, &mut gate, &data, settle_at, &mut out, &purpose);
            (rw, gate, along, r.map(|()| out))
        })
        .await
        .map_err(|_| Refusal::Internal)?;
        self.rewriter = Some(rw);
        self.gate = Some(gate);
        if along.is_some() {
            self.analysis = along;
        }
        result
    }

    fn stats(&self) -> transform::Stats {
        self.rewriter
            .as_ref()
            .map(|r| r.stats())
            .unwrap_or_default()
    }
}

/// How an answer is read: the limits, the CRM's body idle timeout, whether
/// the request was HEAD or HTTP/1.0 (no streaming), where outcomes go.
#[derive(Clone, Copy, Debug)]
pub struct How<'a> {
    pub limits: &'a Limits,
    pub idle: Duration,
    pub head: bool,
    pub http10: bool,
    pub emitter: &'a Arc<Emitter>,
}

/// Answers from an upstream response on an inspected route.
pub async fn inspect(
    ctx: &mut Context,
    resource: &Arc<Resource>,
    rule: &Arc<Rule>,
    gate: RecordGate,
    resp: Response<Incoming>,
    how: How<'_>,
    analysis: Option<Analysis>,
) -> Result<Response<Body>, Refusal> {
    let How {
        limits,
        idle,
        head,
        http10,
        emitter,
    } = how;
    let served = if analysis.is_some() {
        Outcome::Reported
    } else {
        Outcome::Served
    };
    let (parts, mut incoming) = resp.into_parts();
    // A create's key is bound to the id in the answer's body: an answer
    // without one cannot be released as a success.
    let binding = gate.binding();
    let unbound = || {
        tracing::warn!("the CRM's answer to a create names no id: its key cannot be bound");
        Refusal::KeyBinding
    };
    match parts.status {
        StatusCode::PARTIAL_CONTENT => return Err(Refusal::PartialContent),
        StatusCode::NOT_MODIFIED => return Err(Refusal::UnexpectedNotModified),
        s if s.is_informational() => return Err(Refusal::UpstreamFailed),
        _ => {}
    }
    let headers = response_headers(&parts.headers, Some(resource), true, ctx);
    let status = parts.status;
    let reply = move |body: Body, len: Option<usize>| {
        let mut r = Response::new(body);
        *r.status_mut() = status;
        *r.headers_mut() = headers;
        if let Some(n) = len {
            r.headers_mut()
                .insert(header::CONTENT_LENGTH, HeaderValue::from(n));
        }
        r
    };
    if parts.status == StatusCode::NO_CONTENT || parts.status == StatusCode::RESET_CONTENT {
        if binding {
            return Err(unbound());
        }
        ctx.outcome = served;
        ctx.problem = analysis.as_ref().and_then(|a| a.would);
        return Ok(reply(body::empty(), None));
    }
    if !body::is_json(&parts.headers) {
        // Only an empty body may come without a JSON content type.
        loop {
            match next_frame(&mut incoming, idle).await {
                Err(_) => return Err(Refusal::UpstreamTimeout),
                Ok(None) => {
                    if binding {
                        return Err(unbound());
                    }
                    ctx.outcome = served;
                    ctx.problem = analysis.as_ref().and_then(|a| a.would);
                    return Ok(reply(body::empty(), Some(0)));
                }
                Ok(Some(Err(_))) => return Err(Refusal::UpstreamFailed),
                Ok(Some(Ok(f))) => {
                    if f.data_ref().is_some_and(|d| !d.is_empty()) {
                        return Err(Refusal::NotJson);
                    }
                }
            }
        }
    }
    let decoder =
        Decoder::for_headers(&parts.headers, limits.decompressed_body).map_err(from_decode)?;
    let tlimits = transform::Limits {
        max_depth: limits.json_depth,
        max_buffer: limits.record,
    };
    let mut pipe = Pipeline {
        upstream: incoming,
        decoder,
        rewriter: Some(Box::new(Rewriter::new(
            Arc::clone(&resource.program),
            Arc::clone(&rule.table),
            tlimits,
        ))),
        gate: Some(gate),
        purpose: ctx
            .purpose
            .clone()
            .unwrap_or_else(|| Arc::clone(&rule.purpose)),
        settle_at: SETTLE_AT.min(limits.record / 2),
        read: 0,
        fed: 0,
        limit: limits.response_body,
        idle,
        decoded: Vec::new(),
        done: false,
        reported: analysis.is_some(),
        analysis: analysis.map(Box::new),
        lost: None,
    };
    // Check the first `stream_after` bytes of the body (all of it, for HEAD)
    // before answering.
    let mut first: VecDeque<Bytes> = VecDeque::new();
    let mut held = 0usize;
    let mut empty_upstream = true;
    // A create's answer is held until its id is read and the binding
    // started (its ticket must reach the handler), however long it is
    // (up to the record and body limits).
    let binding_pending = |p: &Pipeline| p.gate.as_ref().is_some_and(|g| g.binding());
    while head || pipe.fed < limits.stream_after as u64 || binding_pending(&pipe) {
        let next = match pipe.next().await {
            Ok(n) => n,
            Err(e) => {
                // A refused response names whom it withheld, and why.
                if let Some(g) = pipe.gate.as_mut() {
                    ctx.subjects = g.take_seen();
                }
                return Err(e);
            }
        };
        match next {
            Some(b) => {
                empty_upstream = false;
                held += b.len();
                if !head {
                    first.push_back(b);
                }
            }
            None => break,
        }
    }
    if binding_pending(&pipe) {
        // The answer held no record to read an id from (empty, `[]`, a
        // scalar).
        return Err(unbound());
    }
    if let Some(g) = pipe.gate.as_mut() {
        ctx.subjects = g.take_seen();
        ctx.binding = g.take_ticket();
    }
    if pipe.done {
        let (outcome, stats, would) = pipe.outcome();
        ctx.stats = stats;
        ctx.changed = pipe.changed();
        ctx.outcome = outcome;
        ctx.problem = would;
        ctx.bytes_out = held as u64;
        if empty_upstream && pipe.read == 0 {
            // An empty body carries nothing to inspect.
            return Ok(reply(body::empty(), Some(0)));
        }
        if head {
            return Ok(reply(body::empty(), Some(held)));
        }
        let whole: Bytes = if first.len() == 1 {
            first.pop_front().unwrap_or_default()
        } else {
            let mut v = Vec::with_capacity(held);
            first.iter().for_each(|b| v.extend_from_slice(b));
            Bytes::from(v)
        };
        return Ok(reply(body::full(whole), Some(held)));
    }
    if http10 {
        return Err(Refusal::StreamingUnavailable);
    }
    // Stream the rest; the finisher writes the access line when the stream ends.
    ctx.status = parts.status.as_u16();
    ctx.streaming = true;
    let (release, released) = tokio::sync::watch::channel(Release::Pending);
    // The stream's copy of the context does not hold the sender: if the
    // handler goes away before releasing, the stream hears of it. (The
    // binding is the handler's to wait for.)
    let mine = Context {
        release: None,
        binding: None,
        ..ctx.clone()
    };
    ctx.release = Some(Arc::new(release));
    let finisher = Finisher {
        ctx: Some(mine),
        emitter: Arc::clone(emitter),
        sent: held as u64,
        changed: Vec::new(),
        released,
    };
    Ok(reply(streaming(first, pipe, finisher), None))
}

/// Writes the access line when a streamed response ends, however it ends.
struct Finisher {
    ctx: Option<Context>,
    emitter: Arc<Emitter>,
    sent: u64,
    changed: Vec<(Arc<str>, [u32; 4])>,
    /// The handler's release of the response (`Context::release`).
    released: tokio::sync::watch::Receiver<Release>,
}

impl Finisher {
    /// Waits until the handler has released the response (its first audit
    /// event stored). False if it replaced it (nothing more is written), or
    /// went away first (the client left: that is the outcome written).
    async fn settled(&mut self) -> bool {
        let decided = self
            .released
            .wait_for(|s| *s != Release::Pending)
            .await
            .map(|s| *s);
        match decided {
            Ok(Release::Released) => true,
            Ok(_) => {
                self.ctx = None;
                false
            }
            Err(_) => {
                self.end(
                    Outcome::Aborted,
                    transform::Stats::default(),
                    Some("client-gone"),
                );
                false
            }
        }
    }

    fn end(&mut self, outcome: Outcome, stats: transform::Stats, problem: Option<&'static str>) {
        self.end_with(outcome, stats, problem, Vec::new());
    }

    fn end_with(
        &mut self,
        outcome: Outcome,
        stats: transform::Stats,
        problem: Option<&'static str>,
        subjects: Vec<(String, transform::RecordOutcome)>,
    ) {
        if *self.released.borrow() == Release::Replaced {
            // Replaced by the handler, which wrote the refusal.
            self.ctx = None;
        }
        if let Some(mut ctx) = self.ctx.take() {
            ctx.outcome = outcome;
            ctx.stats = stats;
            ctx.problem = problem;
            ctx.bytes_out = self.sent;
            ctx.streaming = false;
            ctx.changed = std::mem::take(&mut self.changed);
            ctx.subjects.extend(subjects);
            self.emitter.finish_stream(&ctx);
        }
    }
}

impl Drop for Finisher {
    fn drop(&mut self) {
        // The client went away before the end.
        self.end(
            Outcome::Aborted,
            transform::Stats::default(),
            Some("client-gone"),
        );
    }
}

#[derive(Debug, thiserror::Error)]
#[error("response cut off: {0}")]
struct CutOff(&'static str);

/// Streams the rest of a response. A task of its own runs the pipeline a
/// couple of chunks ahead of the client, so that reading from the CRM and
/// rewriting overlap with writing to the client.
fn streaming(first: VecDeque<Bytes>, mut pipe: Pipeline, mut finisher: Finisher) -> Body {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, &'static str>>(2);
    tokio::spawn(async move {
        loop {
            match pipe.next().await {
                Ok(Some(b)) => {
                    let n = b.len() as u64;
                    if tx.send(Ok(b)).await.is_err() {
                        // The client went away; the finisher records it.
                        return;
                    }
                    finisher.sent += n;
                }
                Ok(None) => {
                    let seen = pipe
                        .gate
                        .as_mut()
                        .map(|g| g.take_seen())
                        .unwrap_or_default();
                    let (outcome, stats, would) = pipe.outcome();
                    finisher.changed = pipe.changed();
                    if finisher.settled().await {
                        finisher.end_with(outcome, stats, would, seen);
                    }
                    return;
                }
                Err(r) => {
                    // Not a clean end: the connection is cut so the client
                    // cannot mistake the partial body for a whole one.
                    let seen = pipe
                        .gate
                        .as_mut()
                        .map(|g| g.take_seen())
                        .unwrap_or_default();
                    if finisher.settled().await {
                        finisher.end_with(Outcome::Aborted, pipe.stats(), Some(r.slug()), seen);
                    }
                    let _ = tx.send(Err(r.slug())).await;
                    return;
                }
            }
        }
    });
    let head =
        futures_util::stream::iter(first.into_iter().map(|b| Ok::<_, BoxError>(Frame::data(b))));
    let rest = futures_util::stream::unfold(rx, |mut rx| async move {
        match rx.recv().await? {
            Ok(b) => Some((Ok(Frame::data(b)), rx)),
            Err(slug) => Some((Err(Box::new(CutOff(slug)) as BoxError), rx)),
        }
    });
    StreamBody::new(futures_util::StreamExt::chain(head, rest)).boxed_unsync()
}

/// Answers from an upstream response on a passthrough route: status, body
/// and encoding unchanged; hop-by-hop and personal-data headers still filtered.
pub async fn pass(
    ctx: &mut Context,
    resource: Option<&Resource>,
    resp: Response<Incoming>,
    limits: &Limits,
    idle: Duration,
) -> Result<Response<Body>, Refusal> {
    let (parts, mut incoming) = resp.into_parts();
    let headers = response_headers(&parts.headers, resource, false, ctx);
    ctx.outcome = Outcome::Passed;
    let reply = |body: Body| {
        let mut r = Response::new(body);
        *r.status_mut() = parts.status;
        *r.headers_mut() = headers;
        r
    };
    // A small body with a known length is collected first, so that the head
    // and the body leave in one write, as for inspected responses.
    let small = http_body::Body::size_hint(&incoming)
        .exact()
        .is_some_and(|n| n <= limits.stream_after as u64);
    if small {
        let mut whole = Vec::new();
        while let Some(frame) = next_frame(&mut incoming, idle)
            .await
            .map_err(|_| Refusal::UpstreamTimeout)?
        {
            let frame = frame.map_err(|_| Refusal::UpstreamFailed)?;
            if let Some(d) = frame.data_ref() {
                whole.extend_from_slice(d);
            }
        }
        return Ok(reply(body::full(whole)));
    }
    // Still capped: a passthrough route is not a way around the size limits.
    let limit = usize::try_from(limits.response_body).unwrap_or(usize::MAX);
    Ok(reply(
        http_body_util::Limited::new(incoming, limit).boxed_unsync(),
    ))
}
