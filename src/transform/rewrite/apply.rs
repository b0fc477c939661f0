//! Applying: decides what each edit becomes and writes the output, copying
//! every byte between edits unchanged.

use std::collections::HashMap;
use std::sync::Arc;

use super::*;
use crate::transform::actions::{self, Applied};
use crate::transform::automaton::Mark;
use crate::transform::program::{Action, ActionTable, Resolved, Seal};

impl Rewriter {
    pub(super) fn flush(
        &mut self,
        win: &[u8],
        gate: &mut impl Gate,
        out: &mut Vec<u8>,
    ) -> Result<(), TransformError> {
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
                        RecordOutcome::Drop | RecordOutcome::Suppress => {
                            match removal(&edit, &mut self.env_removed) {
                                Removal::Wait => break,
                                Removal::Range(a, b) => {
                                    copy(win, self.base, &mut self.cursor, a, out);
                                    self.cursor = b;
                                }
                                // A single-record body cannot lose its record.
                                Removal::NotMember if decision == RecordOutcome::Suppress => {
                                    return Err(TransformError::Erased { record: n });
                                }
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
                            let r = self.apply_record(win, &rec, table, gate, out);
                            self.recycle(rec);
                            r?;
                        }
                    }
                    self.stats.records += 1;
                    self.record_base += 1;
                }
                Target::Env(_) | Target::Unlisted | Target::Rec(_) => {
                    let table = &base_table;
                    let resolved = self.resolve(edit.target, table);
                    let (action, scan) = (resolved.action, resolved.scan);
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
                        if transparent(action, inner, scan.is_empty()) || lenient {
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
                                self.count_category(resolved.field, 3);
                            }
                            Removal::NotMember => {
                                let redact = Resolved {
                                    action: Action::Redact,
                                    ..resolved
                                };
                                self.replace(win, &edit, redact, table, Owner::Envelope, gate, out)?
                            }
                        }
                    } else {
                        self.replace(win, &edit, resolved, table, Owner::Envelope, gate, out)?;
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

    fn resolve(&self, target: Target, table: &ActionTable) -> Resolved {
        let marks: &[Mark] = match target {
            Target::Env(s) => &self.prog.envelope.state(s).marks,
            Target::Rec(s) => &self.prog.record.state(s).marks,
            Target::Unlisted | Target::Record(_) => &[],
        };
        table.resolve(&self.prog, marks)
    }

    /// Writes the bytes up to the edit, then its replacement. `owner` says
    /// whose tokens the value may hold.
    #[allow(clippy::too_many_arguments)]
    fn replace(
        &mut self,
        win: &[u8],
        edit: &Edit,
        r: Resolved,
        table: &ActionTable,
        owner: Owner<'_>,
        gate: &mut impl Gate,
        out: &mut Vec<u8>,
    ) -> Result<(), TransformError> {
        copy(win, self.base, &mut self.cursor, edit.value_start, out);
        let raw = &win[edit.value_start - self.base..edit.value_end - self.base];
        let done = match r.sealed {
            Some(f) => {
                let below = match edit.target {
                    Target::Rec(st) => self.prog.record.state(st).live_below,
                    Target::Env(st) => self.prog.envelope.state(st).live_below,
                    Target::Unlisted | Target::Record(_) => false,
                };
                let at = Sealed {
                    field: f as usize,
                    below,
                };
                self.sealed(raw, r, at, table, owner, gate, out)?
            }
            None => actions::render(
                r.action,
                r.scan,
                raw,
                table,
                &self.prog.render,
                &mut self.scratch,
                out,
            ),
        };
        match done {
            Applied::Unchanged => {}
            Applied::Masked => {
                self.stats.masked += 1;
                self.count_category(r.field, 0);
            }
            Applied::Hashed => {
                self.stats.hashed += 1;
                self.count_category(r.field, 1);
            }
            Applied::Redacted => {
                self.stats.redacted += 1;
                self.count_category(r.field, 2);
            }
            Applied::Scanned(n) => self.stats.detected += n as u64,
        }
        self.cursor = edit.value_end;
        Ok(())
    }

    /// A value of an encrypted field. Writes turn it into a token; reads
    /// decrypt a token where the action shows the value in some form, pass
    /// it as it is (`token`), or redact it. A token that does not decrypt is
    /// redacted and counted, never passed on as if it were the value. A
    /// value that is not a token (stored before encryption was configured)
    /// is treated like any other value.
    #[allow(clippy::too_many_arguments)]
    fn sealed(
        &mut self,
        raw: &[u8],
        r: Resolved,
        at: Sealed,
        table: &ActionTable,
        owner: Owner<'_>,
        gate: &mut impl Gate,
        out: &mut Vec<u8>,
    ) -> Result<Applied, TransformError> {
        let prog = Arc::clone(&self.prog);
        let spec = &prog.fields[at.field];
        let category = &prog.categories[spec.category as usize];
        let render = |action, raw: &[u8], s: &mut actions::Scratch, out: &mut Vec<u8>| {
            actions::render(action, r.scan, raw, table, &prog.render, s, out)
        };
        match r.action {
            Action::Seal => {
                if raw == b"null" {
                    out.extend_from_slice(raw); // null carries nothing
                    return Ok(Applied::Unchanged);
                }
                // A token written back as a value would be sealed inside a
                // new token: refused.
                if raw.first() == Some(&b'"') {
                    let mut text = zeroize::Zeroizing::new(Vec::new());
                    if crate::keys::token::looks_like_token(actions::decoded(raw, &mut text)) {
                        return Err(TransformError::TokenAsValue);
                    }
                }
                // Free text is scanned first: what the purpose may not
                // collect is replaced before the rest is sealed.
                let mut scanned = zeroize::Zeroizing::new(Vec::new());
                let done = render(Action::Allow, raw, &mut self.scratch, &mut scanned);
                // Deterministic tokens of equal strings must be equal whatever
                // the escapes: the canonical spelling is encrypted.
                self.plain.clear();
                if spec.seal == Seal::Deterministic && scanned.first() == Some(&b'"') {
                    let mut text = zeroize::Zeroizing::new(Vec::new());
                    let decoded = actions::decoded(&scanned, &mut text);
                    crate::transform::lex::quote(decoded, &mut self.plain);
                } else {
                    self.plain.extend_from_slice(&scanned);
                }
                out.push(b'"');
                if !gate.seal(category, spec.seal, &self.plain, out) {
                    return Err(TransformError::Seal);
                }
                out.push(b'"');
                self.plain.clear();
                self.stats.sealed += 1;
                Ok(done)
            }
            Action::Redact | Action::Remove => Ok(render(r.action, raw, &mut self.scratch, out)),
            Action::Keep => {
                out.extend_from_slice(raw);
                Ok(Applied::Unchanged)
            }
            action => {
                let mut text = Vec::new();
                let token = (raw.first() == Some(&b'"'))
                    .then(|| actions::decoded(raw, &mut text))
                    .filter(|t| crate::keys::token::looks_like_token(t));
                let Some(token) = token else {
                    // Not a token: a value stored in clear.
                    return Ok(render(action, raw, &mut self.scratch, out));
                };
                if action == Action::Token {
                    out.extend_from_slice(raw);
                    self.stats.tokens += 1;
                    return Ok(Applied::Unchanged);
                }
                self.plain.clear();
                // In a record whose customer cannot be read nothing opens,
                // not even a deterministic token, which any customer's
                // record could hold.
                let opened = match owner {
                    Owner::Unknown => false,
                    Owner::Envelope | Owner::Subject(_) => std::str::from_utf8(token)
                        .is_ok_and(|t| gate.open(owner.subject(), category, t, &mut self.plain)),
                };
                if !opened {
                    self.stats.undecryptable += 1;
                    out.extend_from_slice(&prog.render.placeholder);
                    return Ok(Applied::Redacted);
                }
                self.stats.opened += 1;
                if at.below && matches!(self.plain.first(), Some(b'{' | b'[')) {
                    // Sealed whole under selectors that now reach inside it
                    // (the policy changed): they could not apply, so it is
                    // not shown.
                    self.plain.clear();
                    out.extend_from_slice(&prog.render.placeholder);
                    return Ok(Applied::Redacted);
                }
                let plain = std::mem::take(&mut self.plain);
                let done = render(action, &plain, &mut self.scratch, out);
                self.plain = plain;
                self.plain.clear();
                Ok(done)
            }
        }
    }

    fn apply_record(
        &mut self,
        win: &[u8],
        rec: &Record,
        table: &ActionTable,
        gate: &mut impl Gate,
        out: &mut Vec<u8>,
    ) -> Result<(), TransformError> {
        let mut removed: HashMap<u32, u32> = HashMap::new();
        let edits = &rec.edits;
        let subject = match subject_of(win, self.base, rec.subject) {
            Subject::Id(id) => Some(id),
            _ => None,
        };
        let owner = subject.as_deref().map_or(Owner::Unknown, Owner::Subject);
        let mut i = 0;
        while i < edits.len() {
            let edit = &edits[i];
            let resolved = self.resolve(edit.target, table);
            let (action, scan) = (resolved.action, resolved.scan);
            let inner = edits[i + 1..]
                .iter()
                .take_while(|e| e.value_start < edit.value_end)
                .count();
            i += 1;
            if inner > 0 || is_container(win, self.base, edit) {
                let lenient = edits[i..i + inner]
                    .iter()
                    .any(|e| self.more_lenient(e.target, table, action));
                if transparent(action, inner, scan.is_empty()) || lenient {
                    continue; // transparent: the edits inside decide
                }
                i += inner; // replaced whole: the edits inside have nothing left to do
            }
            if action == Action::Remove {
                if let Removal::Range(a, b) = removal(edit, &mut removed) {
                    copy(win, self.base, &mut self.cursor, a, out);
                    self.cursor = b;
                    self.stats.removed += 1;
                    self.count_category(resolved.field, 3);
                    continue;
                }
                // The record's own root cannot be deleted from inside it.
                let redact = Resolved {
                    action: Action::Redact,
                    ..resolved
                };
                self.replace(win, edit, redact, table, owner, gate, out)?;
                continue;
            }
            self.replace(win, edit, resolved, table, owner, gate, out)?;
        }
        copy(win, self.base, &mut self.cursor, rec.end, out);
        Ok(())
    }

    /// Whether an edit inside a container is shown more leniently than the
    /// container's own action (then the container is not replaced whole).
    fn more_lenient(&self, target: Target, table: &ActionTable, outer: Action) -> bool {
        match target {
            Target::Record(_) => true,
            t => self.resolve(t, table).action.rank() < outer.rank(),
        }
    }

    fn recycle(&mut self, mut rec: Record) {
        rec.edits.clear();
        if self.spare.len() < 8 {
            self.spare.push(rec.edits);
        }
    }
}

