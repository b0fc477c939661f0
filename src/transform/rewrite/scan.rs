//! Scanning: validates the window as strict JSON, follows the automata, and
//! records the edits (and each record's subject) that `apply` will use.

use super::*;
use crate::transform::automaton::{DEAD, Mark};
use crate::transform::lex::{self, Malformed, Str};
use crate::transform::program::Unlisted;

impl Rewriter {
    /// Scans the window from `self.pos`. The common path (key, colon, value,
    /// comma, next key) runs straight through without returning to the state
    /// dispatch; `self.expect` records where to resume when the window ends.
    pub(super) fn scan_in(&mut self, buf: &[u8], last: bool) -> Result<(), TransformError> {
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
        if f.last_edit != NONE
            && f.members > 0
            && f.last_edit_member == f.members - 1
            && let Some(e) = self.edit_mut(f.zone, f.last_edit)
        {
            e.next = CLOSED;
        }
        if f.open_edit != NONE
            && let Some(e) = self.edit_mut(f.edit_zone, f.open_edit)
        {
            e.value_end = end;
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
        if let Some(f) = self.frames.last_mut()
            && f.zone == zone
            && edit.container == f.container
        {
            f.last_edit = at;
            f.last_edit_member = edit.index;
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
        if let Some(e) = self.env.back_mut()
            && matches!(e.target, Target::Record(_))
        {
            e.value_end = end;
        }
        self.records.push_back(r);
    }
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
