//! The streaming, byte-preserving JSON rewriter.
//!
//! Feed it body chunks (`push`), let the caller decide each completed record
//! (`undecided` / `decide`), and collect output (`take_output`). It validates
//! the whole body as strict JSON while it follows the program's automata, and
//! records an `Edit` (a byte range plus what selected it) for every value an
//! action may change. Output is produced only at safe points, the end of a
//! decided record or of the body, by copying the bytes between edits
//! unchanged and writing each edit's replacement. So:
//!
//! - bytes outside rewritten values are identical to the input: key order,
//!   number spelling, whitespace and escapes are never re-serialised;
//! - every occurrence counts: duplicate keys and keys that differ only by
//!   escapes or ASCII case each take the automaton's transition;
//! - memory holds the unflushed window: the largest record plus the envelope
//!   bytes around it, never the whole list (`Limits::max_buffer` caps it);
//! - removing a member also removes exactly one separating comma, so the
//!   output stays valid JSON.
//!
//! `scan.rs` reads and validates the input and records edits; `apply.rs`
//! writes the output. The rewriter performs no I/O and never logs: errors
//! carry offsets and kinds, not content.

mod apply;
mod scan;

use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use super::actions::Scratch;
use super::automaton::{DEAD, StateId};
use super::lex::{self, Malformed};
use super::program::{ActionTable, Program, Seal};

/// Bounds on what one response may make the rewriter hold.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Maximum nesting of objects and arrays.
    pub max_depth: usize,
    /// Maximum bytes held while a record (or the envelope) is incomplete.
    pub max_buffer: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_depth: 64,
            max_buffer: 8 << 20,
        }
    }
}

/// What to do with one record, decided by the caller (consent, erasure).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordOutcome {
    /// Apply the purpose's field actions.
    Keep,
    /// Redact every selected field of the record.
    Redact,
    /// Remove the record from its list.
    Drop,
    /// Refuse the whole response.
    Block,
    /// The customer was erased: remove the record from its list; a
    /// single-record body is refused (`TransformError::Erased`).
    Suppress,
}

/// Why a body could not be rewritten. Carries no body content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransformError {
    #[error("the body is not strict JSON: {kind} at byte {offset}")]
    Malformed { kind: Malformed, offset: u64 },
    #[error("a record needs more than {limit} bytes of buffer")]
    TooLarge { limit: usize },
    #[error("record {record} may not be shown to this caller")]
    Blocked { record: u64 },
    /// The single record of the body belongs to an erased customer.
    #[error("record {record} belongs to an erased customer")]
    Erased { record: u64 },
    /// A value of an encrypted category could not be encrypted (no key).
    #[error("a value of an encrypted category could not be encrypted")]
    Seal,
    /// A write carries a token where a value of an encrypted category goes.
    #[error("a token was written as the value of an encrypted field")]
    TokenAsValue,
}

/// A record's subject id as found by the subject selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject<'a> {
    /// The selector found nothing.
    Missing,
    /// The decoded id (a string's text, or a number's spelling).
    Id(Cow<'a, str>),
    /// The selector found different ids (duplicate keys): treat as unknown.
    Ambiguous,
    /// The selector found an object, array, boolean or null.
    Invalid,
}

/// Counters for logs, metrics and the audit event (whose `counts` are
/// these fields, in this order).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stats {
    pub records: u64,
    pub records_redacted: u64,
    pub records_dropped: u64,
    pub masked: u64,
    pub hashed: u64,
    pub redacted: u64,
    pub removed: u64,
    pub detected: u64,
    /// Values written to the CRM as tokens.
    pub sealed: u64,
    /// Tokens decrypted for the caller.
    pub opened: u64,
    /// Tokens passed on as they are (`token` action).
    pub tokens: u64,
    /// Tokens that did not decrypt (altered, moved, key destroyed): redacted.
    pub undecryptable: u64,
}

const NONE: usize = usize::MAX;
const CLOSED: usize = usize::MAX - 1;
const NO_CONTAINER: u32 = u32::MAX;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Value,
    ValueOrClose,
    KeyOrClose,
    Key,
    Colon,
    CommaOrClose,
    End,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Zone {
    /// Outside records: the envelope automaton applies.
    Env,
    /// Inside a record: the record automaton applies.
    Rec,
    /// Inside a value already selected as a whole, or where nothing can match.
    Quiet,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Env(StateId),
    Rec(StateId),
    Unlisted,
    Record(u64),
}

