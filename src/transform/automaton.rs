//! Selectors compiled into one deterministic automaton that the scanner follows.
//!
//! Every selector of a resource becomes a thread of an NFA whose positions are
//! `(selector, step)`; the subset construction below turns the set of all
//! selectors into a DFA once, at policy load. At run time the scanner does one
//! lookup per object key (`step_key`) or array element (`step_elem`) and reads
//! the state's `accept` to learn whether the value it is about to read was
//! selected, and by which selectors. No policy text is parsed per request.
//!
//! Keys are compared ASCII-case-insensitively: names are stored lowercased and
//! compared with `eq_ignore_ascii_case`, so `EMAIL`, `Email` and `email` (and
//! `"\u0045mail"`, after the scanner decodes it) all take the same transition.

use std::collections::{BTreeSet, HashMap};

use super::selector::{Selector, Step};

/// Index of a DFA state. State 0 is the dead state: nothing below it can match.
pub type StateId = u32;
pub const DEAD: StateId = 0;

/// What a selector marks when it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Mark {
    /// A field: index into the caller's table of fields.
    Field(u32),
    /// The record's subject id.
    Subject,
    /// A record root (used by the envelope automaton).
    Record,
}

/// A member name of a transition, prepared for a quick comparison: its
/// length and first eight (lowercased) bytes in one word decide almost every
/// lookup; longer names compare their tail afterwards.
#[derive(Debug, Clone)]
struct Name {
    len: usize,
    head: u64,
    tail: Box<[u8]>,
    to: StateId,
}

impl Name {
    fn new(name: &[u8], to: StateId) -> Name {
        Name {
            len: name.len(),
            head: head(name),
            tail: name.get(8..).unwrap_or_default().into(),
            to,
        }
    }
}

/// The first eight bytes of `s` (zero-padded), ASCII letters lowercased.
#[inline(always)]
fn head(s: &[u8]) -> u64 {
    let x = match s.get(..8) {
        Some(w) => {
            let mut a = [0u8; 8];
            a.copy_from_slice(w);
            u64::from_le_bytes(a)
        }
        None => s.iter().rev().fold(0u64, |x, &b| x << 8 | b as u64),
    };
    // SWAR to-lowercase: flag bytes in 'A'..='Z' (high bit clear) and add 0x20.
    const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let a7 = x & LOW7;
    let ge_a = a7 + 0x3f3f_3f3f_3f3f_3f3f;
    let gt_z = a7 + 0x2525_2525_2525_2525;
    let upper = ge_a & !gt_z & !x & HIGH;
    x | (upper >> 2)
}

#[derive(Debug, Clone, Default)]
pub struct State {
    /// Bit `len % 64` is set for the length of every name in `names`: most
    /// keys are rejected by one AND before any byte is compared.
    lengths: u64,
    /// Lowercased member names with their targets; everything else goes to `other`.
    names: Box<[Name]>,
    other: StateId,
    elem: StateId,
    /// Sorted, de-duplicated marks of the selectors that end here.
    pub marks: Box<[Mark]>,
    /// Whether any mark can be reached strictly below this state.
    pub live_below: bool,
}

impl State {
    /// Compares `key` with the names of the same length.
    #[inline(never)]
    fn lookup(&self, key: &[u8]) -> StateId {
        let mut h = None;
        for name in self.names.iter() {
            if name.len != key.len() {
                continue;
            }
            let h = *h.get_or_insert_with(|| head(key));
            if name.head == h && name.tail.eq_ignore_ascii_case(&key[key.len().min(8)..]) {
                return name.to;
            }
        }
        self.other
    }
}

#[derive(Debug, Clone)]
pub struct Dfa {
    states: Vec<State>,
}

/// The DFA would be too large: a pathological combination of `..` selectors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the selectors of this resource compile to more than {limit} automaton states")]
pub struct TooManyStates {
    pub limit: usize,
}

const MAX_STATES: usize = 4096;

type Pos = (u32, u32); // (selector index, step index)

