//! Property tests of the rewriter on generated documents: a selected value
//! never survives, no byte outside rewritten values changes, and how the body
//! is split into chunks changes nothing.

use std::sync::Arc;

use proptest::prelude::*;

use consentry::transform::{
    Action, ActionTable, Detector, DetectorSet, Dfa, FieldSpec, Limits, Mark, Program,
    RecordOutcome, Render, Rewriter, Selector, Subject, Unlisted, rewrite_all,
};

#[derive(Debug, Clone)]
enum J {
    Null,
    Bool(bool),
    Num(&'static str),
    Str(String),
    Arr(Vec<J>),
    Obj(Vec<(Key, J)>),
}

/// A member name and how it is spelled in the document.
#[derive(Debug, Clone)]
struct Key {
    name: &'static str,
    escape_first: bool,
}

const NAMES: &[&str] = &[
    "email", "EMAIL", "Email", "eMail", "a", "b", "name", "emails", "mail", "e",
];
const NUMS: &[&str] = &[
    "0",
    "-0",
    "1e400",
    "123456789012345678901234567890",
    "1.5E-3",
    "-12",
    "3.25",
    "7",
];

fn leaf() -> impl Strategy<Value = J> {
    prop_oneof![
        Just(J::Null),
        any::<bool>().prop_map(J::Bool),
        proptest::sample::select(NUMS).prop_map(J::Num),
        "[a-zA-Z0-9 é€😀\"\\\\/\n\t-]{0,12}".prop_map(J::Str),
    ]
}

fn tree() -> impl Strategy<Value = J> {
    leaf().prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..5).prop_map(J::Arr),
            proptest::collection::vec(
                (proptest::sample::select(NAMES), any::<bool>(), inner),
                0..5
            )
            .prop_map(|v| J::Obj(
                v.into_iter()
                    .map(|(name, e, j)| (
                        Key {
                            name,
                            escape_first: e
                        },
                        j
                    ))
                    .collect()
            )),
        ]
    })
}

/// Renders `j`; `ws` picks whitespace; records the byte span of every value
/// of a member named `email` (ASCII case-insensitive) that is not inside
/// another one: those are what `$..email` replaces, whole.
struct Render_ {
    out: Vec<u8>,
    spans: Vec<(usize, usize)>,
    seed: u64,
    secret: usize,
}

impl Render_ {
    fn ws(&mut self) {
        self.seed = self
            .seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let w: &[u8] = match (self.seed >> 60) % 6 {
            0 => b" ",
            1 => b"\n  ",
            2 => b"\t",
            _ => b"",
        };
        self.out.extend_from_slice(w);
    }

    fn string(&mut self, s: &str) {
        self.out.push(b'"');
        for c in s.chars() {
            self.seed = self.seed.wrapping_mul(6364136223846793005).wrapping_add(1);
            match c {
                '"' => self.out.extend_from_slice(b"\\\""),
                '\\' => self.out.extend_from_slice(b"\\\\"),
                '\n' => self.out.extend_from_slice(b"\\n"),
                '\t' => self.out.extend_from_slice(b"\\u0009"),
                '/' if self.seed >> 63 == 1 => self.out.extend_from_slice(b"\\/"),
                'é' if self.seed >> 63 == 1 => self.out.extend_from_slice(b"\\u00e9"),
                '😀' if self.seed >> 63 == 1 => self.out.extend_from_slice(b"\\ud83d\\ude00"),
                c => {
                    let mut b = [0u8; 4];
                    self.out.extend_from_slice(c.encode_utf8(&mut b).as_bytes());
                }
            }
        }
        self.out.push(b'"');
    }

