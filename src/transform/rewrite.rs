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
//! The rewriter performs no I/O and never logs: errors carry offsets and
//! kinds, not content.

use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use super::actions::{self, Applied, Scratch};
use super::automaton::{DEAD, Mark, StateId};
use super::detect::DetectorSet;
use super::lex::{self, Malformed, Str};
use super::program::{Action, ActionTable, Program, Unlisted};

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

/// Counters for logs, metrics and (later) the audit event.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub records: u64,
    pub records_redacted: u64,
    pub records_dropped: u64,
    pub masked: u64,
    pub hashed: u64,
    pub redacted: u64,
    pub removed: u64,
    pub detected: u64,
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
    key_buf: Vec<u8>,
    finished: bool,
    stats: Stats,
}

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
            key_buf: Vec::new(),
            finished: false,
            stats: Stats::default(),
        }
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
        self.flush(win, out)?;
        if self.finished && self.env.is_empty() {
            let end = self.base + win.len();
            copy(win, self.base, &mut self.cursor, end, out);
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

    // ------------------------------------------------------------------ scan

    /// Scans the window from `self.pos`. The common path (key, colon, value,
    /// comma, next key) runs straight through without returning to the state
    /// dispatch; `self.expect` records where to resume when the window ends.
    fn scan_in(&mut self, buf: &[u8], last: bool) -> Result<(), TransformError> {
        let base = self.base;
        let end = base + buf.len();
        if self.pos == 0 && buf.starts_with(&[0xEF, 0xBB, 0xBF]) {
            return Err(self.malformed(Malformed::ByteOrderMark, 0));
        }
        let ws = |mut p: usize| {
            // Compact JSON has no whitespace: test one byte before looping.
            if p < end && buf[p - base] > b' ' {
                return p;
            }
            while p < end && lex::is_ws(buf[p - base]) {
                p += 1;
            }
            p
        };
        let mut p = self.pos;
        'scan: loop {
            p = ws(p);
            if p >= end {
                break;
            }
            let b = buf[p - base];
            match self.expect {
                Expect::Value | Expect::ValueOrClose => {
                    if b == b']' && self.expect == Expect::ValueOrClose {
                        p = self.close(p, false)?;
                        continue;
                    }
                    // Array elements: value, comma, value, ...
                    loop {
                        match self.value(buf, p, last)? {
                            Some(next) => p = next,
                            None => break 'scan,
                        }
                        if self.expect != Expect::CommaOrClose {
                            continue 'scan;
                        }
                        p = ws(p);
                        if p >= end || buf[p - base] != b',' {
                            continue 'scan;
                        }
                        match self.frames.last_mut() {
                            Some(f) if !f.obj => f.comma = p,
                            _ => continue 'scan,
                        }
                        self.expect = Expect::Value;
                        p = ws(p + 1);
                        if p >= end {
                            break 'scan;
                        }
                    }
                }
                Expect::KeyOrClose | Expect::Key => {
                    if b == b'}' && self.expect == Expect::KeyOrClose {
                        p = self.close(p, true)?;
                        continue;
                    }
                    // Object members: key, colon, value, comma, key, ... Compact
                    // JSON (`"k":v,"k2"`) takes the two-byte fast checks.
                    loop {
                        if buf[p - base] != b'"' {
                            return Err(self.malformed(Malformed::Unexpected, p));
                        }
                        let Some((key_end, escaped)) = self.string_end(buf, p)? else {
                            break 'scan;
                        };
                        self.key(buf, p, key_end, escaped);
                        if key_end + 1 < end
                            && buf[key_end - base] == b':'
                            && buf[key_end + 1 - base] > b' '
                        {
                            p = key_end + 1;
                        } else {
                            self.expect = Expect::Colon;
                            p = ws(key_end);
                            if p >= end {
                                break 'scan;
                            }
                            if buf[p - base] != b':' {
                                return Err(self.malformed(Malformed::Unexpected, p));
                            }
                            p = ws(p + 1);
                            if p >= end {
                                self.expect = Expect::Value;
                                break 'scan;
                            }
                        }
                        self.expect = Expect::Value;
                        // Fast path: a string no selector reaches.
                        let dead = self.slot.state == DEAD && self.top.dead_is_free;
                        if dead && buf[p - base] == b'"' {
                            let Some((e, _)) = self.string_end(buf, p)? else {
                                break 'scan;
                            };
                            self.member_done(self.slot.start);
                            self.expect = Expect::CommaOrClose;
                            p = e;
                        } else {
                            match self.value(buf, p, last)? {
                                Some(next) => p = next,
                                None => break 'scan,
                            }
                            if self.expect != Expect::CommaOrClose {
                                continue 'scan;
                            }
                        }
                        if !(p + 1 < end && buf[p - base] == b',' && buf[p + 1 - base] == b'"') {
                            p = ws(p);
                            if p >= end || buf[p - base] != b',' {
                                continue 'scan;
                            }
                        }
                        match self.frames.last_mut() {
                            Some(f) if f.obj => f.comma = p,
                            _ => continue 'scan,
                        }
                        self.expect = Expect::Key;
                        p = ws(p + 1);
                        if p >= end {
                            break 'scan;
                        }
                    }
                }
                Expect::Colon => {
                    if b != b':' {
                        return Err(self.malformed(Malformed::Unexpected, p));
                    }
                    self.expect = Expect::Value;
                    p += 1;
                }
                Expect::CommaOrClose => match b {
                    b',' => {
                        let f = self.frames.last_mut().ok_or(TransformError::Malformed {
                            kind: Malformed::Unexpected,
                            offset: p as u64,
                        })?;
                        f.comma = p;
                        self.expect = if f.obj { Expect::Key } else { Expect::Value };
                        p += 1;
                    }
                    b'}' | b']' => p = self.close(p, b == b'}')?,
                    _ => return Err(self.malformed(Malformed::Unexpected, p)),
                },
                Expect::End => return Err(self.malformed(Malformed::TrailingData, p)),
            }
        }
        self.pos = p;
        if last && self.partial.is_some() {
            return Err(self.malformed(Malformed::UnexpectedEnd, p));
        }
        Ok(())
    }

    /// Finds the end of the string starting at `p` (its opening quote);
    /// `None` if the window ends first.
    #[inline]
    fn string_end(
        &mut self,
        buf: &[u8],
        p: usize,
    ) -> Result<Option<(usize, bool)>, TransformError> {
        let base = self.base;
        let (from, mut escaped) = match self.partial {
            Some((s, resume, esc)) if s == p => (resume, esc),
            _ => match lex::short_string(buf, p + 1 - base) {
                lex::Short::End(e) => return Ok(Some((e + base, false))),
                lex::Short::Plain(at) => (at + base, false),
                lex::Short::Other => (p + 1, false),
            },
        };
        match lex::string(buf, from - base, &mut escaped) {
            Ok(Str::End(e)) => {
                self.partial = None;
                Ok(Some((e + base, escaped)))
            }
            Ok(Str::More(r)) => {
                self.partial = Some((p, r + base, escaped));
                Ok(None)
            }
            Err(kind) => Err(self.malformed(kind, p)),
        }
    }

    /// A key has been read: compute the member's automaton state.
    #[inline]
    fn key(&mut self, buf: &[u8], start: usize, end: usize, escaped: bool) {
        let t = self.top;
        let comma = self.frames.last().map_or(NONE, |f| f.comma);
        let raw = &buf[start + 1 - self.base..end - 1 - self.base];
        let state = if t.zone == Zone::Quiet {
            DEAD
        } else if !escaped && t.lengths & (1 << (raw.len() % 64)) == 0 {
            t.other
        } else {
            let dfa = if t.zone == Zone::Env {
                &self.prog.envelope
            } else {
                &self.prog.record
            };
            if escaped {
                self.key_buf.clear();
                lex::unescape(raw, &mut self.key_buf);
                dfa.step_key(t.state, &self.key_buf)
            } else {
                dfa.step_key(t.state, raw)
            }
        };
        self.slot = Slot {
            start,
            comma,
            state,
        };
    }

    /// Re-reads the innermost frame into `self.top` after a push or pop.
    fn refresh_top(&mut self) {
        self.top = match self.frames.last() {
            None => Top::NONE,
            Some(f) => {
                let (lengths, other) = match f.zone {
                    Zone::Env => self.prog.envelope.key_filter(f.state),
                    Zone::Rec => self.prog.record.key_filter(f.state),
                    Zone::Quiet => (0, DEAD),
                };
                Top {
                    zone: f.zone,
                    state: f.state,
                    dead_is_free: f.zone == Zone::Quiet
                        || (f.inherit == DEAD && self.prog.unlisted == Unlisted::Allow),
                    lengths,
                    other,
                }
            }
        };
    }

    /// A value starts at `p`. Returns the position after it (or after its
    /// opening bracket), or `None` if the window ends inside a scalar.
    fn value(&mut self, buf: &[u8], p: usize, last: bool) -> Result<Option<usize>, TransformError> {
        let b = buf[p - self.base];
        // Find a scalar's end first, so an incomplete one changes nothing.
        let scalar_end = match b {
            b'{' | b'[' => None,
            b'"' => match self.string_end(buf, p)? {
                Some((e, _)) => Some(e),
                None => return Ok(None),
            },
            b't' | b'f' | b'n' => {
                let word: &[u8] = match b {
                    b't' => b"true",
                    b'f' => b"false",
                    _ => b"null",
                };
                match lex::literal(buf, p - self.base, word, last) {
                    Ok(Some(e)) => Some(e + self.base),
                    Ok(None) => return Ok(None),
                    Err(k) => return Err(self.malformed(k, p)),
                }
            }
            b'-' | b'0'..=b'9' => match lex::number(buf, p - self.base, last) {
                Ok(Some(e)) => Some(e + self.base),
                Ok(None) => return Ok(None),
                Err(k) => return Err(self.malformed(k, p)),
            },
            _ => return Err(self.malformed(Malformed::Unexpected, p)),
        };

        // Fast path: a scalar nothing can select (most of a typical body).
        if let (Some(e), Some(f)) = (scalar_end, self.frames.last_mut()) {
            let dead = f.zone == Zone::Quiet
                || (f.inherit == DEAD
                    && self.prog.unlisted == Unlisted::Allow
                    && DEAD
                        == if f.obj {
                            self.slot.state
                        } else if f.zone == Zone::Env {
                            self.prog.envelope.step_elem(f.state)
                        } else {
                            self.prog.record.step_elem(f.state)
                        });
            if dead {
                let next = if f.obj { self.slot.start } else { p };
                self.member_done(next);
                self.expect = Expect::CommaOrClose;
                return Ok(Some(e));
            }
        }

        // Where this value sits: its slot and its parent's context.
        let (mut zone, parent_inherit, container, index, slot) = match self.frames.last_mut() {
            Some(f) => {
                let slot = if f.obj {
                    self.slot
                } else {
                    let state = match f.zone {
                        Zone::Env => self.prog.envelope.step_elem(f.state),
                        Zone::Rec => self.prog.record.step_elem(f.state),
                        Zone::Quiet => DEAD,
                    };
                    Slot {
                        start: p,
                        comma: f.comma,
                        state,
                    }
                };
                let index = f.members;
                f.members += 1;
                // The previous member's edit learns where the next member starts.
                let patch = (f.last_edit != NONE && index > 0 && f.last_edit_member == index - 1)
                    .then_some((f.zone, f.last_edit));
                let ctx = (f.zone, f.inherit, f.container, index, slot);
                if let Some(e) = patch.and_then(|(zone, at)| self.edit_mut(zone, at)) {
                    e.next = slot.start;
                }
                ctx
            }
            None => (
                Zone::Env,
                DEAD,
                NO_CONTAINER,
                0,
                Slot {
                    start: p,
                    comma: NONE,
                    state: self.prog.envelope.start(),
                },
            ),
        };
        let mut state = slot.state;
        let mut inherit = parent_inherit;
        let mut record_root = false;
        if zone == Zone::Env
            && self
                .prog
                .envelope
                .state(state)
                .marks
                .contains(&Mark::Record)
        {
            // A record begins: its own automaton takes over, nothing is inherited.
            let edit = Edit {
                member: slot.start,
                value_start: p,
                value_end: NONE,
                comma: slot.comma,
                next: NONE,
                container,
                index,
                target: Target::Record(self.record_base + self.records.len() as u64),
            };
            self.push_edit(Zone::Env, edit);
            let edits = self.spare.pop().unwrap_or_default();
            self.cur = Some(Record {
                edits,
                subject: SubjectCap::Missing,
                decision: None,
                end: NONE,
            });
            zone = Zone::Rec;
            state = self.prog.record.start();
            inherit = DEAD;
            record_root = true;
        }
        // A record's root value is not a member of anything the record can delete.
        let (container, index, comma, member) = if record_root {
            (NO_CONTAINER, 0, NONE, p)
        } else {
            (container, index, slot.comma, slot.start)
        };

        let matching = zone != Zone::Quiet;
        let (live, own_fields, subject) = if matching {
            let dfa = if zone == Zone::Env {
                &self.prog.envelope
            } else {
                &self.prog.record
            };
            let st = dfa.state(state);
            let fields = st.marks.iter().any(|m| matches!(m, Mark::Field(_)));
            let subject = zone == Zone::Rec && st.marks.contains(&Mark::Subject);
            (st.live_below, fields, subject)
        } else {
            (false, false, false)
        };
        let effective = if own_fields { state } else { inherit };
        let needs_edit = matching && (effective != DEAD || self.prog.unlisted != Unlisted::Allow);
        let target = |zone| match (effective, zone) {
            (DEAD, _) => Target::Unlisted,
            (s, Zone::Env) => Target::Env(s),
            (s, _) => Target::Rec(s),
        };

        match scalar_end {
            None => {
                // An object or array.
                if self.frames.len() >= self.limits.max_depth {
                    return Err(self.malformed(Malformed::TooDeep, p));
                }
                if subject {
                    self.capture_invalid();
                }
                let container_id = self.next_container;
                self.next_container = self.next_container.wrapping_add(1);
                let descend = matching && live;
                // A container gets an edit of its own even when we descend into
                // it: if nothing inside is shown more leniently, it is replaced
                // whole at apply time, so its keys and shape do not leak either.
                // (Not for unlisted values outside records or at a record's root.)
                let edit_here = needs_edit
                    && (!descend || effective != DEAD || (zone == Zone::Rec && !record_root));
                let mut open_edit = NONE;
                if edit_here {
                    open_edit = self.push_edit(
                        zone,
                        Edit {
                            member,
                            value_start: p,
                            value_end: NONE,
                            comma,
                            next: NONE,
                            container,
                            index,
                            target: target(zone),
                        },
                    );
                }
                self.frames.push(Frame {
                    obj: b == b'{',
                    zone: if descend { zone } else { Zone::Quiet },
                    state: if descend { state } else { DEAD },
                    inherit: if descend { effective } else { DEAD },
                    container: container_id,
                    members: 0,
                    comma: NONE,
                    last_edit: NONE,
                    last_edit_member: 0,
                    open_edit,
                    edit_zone: zone,
                    record_root,
                });
                self.refresh_top();
                self.expect = if b == b'{' {
                    Expect::KeyOrClose
                } else {
                    Expect::ValueOrClose
                };
                Ok(Some(p + 1))
            }
            Some(e) => {
                if needs_edit {
                    self.push_edit(
                        zone,
                        Edit {
                            member,
                            value_start: p,
                            value_end: e,
                            comma,
                            next: NONE,
                            container,
                            index,
                            target: target(zone),
                        },
                    );
                }
                if subject {
                    self.capture(buf, p, e);
                }
                if record_root {
                    self.close_record(e);
                }
                self.after_value();
                Ok(Some(e))
            }
        }
    }

    /// Counts a member of the innermost container that needs no edit; the
    /// previous member's edit learns where this one (`start`) begins.
    #[inline]
    fn member_done(&mut self, start: usize) {
        let Some(f) = self.frames.last_mut() else {
            return;
        };
        let index = f.members;
        f.members += 1;
        if f.last_edit != NONE && index > 0 && f.last_edit_member == index - 1 {
            let (zone, at) = (f.zone, f.last_edit);
            if let Some(edit) = self.edit_mut(zone, at) {
                edit.next = start;
            }
        }
    }

    /// Closes the innermost container at `p` (`}` if `obj`, else `]`).
    fn close(&mut self, p: usize, obj: bool) -> Result<usize, TransformError> {
        let Some(f) = self.frames.pop() else {
            return Err(self.malformed(Malformed::Unexpected, p));
        };
        self.refresh_top();
        if f.obj != obj {
            return Err(self.malformed(Malformed::Unexpected, p));
        }
        let end = p + 1;
        if f.last_edit != NONE && f.members > 0 && f.last_edit_member == f.members - 1 {
            if let Some(e) = self.edit_mut(f.zone, f.last_edit) {
                e.next = CLOSED;
            }
        }
        if f.open_edit != NONE {
            if let Some(e) = self.edit_mut(f.edit_zone, f.open_edit) {
                e.value_end = end;
            }
        }
        if f.record_root {
            self.close_record(end);
        }
        self.after_value();
        Ok(end)
    }

    fn after_value(&mut self) {
        self.expect = if self.frames.is_empty() {
            Expect::End
        } else {
            Expect::CommaOrClose
        };
    }

    /// Adds an edit to the envelope or current record list; returns its index.
    fn push_edit(&mut self, zone: Zone, edit: Edit) -> usize {
        let at = match zone {
            Zone::Env => {
                self.env.push_back(edit);
                self.env_base + self.env.len() - 1
            }
            _ => match self.cur.as_mut() {
                Some(r) => {
                    r.edits.push(edit);
                    r.edits.len() - 1
                }
                None => return NONE,
            },
        };
        if let Some(f) = self.frames.last_mut() {
            if f.zone == zone && edit.container == f.container {
                f.last_edit = at;
                f.last_edit_member = edit.index;
            }
        }
        at
    }

    /// The edit at `at` in `zone`'s list, unless it has already been flushed
    /// (then nothing about it can matter any more).
    fn edit_mut(&mut self, zone: Zone, at: usize) -> Option<&mut Edit> {
        match zone {
            Zone::Env => at
                .checked_sub(self.env_base)
                .and_then(|i| self.env.get_mut(i)),
            _ => self.cur.as_mut().and_then(|r| r.edits.get_mut(at)),
        }
    }

    fn capture(&mut self, buf: &[u8], s: usize, e: usize) {
        let base = self.base;
        let Some(r) = self.cur.as_mut() else { return };
        r.subject = match r.subject {
            SubjectCap::Missing => {
                if matches!(buf[s - base], b'"' | b'-' | b'0'..=b'9') {
                    SubjectCap::Span(s, e)
                } else {
                    SubjectCap::Invalid
                }
            }
            SubjectCap::Span(s0, e0) => {
                let same = buf[s0 - base..e0 - base] == buf[s - base..e - base] || {
                    let a = text_of(&buf[s0 - base..e0 - base]);
                    let b = text_of(&buf[s - base..e - base]);
                    a == b
                };
                if same {
                    SubjectCap::Span(s0, e0)
                } else {
                    SubjectCap::Ambiguous
                }
            }
            other => other,
        };
    }

    fn capture_invalid(&mut self) {
        if let Some(r) = self.cur.as_mut() {
            r.subject = match r.subject {
                SubjectCap::Missing | SubjectCap::Invalid => SubjectCap::Invalid,
                _ => SubjectCap::Ambiguous,
            };
        }
    }

    fn close_record(&mut self, end: usize) {
        let Some(mut r) = self.cur.take() else { return };
        r.end = end;
        if let Some(e) = self.env.back_mut() {
            if matches!(e.target, Target::Record(_)) {
                e.value_end = end;
            }
        }
        self.records.push_back(r);
    }

    // ----------------------------------------------------------------- flush

    fn flush(&mut self, win: &[u8], out: &mut Vec<u8>) -> Result<(), TransformError> {
        let prog = Arc::clone(&self.prog);
        let base_table = Arc::clone(&self.table);
        while let Some(&edit) = self.env.front() {
            if edit.value_end == NONE {
                break;
            }
            match edit.target {
                Target::Record(n) => {
                    let Some(decision) = self.records.front().and_then(|r| r.decision) else {
                        break;
                    };
                    match decision {
                        RecordOutcome::Block => return Err(TransformError::Blocked { record: n }),
                        RecordOutcome::Drop => {
                            match removal(&edit, &mut self.env_removed) {
                                Removal::Wait => break,
                                Removal::Range(a, b) => {
                                    copy(win, self.base, &mut self.cursor, a, out);
                                    self.cursor = b;
                                }
                                // A single-record body cannot lose its record.
                                Removal::NotMember => {
                                    return Err(TransformError::Blocked { record: n });
                                }
                            }
                            self.stats.records_dropped += 1;
                            if let Some(rec) = self.records.pop_front() {
                                self.recycle(rec);
                            }
                        }
                        RecordOutcome::Keep | RecordOutcome::Redact => {
                            let table = if decision == RecordOutcome::Redact {
                                self.stats.records_redacted += 1;
                                &prog.redacted
                            } else {
                                &base_table
                            };
                            let Some(rec) = self.records.pop_front() else {
                                break;
                            };
                            copy(win, self.base, &mut self.cursor, edit.value_start, out);
                            self.apply_record(win, &rec, table, out);
                            self.recycle(rec);
                        }
                    }
                    self.stats.records += 1;
                    self.record_base += 1;
                }
                Target::Env(_) | Target::Unlisted | Target::Rec(_) => {
                    let table = &base_table;
                    let (action, scan) = self.resolve(edit.target, table);
                    let inner = self
                        .env
                        .iter()
                        .skip(1)
                        .take_while(|e| e.value_start < edit.value_end)
                        .count();
                    if inner > 0 || is_container(win, self.base, &edit) {
                        let lenient = self
                            .env
                            .iter()
                            .skip(1)
                            .take(inner)
                            .any(|e| self.more_lenient(e.target, table, action));
                        if (action == Action::Allow && (inner > 0 || scan.is_empty())) || lenient {
                            // Transparent: the edits inside decide.
                            self.env.pop_front();
                            self.env_base += 1;
                            continue;
                        }
                    }
                    if action == Action::Remove {
                        match removal(&edit, &mut self.env_removed) {
                            Removal::Wait => break,
                            Removal::Range(a, b) => {
                                copy(win, self.base, &mut self.cursor, a, out);
                                self.cursor = b;
                                self.stats.removed += 1;
                            }
                            Removal::NotMember => {
                                self.replace(win, &edit, Action::Redact, scan, table, out)
                            }
                        }
                    } else {
                        self.replace(win, &edit, action, scan, table, out);
                    }
                    // Edits inside a value replaced whole have nothing left to do.
                    for _ in 0..inner {
                        self.env.pop_front();
                        self.env_base += 1;
                    }
                }
            }
            self.env.pop_front();
            self.env_base += 1;
        }
        Ok(())
    }

    fn resolve(&self, target: Target, table: &ActionTable) -> (Action, DetectorSet) {
        let marks: &[Mark] = match target {
            Target::Env(s) => &self.prog.envelope.state(s).marks,
            Target::Rec(s) => &self.prog.record.state(s).marks,
            Target::Unlisted | Target::Record(_) => &[],
        };
        table.resolve(&self.prog, marks)
    }

    /// Writes the bytes up to the edit, then its replacement.
    fn replace(
        &mut self,
        win: &[u8],
        edit: &Edit,
        action: Action,
        scan: DetectorSet,
        table: &ActionTable,
        out: &mut Vec<u8>,
    ) {
        copy(win, self.base, &mut self.cursor, edit.value_start, out);
        let raw = &win[edit.value_start - self.base..edit.value_end - self.base];
        let done = actions::render(
            action,
            scan,
            raw,
            table,
            &self.prog.render,
            &mut self.scratch,
            out,
        );
        match done {
            Applied::Unchanged => {}
            Applied::Masked => self.stats.masked += 1,
            Applied::Hashed => self.stats.hashed += 1,
            Applied::Redacted => self.stats.redacted += 1,
            Applied::Scanned(n) => self.stats.detected += n as u64,
        }
        self.cursor = edit.value_end;
    }

    fn apply_record(&mut self, win: &[u8], rec: &Record, table: &ActionTable, out: &mut Vec<u8>) {
        let mut removed: HashMap<u32, u32> = HashMap::new();
        let edits = &rec.edits;
        let mut i = 0;
        while i < edits.len() {
            let edit = &edits[i];
            let (action, scan) = self.resolve(edit.target, table);
            let inner = edits[i + 1..]
                .iter()
                .take_while(|e| e.value_start < edit.value_end)
                .count();
            i += 1;
            if inner > 0 || is_container(win, self.base, edit) {
                let lenient = edits[i..i + inner]
                    .iter()
                    .any(|e| self.more_lenient(e.target, table, action));
                if (action == Action::Allow && (inner > 0 || scan.is_empty())) || lenient {
                    continue; // transparent: the edits inside decide
                }
                i += inner; // replaced whole: the edits inside have nothing left to do
            }
            if action == Action::Remove {
                if let Removal::Range(a, b) = removal(edit, &mut removed) {
                    copy(win, self.base, &mut self.cursor, a, out);
                    self.cursor = b;
                    self.stats.removed += 1;
                    continue;
                }
                // The record's own root cannot be deleted from inside it.
                self.replace(win, edit, Action::Redact, scan, table, out);
                continue;
            }
            self.replace(win, edit, action, scan, table, out);
        }
        copy(win, self.base, &mut self.cursor, rec.end, out);
    }

    /// Whether an edit inside a container is shown more leniently than the
    /// container's own action (then the container is not replaced whole).
    fn more_lenient(&self, target: Target, table: &ActionTable, outer: Action) -> bool {
        match target {
            Target::Record(_) => true,
            t => self.resolve(t, table).0.rank() < outer.rank(),
        }
    }

    fn recycle(&mut self, mut rec: Record) {
        rec.edits.clear();
        if self.spare.len() < 8 {
            self.spare.push(rec.edits);
        }
    }
}