impl Dfa {
    /// Builds the automaton for `selectors`, each with the mark it sets.
    pub fn build(selectors: &[(Selector, Mark)]) -> Result<Dfa, TooManyStates> {
        if selectors.is_empty() {
            return Ok(Dfa::empty());
        }
        let mut names: BTreeSet<Box<[u8]>> = BTreeSet::new();
        for (sel, _) in selectors {
            for step in sel.steps() {
                if let Step::Child(n) | Step::Descendant(n) = step {
                    names.insert(n.clone());
                }
            }
        }
        let mut b = Builder {
            selectors,
            index: HashMap::new(),
            sets: Vec::new(),
            states: Vec::new(),
        };
        b.intern(BTreeSet::new()); // DEAD
        let start: BTreeSet<Pos> = (0..selectors.len() as u32).map(|s| (s, 0)).collect();
        b.intern(start);
        let mut next = 1usize;
        while next < b.sets.len() {
            if b.sets.len() > MAX_STATES {
                return Err(TooManyStates { limit: MAX_STATES });
            }
            let set = b.sets[next].clone();
            let mut state_names = Vec::new();
            for n in &names {
                if !set.iter().any(|&(s, i)| b.step_names(s, i, n)) {
                    continue;
                }
                let target = b.advance(&set, Some(n));
                state_names.push((n.clone(), target));
            }
            let other = b.advance(&set, None);
            // Names whose transition equals `other` need no entry of their own.
            state_names.retain(|(_, t)| *t != other);
            let state_names: Vec<Name> =
                state_names.iter().map(|(n, t)| Name::new(n, *t)).collect();
            let elem = b.advance_elem(&set);
            let marks: BTreeSet<Mark> = set
                .iter()
                .filter(|&&(s, i)| i as usize == selectors[s as usize].0.steps().len())
                .map(|&(s, _)| selectors[s as usize].1)
                .collect();
            let lengths = state_names.iter().fold(0u64, |m, n| m | 1 << (n.len % 64));
            b.states[next] = State {
                lengths,
                names: state_names.into_boxed_slice(),
                other,
                elem,
                marks: marks.into_iter().collect(),
                live_below: false,
            };
            next += 1;
        }
        let mut dfa = Dfa { states: b.states };
        dfa.compute_liveness();
        Ok(dfa)
    }

    /// A DFA that matches nothing (all input is below the dead state).
    pub fn empty() -> Dfa {
        Dfa {
            states: vec![State::default(), State::default()],
        }
    }

    pub const fn start(&self) -> StateId {
        1
    }

    #[inline]
    pub fn state(&self, id: StateId) -> &State {
        &self.states[id as usize]
    }

    /// The transition taken by an object member whose (decoded) key is `key`.
    #[inline(always)]
    pub fn step_key(&self, from: StateId, key: &[u8]) -> StateId {
        let st = &self.states[from as usize];
        if st.lengths & (1 << (key.len() % 64)) == 0 {
            return st.other;
        }
        st.lookup(key)
    }

    /// The length filter and the fallback transition of a state (see `step_key`).
    #[inline]
    pub fn key_filter(&self, from: StateId) -> (u64, StateId) {
        let st = &self.states[from as usize];
        (st.lengths, st.other)
    }

    /// The transition taken by an array element.
    #[inline]
    pub fn step_elem(&self, from: StateId) -> StateId {
        self.states[from as usize].elem
    }

    /// Whether keys must be read at all in this state (any named or other transition).
    #[inline]
    pub fn reads_keys(&self, from: StateId) -> bool {
        let st = &self.states[from as usize];
        !st.names.is_empty() || st.other != DEAD
    }

    pub fn len(&self) -> usize {
        self.states.len()
    }

    /// For every state: whether a state with a mark satisfying `pred` can be
    /// reached strictly below it.
    pub fn reaches_below(&self, pred: impl Fn(&Mark) -> bool) -> Vec<bool> {
        let mut below = vec![false; self.states.len()];
        loop {
            let mut changed = false;
            for id in 0..self.states.len() {
                if below[id] {
                    continue;
                }
                let st = &self.states[id];
                let hit = st
                    .names
                    .iter()
                    .map(|n| n.to)
                    .chain([st.other, st.elem])
                    .filter(|&t| t != DEAD)
                    .any(|t| below[t as usize] || self.states[t as usize].marks.iter().any(&pred));
                if hit {
                    below[id] = true;
                    changed = true;
                }
            }
            if !changed {
                return below;
            }
        }
    }