    fn value(&mut self, j: &J, selected: bool) {
        let start = self.out.len();
        match j {
            J::Null => self.out.extend_from_slice(b"null"),
            J::Bool(b) => self
                .out
                .extend_from_slice(if *b { b"true" } else { b"false" }),
            J::Num(n) => self.out.extend_from_slice(n.as_bytes()),
            J::Str(s) => {
                // Selected strings carry a marker that must never survive.
                let s = if selected {
                    self.secret += 1;
                    format!("SECRET{}{s}", self.secret)
                } else {
                    s.clone()
                };
                self.string(&s);
            }
            J::Arr(items) => {
                self.out.push(b'[');
                for (i, it) in items.iter().enumerate() {
                    if i > 0 {
                        self.out.push(b',');
                    }
                    self.ws();
                    self.value(it, selected);
                    self.ws();
                }
                self.out.push(b']');
            }
            J::Obj(members) => {
                self.out.push(b'{');
                for (i, (k, v)) in members.iter().enumerate() {
                    if i > 0 {
                        self.out.push(b',');
                    }
                    self.ws();
                    self.out.push(b'"');
                    let bytes = k.name.as_bytes();
                    if k.escape_first {
                        self.out
                            .extend_from_slice(format!("\\u{:04x}", bytes[0]).as_bytes());
                        self.out.extend_from_slice(&bytes[1..]);
                    } else {
                        self.out.extend_from_slice(bytes);
                    }
                    self.out.push(b'"');
                    self.ws();
                    self.out.push(b':');
                    self.ws();
                    let is_email = k.name.eq_ignore_ascii_case("email");
                    let start = self.out.len();
                    self.value(v, selected || is_email);
                    if is_email && !selected {
                        self.spans.push((start, self.out.len()));
                    }
                    self.ws();
                }
                self.out.push(b'}');
            }
        }
        let _ = start;
    }
}

fn render(j: &J, seed: u64) -> (Vec<u8>, Vec<(usize, usize)>) {
    let mut r = Render_ {
        out: Vec::new(),
        spans: Vec::new(),
        seed,
        secret: 0,
    };
    r.ws();
    r.value(j, false);
    r.ws();
    (r.out, r.spans)
}

fn program(sel: &str, action: Action) -> (Arc<Program>, Arc<ActionTable>) {
    let env = Dfa::build(&[(Selector::parse("$").unwrap(), Mark::Record)]).unwrap();
    let rec = Dfa::build(&[(Selector::parse(sel).unwrap(), Mark::Field(0))]).unwrap();
    let spec = FieldSpec {
        selector: sel.into(),
        category: 0,
        scan: DetectorSet::EMPTY,
        seal: consentry::transform::Seal::No,
    };
    let prog = Program::new(
        env,
        rec,
        vec![spec],
        vec!["user".into()],
        Unlisted::Allow,
        Arc::new(Render::default()),
    );
    let table = ActionTable {
        fields: vec![action],
        detectors: [Action::Redact; Detector::COUNT],
        unlisted: Action::Allow,
    };
    (Arc::new(prog), Arc::new(table))
}

fn keep(_: Subject<'_>) -> RecordOutcome {
    RecordOutcome::Keep
}