/// A value an action may rewrite, with what is needed to delete its member.
#[derive(Debug, Clone, Copy)]
struct Edit {
    /// Start of the member: its key in an object, the value in an array.
    member: usize,
    value_start: usize,
    value_end: usize,
    /// The comma before the member, if any.
    comma: usize,
    /// Start of the next member, `CLOSED` if the container ended, `NONE` if unknown yet.
    next: usize,
    container: u32,
    index: u32,
    target: Target,
}

#[derive(Debug)]
struct Frame {
    obj: bool,
    zone: Zone,
    state: StateId,
    /// The state whose field marks unselected children inherit (`DEAD`: none).
    inherit: StateId,
    container: u32,
    members: u32,
    comma: usize,
    last_edit: usize,
    last_edit_member: u32,
    /// The edit covering this whole container, in `edit_zone`'s list.
    open_edit: usize,
    edit_zone: Zone,
    record_root: bool,
}

/// What the key lookup needs about the innermost container, kept next to the
/// scanner so that the common path does not chase the frame stack.
#[derive(Debug, Clone, Copy)]
struct Top {
    zone: Zone,
    state: StateId,
    /// Nothing unlisted is edited and nothing is inherited: a member whose
    /// key leads to the dead state needs no work at all.
    dead_is_free: bool,
    lengths: u64,
    other: StateId,
}

impl Top {
    const NONE: Top = Top {
        zone: Zone::Quiet,
        state: DEAD,
        dead_is_free: true,
        lengths: 0,
        other: DEAD,
    };
}

/// The member whose value comes next (set when its key has been read).
#[derive(Debug, Clone, Copy)]
struct Slot {
    start: usize,
    comma: usize,
    state: StateId,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SubjectCap {
    Missing,
    Span(usize, usize),
    Ambiguous,
    Invalid,
}

#[derive(Debug)]
struct Record {
    edits: Vec<Edit>,
    subject: SubjectCap,
    decision: Option<RecordOutcome>,
    end: usize,
}

/// The streaming rewriter for one response body.
#[derive(Debug)]
pub struct Rewriter {
    prog: Arc<Program>,
    table: Arc<ActionTable>,
    limits: Limits,
    /// Bytes carried over between chunks (not yet output); buf[0] is absolute offset `base`.
    /// A chunk is scanned in place when nothing is carried over.
    buf: Vec<u8>,
    base: usize,
    pos: usize,
    /// Output has been produced for everything before this absolute offset.
    cursor: usize,
    expect: Expect,
    frames: Vec<Frame>,
    top: Top,
    slot: Slot,
    /// A string (key or value) whose scan stopped at the window's end: (start, resume, escaped).
    partial: Option<(usize, usize, bool)>,
    env: VecDeque<Edit>,
    env_base: usize,
    env_removed: HashMap<u32, u32>,
    records: VecDeque<Record>,
    record_base: u64,
    decided: u64,
    cur: Option<Record>,
    next_container: u32,
    spare: Vec<Vec<Edit>>,
    scratch: Scratch,
    /// Decrypted values on their way out; zeroised on drop.
    plain: zeroize::Zeroizing<Vec<u8>>,
    key_buf: Vec<u8>,
    finished: bool,
    stats: Stats,
    /// Per category (`Program::categories`), values masked, hashed,
    /// redacted and removed; empty until the first one.
    by_category: Vec<[u32; 4]>,
}

/// Index of `Rewriter::category_counts`' columns.
pub const CATEGORY_ACTIONS: [&str; 4] = ["masked", "hashed", "redacted", "removed"];

impl Rewriter {
    pub fn new(prog: Arc<Program>, table: Arc<ActionTable>, limits: Limits) -> Rewriter {
        let start = prog.envelope.start();
        Rewriter {
            prog,
            table,
            limits,
            buf: Vec::new(),
            base: 0,
            pos: 0,
            cursor: 0,
            expect: Expect::Value,
            frames: Vec::new(),
            top: Top::NONE,
            slot: Slot {
                start: 0,
                comma: NONE,
                state: start,
            },
            partial: None,
            env: VecDeque::new(),
            env_base: 0,
            env_removed: HashMap::new(),
            records: VecDeque::new(),
            record_base: 0,
            decided: 0,
            cur: None,
            next_container: 0,
            spare: Vec::new(),
            scratch: Scratch::default(),
            plain: zeroize::Zeroizing::new(Vec::new()),
            key_buf: Vec::new(),
            finished: false,
            stats: Stats::default(),
            by_category: Vec::new(),
        }
    }