/// Whether a container's own edit gives way to the edits inside it. An
/// allowed container does, unless it is replaced whole to scan its text. A
/// sealed one does whenever selectors reach inside it: each value is then
/// sealed on its own (or removed, as its own selector says), so that a
/// more specific selector inside is never hidden in one token.
#[inline]
fn transparent(action: Action, inner: usize, no_scan: bool) -> bool {
    match action {
        Action::Allow => inner > 0 || no_scan,
        Action::Keep => true,
        Action::Seal => inner > 0,
        _ => false,
    }
}

/// Whether the edit's value is an object or array.
#[inline]
fn is_container(win: &[u8], base: usize, edit: &Edit) -> bool {
    matches!(win.get(edit.value_start - base), Some(b'{' | b'['))
}

/// Copies `win` from the cursor up to absolute offset `to`, unchanged.
#[inline]
pub(super) fn copy(win: &[u8], base: usize, cursor: &mut usize, to: usize, out: &mut Vec<u8>) {
    if to > *cursor {
        out.extend_from_slice(&win[*cursor - base..to - base]);
        *cursor = to;
    }
}

/// Whose tokens a value may hold.
#[derive(Debug, Clone, Copy)]
enum Owner<'a> {
    /// Outside records: no customer (deterministic tokens only).
    Envelope,
    /// In a record whose subject cannot be read: nothing opens.
    Unknown,
    Subject(&'a str),
}

impl<'a> Owner<'a> {
    fn subject(self) -> Option<&'a str> {
        match self {
            Owner::Subject(s) => Some(s),
            Owner::Envelope | Owner::Unknown => None,
        }
    }
}

/// Where a sealed value sits: its field, and whether selectors reach below it.
#[derive(Debug, Clone, Copy)]
struct Sealed {
    field: usize,
    below: bool,
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