/// All strings of a JSON value, decoded.
fn strings(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::String(s) => out.push(s.clone()),
        serde_json::Value::Array(a) => a.iter().for_each(|x| strings(x, out)),
        serde_json::Value::Object(o) => o.iter().for_each(|(k, x)| {
            out.push(k.clone());
            strings(x, out)
        }),
        _ => {}
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, .. ProptestConfig::default() })]

    #[test]
    fn redacted_values_never_survive_and_other_bytes_do(j in tree(), seed in any::<u64>()) {
        let (doc, spans) = render(&j, seed);
        let p = program("$..email", Action::Redact);
        let (out, _) = rewrite_all(&p.0, &p.1, Limits::default(), &doc, keep).unwrap();
        // Exactly the selected scalars became `null`; every other byte is kept.
        let mut expected = Vec::new();
        let mut at = 0;
        for (s, e) in &spans {
            expected.extend_from_slice(&doc[at..*s]);
            expected.extend_from_slice(b"null");
            at = *e;
        }
        expected.extend_from_slice(&doc[at..]);
        prop_assert_eq!(String::from_utf8_lossy(&out), String::from_utf8_lossy(&expected));
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        let mut all = Vec::new();
        strings(&v, &mut all);
        prop_assert!(all.iter().all(|s| !s.contains("SECRET")));
    }

    #[test]
    fn removed_members_leave_valid_json_without_them(j in tree(), seed in any::<u64>()) {
        let (doc, _) = render(&j, seed);
        let p = program("$..email", Action::Remove);
        let (out, _) = rewrite_all(&p.0, &p.1, Limits::default(), &doc, keep).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out)
            .map_err(|e| TestCaseError::fail(format!("{e}: {}", String::from_utf8_lossy(&out))))?;
        let mut all = Vec::new();
        strings(&v, &mut all);
        prop_assert!(all.iter().all(|s| !s.contains("SECRET") && !s.eq_ignore_ascii_case("email")));
    }

    #[test]
    fn chunking_never_changes_the_output(j in tree(), seed in any::<u64>(), cuts in proptest::collection::vec(any::<usize>(), 0..6)) {
        let (doc, _) = render(&j, seed);
        let p = program("$..email", Action::Redact);
        let (whole, _) = rewrite_all(&p.0, &p.1, Limits::default(), &doc, keep).unwrap();
        let mut points: Vec<usize> = cuts.iter().map(|c| c % (doc.len() + 1)).collect();
        points.sort_unstable();
        let mut rw = Rewriter::new(Arc::clone(&p.0), Arc::clone(&p.1), Limits::default());
        let mut out = Vec::new();
        let mut gate = keep;
        let mut at = 0;
        for c in points {
            rw.push(&doc[at..c], &mut gate, &mut out).unwrap();
            at = c;
        }
        rw.push(&doc[at..], &mut gate, &mut out).unwrap();
        rw.finish(&mut gate, &mut out).unwrap();
        prop_assert_eq!(out, whole);
    }

    #[test]
    fn report_modes_output_table_keeps_every_byte(j in tree(), seed in any::<u64>()) {
        // Selected fields with detectors, and unlisted values that the
        // policy would redact: `keep_all` still changes nothing.
        let (doc, _) = render(&j, seed);
        let env = Dfa::build(&[(Selector::parse("$").unwrap(), Mark::Record)]).unwrap();
        let rec = Dfa::build(&[(Selector::parse("$..email").unwrap(), Mark::Field(0))]).unwrap();
        let spec = FieldSpec {
            selector: "$..email".into(),
            category: 0,
            scan: DetectorSet::all(),
            seal: consentry::transform::Seal::No,
        };
        let prog = Program::new(env, rec, vec![spec], vec!["user".into()], Unlisted::Redact, Arc::new(Render::default()));
        let table = ActionTable::keep_all(&prog);
        let (out, _) = rewrite_all(&Arc::new(prog), &Arc::new(table), Limits::default(), &doc, keep).unwrap();
        prop_assert_eq!(out, doc);
    }

    #[test]
    fn a_policy_that_selects_nothing_changes_nothing(j in tree(), seed in any::<u64>()) {
        let (doc, _) = render(&j, seed);
        let p = program("$.nothing.here", Action::Redact);
        let (out, _) = rewrite_all(&p.0, &p.1, Limits::default(), &doc, keep).unwrap();
        prop_assert_eq!(out, doc);
    }

    #[test]
    fn the_rewriter_agrees_with_serde_json_on_validity(bytes in proptest::collection::vec(
        proptest::sample::select(b"{}[]\",:0123456789.eE+-truefalsn \\u\tx\xc3\xa9".to_vec()), 0..40)) {
        let p = program("$..email", Action::Redact);
        let ours = rewrite_all(&p.0, &p.1, Limits::default(), &bytes, keep).is_ok();
        let theirs = serde_json::from_slice::<serde_json::Value>(&bytes).is_ok();
        prop_assert_eq!(ours, theirs, "{:?}", String::from_utf8_lossy(&bytes));
    }
}