    /// Counts one value of `field`'s category changed by action `column`
    /// (`CATEGORY_ACTIONS`).
    #[inline]
    pub(super) fn count_category(&mut self, field: Option<u32>, column: usize) {
        let Some(f) = field else { return };
        let Some(spec) = self.prog.fields.get(f as usize) else {
            return;
        };
        let c = spec.category as usize;
        if self.by_category.len() <= c {
            self.by_category
                .resize(self.prog.categories.len().max(c + 1), [0; 4]);
        }
        self.by_category[c][column] += 1;
    }

    /// Values changed per category: (category, counts by `CATEGORY_ACTIONS`).
    pub fn category_counts(&self) -> impl Iterator<Item = (&Arc<str>, [u32; 4])> {
        self.by_category
            .iter()
            .enumerate()
            .filter(|(_, n)| n.iter().any(|&k| k > 0))
            .filter_map(|(i, n)| Some((self.prog.categories.get(i)?, *n)))
    }

    /// Scans the next chunk of the body, asks `gate` about each completed
    /// record, and appends the output that is final so far to `out`.
    pub fn push(
        &mut self,
        chunk: &[u8],
        gate: &mut impl Gate,
        out: &mut Vec<u8>,
    ) -> Result<(), TransformError> {
        self.feed(chunk, false, gate, out)
    }

    /// Marks the end of the body (fails if the document is incomplete) and
    /// writes the rest of the output.
    pub fn finish(
        &mut self,
        gate: &mut impl Gate,
        out: &mut Vec<u8>,
    ) -> Result<(), TransformError> {
        self.feed(&[], true, gate, out)
    }

    /// Retries records whose decision `gate` deferred.
    pub fn resume(
        &mut self,
        gate: &mut impl Gate,
        out: &mut Vec<u8>,
    ) -> Result<(), TransformError> {
        let last = self.finished;
        let buf = std::mem::take(&mut self.buf);
        let r = self.settle(&buf, last, gate, out);
        self.buf = buf;
        self.compact();
        r
    }

    /// Subjects of completed records still waiting for a decision, oldest first.
    pub fn undecided(&self) -> impl Iterator<Item = Subject<'_>> {
        let skip = (self.decided - self.record_base) as usize;
        self.records
            .iter()
            .skip(skip)
            .map(|r| subject_of(&self.buf, self.base, r.subject))
    }

    /// How many completed records wait for a decision.
    pub fn pending(&self) -> usize {
        self.records.len() - (self.decided - self.record_base) as usize
    }

    /// Bytes held (scanned but not yet written out).
    pub fn held(&self) -> usize {
        self.buf.len()
    }

    /// Whether the whole body has been scanned and written out.
    pub fn is_complete(&self) -> bool {
        self.finished && self.env.is_empty() && self.buf.is_empty()
    }

    pub fn stats(&self) -> Stats {
        self.stats
    }

    fn feed(
        &mut self,
        chunk: &[u8],
        last: bool,
        gate: &mut impl Gate,
        out: &mut Vec<u8>,
    ) -> Result<(), TransformError> {
        if self.buf.is_empty() {
            // Nothing carried over: scan the chunk where it lies, keep only the tail.
            self.scan_in(chunk, last)?;
            self.settle(chunk, last, gate, out)?;
            let from = self.cursor - self.base;
            self.buf.extend_from_slice(&chunk[from..]);
            self.base = self.cursor;
        } else {
            self.buf.extend_from_slice(chunk);
            let buf = std::mem::take(&mut self.buf);
            let r = self
                .scan_in(&buf, last)
                .and_then(|()| self.settle(&buf, last, gate, out));
            self.buf = buf;
            r?;
            self.compact();
        }
        if self.buf.len() > self.limits.max_buffer {
            return Err(TransformError::TooLarge {
                limit: self.limits.max_buffer,
            });
        }
        Ok(())
    }

    /// Decides what the gate can, and writes out what is final.
    fn settle(
        &mut self,
        win: &[u8],
        last: bool,
        gate: &mut impl Gate,
        out: &mut Vec<u8>,
    ) -> Result<(), TransformError> {
        if last {
            if self.expect != Expect::End {
                return Err(self.malformed(Malformed::UnexpectedEnd, self.pos));
            }
            self.finished = true;
        }
        let skip = (self.decided - self.record_base) as usize;
        for i in skip..self.records.len() {
            let Some(outcome) = gate.decide(subject_of(win, self.base, self.records[i].subject))
            else {
                break;
            };
            self.records[i].decision = Some(outcome);
            self.decided += 1;
        }
        self.flush(win, gate, out)?;
        if self.finished && self.env.is_empty() {
            let end = self.base + win.len();
            apply::copy(win, self.base, &mut self.cursor, end, out);
        }
        Ok(())
    }