/// Decides records as the rewriter completes them.
pub trait Gate {
    /// `None` defers the decision; the record then waits for `Rewriter::resume`.
    fn decide(&mut self, subject: Subject<'_>) -> Option<RecordOutcome>;
}

impl<F: FnMut(Subject<'_>) -> RecordOutcome> Gate for F {
    fn decide(&mut self, subject: Subject<'_>) -> Option<RecordOutcome> {
        Some(self(subject))
    }
}

/// Whether the edit's value is an object or array.
#[inline]
fn is_container(win: &[u8], base: usize, edit: &Edit) -> bool {
    matches!(win.get(edit.value_start - base), Some(b'{' | b'['))
}

/// Copies `win` from the cursor up to absolute offset `to`, unchanged.
#[inline]
fn copy(win: &[u8], base: usize, cursor: &mut usize, to: usize, out: &mut Vec<u8>) {
    if to > *cursor {
        out.extend_from_slice(&win[*cursor - base..to - base]);
        *cursor = to;
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

enum Removal {
    Range(usize, usize),
    Wait,
    NotMember,
}

/// The byte range that deletes `edit`'s member together with one comma.
/// `removed` counts members already deleted per container, so the first
/// surviving member never keeps a leading comma.
fn removal(edit: &Edit, removed: &mut HashMap<u32, u32>) -> Removal {
    if edit.container == NO_CONTAINER {
        return Removal::NotMember;
    }
    let before = removed.get(&edit.container).copied().unwrap_or(0);
    let range = if before < edit.index && edit.comma != NONE {
        // A member before this one survives: delete ", member".
        (edit.comma, edit.value_end)
    } else {
        match edit.next {
            NONE => return Removal::Wait,
            CLOSED => (edit.member, edit.value_end),
            next => (edit.member, next),
        }
    };
    *removed.entry(edit.container).or_insert(0) += 1;
    Removal::Range(range.0, range.1)
}

fn text_of(raw: &[u8]) -> Vec<u8> {
    if raw.first() == Some(&b'"') {
        let mut v = Vec::new();
        lex::unescape(&raw[1..raw.len() - 1], &mut v);
        v
    } else {
        raw.to_vec()
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
    let mut rw = Rewriter::new(Arc::clone(prog), Arc::clone(table), limits);
    rw.push(body, &mut gate, out)?;
    rw.finish(&mut gate, out)?;
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