    /// The states of this automaton, for checks at load time.
    pub fn states(&self) -> &[State] {
        &self.states
    }

    pub fn is_empty(&self) -> bool {
        self.states.len() <= 2 && self.states.iter().all(|s| s.marks.is_empty())
    }

    fn compute_liveness(&mut self) {
        // live(s) = any successor t has marks or live(t). Iterate to a fixpoint.
        loop {
            let mut changed = false;
            for id in 0..self.states.len() {
                if self.states[id].live_below {
                    continue;
                }
                let st = &self.states[id];
                let succ = st.names.iter().map(|n| n.to).chain([st.other, st.elem]);
                let live = succ.filter(|&t| t != DEAD).any(|t| {
                    let t = &self.states[t as usize];
                    !t.marks.is_empty() || t.live_below
                });
                if live {
                    self.states[id].live_below = true;
                    changed = true;
                }
            }
            if !changed {
                break;
            }
        }
    }
}

struct Builder<'a> {
    selectors: &'a [(Selector, Mark)],
    index: HashMap<BTreeSet<Pos>, StateId>,
    sets: Vec<BTreeSet<Pos>>,
    states: Vec<State>,
}

impl Builder<'_> {
    fn intern(&mut self, set: BTreeSet<Pos>) -> StateId {
        if set.is_empty() && !self.sets.is_empty() {
            return DEAD;
        }
        if let Some(&id) = self.index.get(&set) {
            return id;
        }
        let id = self.sets.len() as StateId;
        self.index.insert(set.clone(), id);
        self.sets.push(set);
        self.states.push(State::default());
        id
    }

    fn step(&self, s: u32, i: u32) -> Option<&Step> {
        self.selectors[s as usize].0.steps().get(i as usize)
    }

    /// Whether position (s, i) mentions name `n` (so `n` needs its own transition).
    fn step_names(&self, s: u32, i: u32, n: &[u8]) -> bool {
        matches!(self.step(s, i), Some(Step::Child(m) | Step::Descendant(m)) if **m == *n)
    }

    /// Successor set on a member key: `Some(name)` for a known name, `None` for any other.
    fn advance(&mut self, set: &BTreeSet<Pos>, key: Option<&[u8]>) -> StateId {
        let mut out = BTreeSet::new();
        for &(s, i) in set {
            match self.step(s, i) {
                None => {}
                Some(Step::Child(n)) if key == Some(&**n) => {
                    out.insert((s, i + 1));
                }
                Some(Step::Child(_)) => {}
                Some(Step::Any) => {
                    out.insert((s, i + 1));
                }
                Some(Step::Descendant(n)) => {
                    out.insert((s, i));
                    if key == Some(&**n) {
                        out.insert((s, i + 1));
                    }
                }
                Some(Step::DescendantAny) => {
                    out.insert((s, i));
                    out.insert((s, i + 1));
                }
            }
        }
        self.intern(out)
    }

    fn advance_elem(&mut self, set: &BTreeSet<Pos>) -> StateId {
        let mut out = BTreeSet::new();
        for &(s, i) in set {
            match self.step(s, i) {
                None | Some(Step::Child(_)) => {}
                Some(Step::Any) => {
                    out.insert((s, i + 1));
                }
                Some(Step::Descendant(_)) => {
                    out.insert((s, i));
                }
                Some(Step::DescendantAny) => {
                    out.insert((s, i));
                    out.insert((s, i + 1));
                }
            }
        }
        self.intern(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dfa(sels: &[(&str, Mark)]) -> Dfa {
        let v: Vec<_> = sels
            .iter()
            .map(|(s, m)| (Selector::parse(s).unwrap(), *m))
            .collect();
        Dfa::build(&v).unwrap()
    }

    /// Follows a path of keys (`Some`) and array elements (`None`).
    fn walk(d: &Dfa, path: &[Option<&str>]) -> StateId {
        path.iter().fold(d.start(), |s, p| match p {
            Some(k) => d.step_key(s, k.as_bytes()),
            None => d.step_elem(s),
        })
    }

    #[test]
    fn child_paths_and_case_insensitive_keys() {
        let d = dfa(&[
            ("$.properties.email", Mark::Field(0)),
            ("$.id", Mark::Subject),
        ]);
        let s = walk(&d, &[Some("properties"), Some("email")]);
        assert_eq!(&*d.state(s).marks, &[Mark::Field(0)]);
        let s = walk(&d, &[Some("PROPERTIES"), Some("eMaIl")]);
        assert_eq!(&*d.state(s).marks, &[Mark::Field(0)]);
        assert_eq!(&*d.state(walk(&d, &[Some("id")])).marks, &[Mark::Subject]);
        assert_eq!(walk(&d, &[Some("other")]), DEAD);
        assert_eq!(walk(&d, &[Some("properties"), Some("phone")]), DEAD);
        assert!(d.state(d.start()).live_below);
        assert!(d.state(walk(&d, &[Some("properties")])).live_below);
        assert!(!d.state(s).live_below);
    }

    #[test]
    fn long_and_non_ascii_names() {
        let d = dfa(&[
            ("$.hubspot_owner_id", Mark::Field(0)),
            ("$['caf\\u00e9']", Mark::Field(1)),
            ("$['a@b[c]']", Mark::Field(2)),
        ]);
        assert_eq!(
            &*d.state(walk(&d, &[Some("HubSpot_Owner_ID")])).marks,
            &[Mark::Field(0)]
        );
        assert_eq!(walk(&d, &[Some("hubspot_owner_ix")]), DEAD);
        assert_eq!(walk(&d, &[Some("hubspot_")]), DEAD);
        assert_eq!(
            &*d.state(walk(&d, &[Some("CAF\u{e9}")])).marks,
            &[Mark::Field(1)]
        );
        assert_eq!(
            walk(&d, &[Some("CAF\u{c9}")]),
            DEAD,
            "only ASCII letters fold"
        );
        assert_eq!(
            &*d.state(walk(&d, &[Some("A@B[C]")])).marks,
            &[Mark::Field(2)]
        );
        assert_eq!(walk(&d, &[Some("a`b[c]")]), DEAD);
    }

    #[test]
    fn wildcards_and_elements() {
        let d = dfa(&[("$.results[*]", Mark::Record)]);
        assert_eq!(
            &*d.state(walk(&d, &[Some("results"), None])).marks,
            &[Mark::Record]
        );
        // `[*]` also selects object members, as in RFC 9535.
        assert_eq!(
            &*d.state(walk(&d, &[Some("results"), Some("x")])).marks,
            &[Mark::Record]
        );
        assert_eq!(walk(&d, &[None]), DEAD);
    }

    #[test]
    fn descendants_match_at_any_depth() {
        let d = dfa(&[("$..email", Mark::Field(3)), ("$.a.b", Mark::Field(1))]);
        for path in [
            vec![Some("email")],
            vec![Some("x"), Some("EMAIL")],
            vec![Some("x"), None, Some("y"), Some("email")],
            vec![Some("a"), Some("email")],
        ] {
            let s = walk(&d, &path);
            assert_eq!(&*d.state(s).marks, &[Mark::Field(3)], "{path:?}");
        }
        let s = walk(&d, &[Some("a"), Some("b")]);
        assert_eq!(&*d.state(s).marks, &[Mark::Field(1)]);
        // Below a descendant selector everything stays live.
        assert!(d.state(walk(&d, &[Some("q"), Some("r")])).live_below);
    }

    #[test]
    fn overlapping_selectors_set_every_mark() {
        let d = dfa(&[
            ("$.p.email", Mark::Field(0)),
            ("$..email", Mark::Field(1)),
            ("$.p.*", Mark::Field(2)),
        ]);
        let s = walk(&d, &[Some("p"), Some("Email")]);
        assert_eq!(
            &*d.state(s).marks,
            &[Mark::Field(0), Mark::Field(1), Mark::Field(2)]
        );
    }

    #[test]
    fn root_selector_marks_the_start_state() {
        let d = dfa(&[("$", Mark::Record)]);
        assert_eq!(&*d.state(d.start()).marks, &[Mark::Record]);
        assert!(!d.state(d.start()).live_below);
    }
}