    fn compact(&mut self) {
        let consumed = self.cursor - self.base;
        if consumed > 0 {
            self.buf.drain(..consumed);
            self.base = self.cursor;
        }
    }

    fn malformed(&self, kind: Malformed, at: usize) -> TransformError {
        TransformError::Malformed {
            kind,
            offset: at as u64,
        }
    }
}

/// Decides records as the rewriter completes them, and holds the keys of
/// encrypted fields.
pub trait Gate {
    /// `None` defers the decision; the record then waits for `Rewriter::resume`.
    fn decide(&mut self, subject: Subject<'_>) -> Option<RecordOutcome>;

    /// Writes: appends the token (unquoted) that stores `plain`, a JSON
    /// value's bytes, in a field of `category`. `false` when there is no key:
    /// the rewrite then fails, and the value never leaves in clear.
    fn seal(&mut self, _category: &str, _seal: Seal, _plain: &[u8], _out: &mut Vec<u8>) -> bool {
        false
    }

    /// Reads: appends the JSON value `token` stands for, if it decrypts for
    /// this record's `subject` and `category`. `subject` is `None` outside
    /// records (in a record whose subject cannot be read the rewriter opens
    /// nothing). A gate without keys opens nothing.
    fn open(
        &mut self,
        _subject: Option<&str>,
        _category: &str,
        _token: &str,
        _out: &mut Vec<u8>,
    ) -> bool {
        false
    }
}

impl<F: FnMut(Subject<'_>) -> RecordOutcome> Gate for F {
    fn decide(&mut self, subject: Subject<'_>) -> Option<RecordOutcome> {
        Some(self(subject))
    }
}

fn subject_of(win: &[u8], base: usize, cap: SubjectCap) -> Subject<'_> {
    match cap {
        SubjectCap::Missing => Subject::Missing,
        SubjectCap::Ambiguous => Subject::Ambiguous,
        SubjectCap::Invalid => Subject::Invalid,
        SubjectCap::Span(s, e) => {
            let raw = &win[s - base..e - base];
            if raw.first() != Some(&b'"') {
                return Subject::Id(String::from_utf8_lossy(raw));
            }
            let inner = &raw[1..raw.len() - 1];
            if memchr::memchr(b'\\', inner).is_none() {
                return Subject::Id(String::from_utf8_lossy(inner));
            }
            let mut v = Vec::with_capacity(inner.len());
            lex::unescape(inner, &mut v);
            Subject::Id(Cow::Owned(String::from_utf8_lossy(&v).into_owned()))
        }
    }
}

/// Runs a whole body through a rewriter in one go, appending to `out`.
/// For policy tests, benchmarks and callers that already hold the body.
pub fn rewrite_into(
    prog: &Arc<Program>,
    table: &Arc<ActionTable>,
    limits: Limits,
    body: &[u8],
    mut gate: impl FnMut(Subject<'_>) -> RecordOutcome,
    out: &mut Vec<u8>,
) -> Result<Stats, TransformError> {
    rewrite_with(prog, table, limits, body, &mut gate, out)
}

/// Like `rewrite_into`, with any gate (one that holds keys, say).
pub fn rewrite_with(
    prog: &Arc<Program>,
    table: &Arc<ActionTable>,
    limits: Limits,
    body: &[u8],
    gate: &mut impl Gate,
    out: &mut Vec<u8>,
) -> Result<Stats, TransformError> {
    let mut rw = Rewriter::new(Arc::clone(prog), Arc::clone(table), limits);
    rw.push(body, gate, out)?;
    rw.finish(gate, out)?;
    Ok(rw.stats())
}

/// Like `rewrite_into`, returning a new buffer.
pub fn rewrite_all(
    prog: &Arc<Program>,
    table: &Arc<ActionTable>,
    limits: Limits,
    body: &[u8],
    gate: impl FnMut(Subject<'_>) -> RecordOutcome,
) -> Result<(Vec<u8>, Stats), TransformError> {
    let mut out = Vec::with_capacity(body.len() + 64);
    let stats = rewrite_into(prog, table, limits, body, gate, &mut out)?;
    Ok((out, stats))
}
