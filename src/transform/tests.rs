//! Rewriter behaviour on hand-written documents. Property tests live in
//! `tests/it/transform_props.rs`; these pin the exact bytes.

use std::sync::Arc;

use super::rewrite::Gate;
use super::*;

/// A field: selector relative to the record, and its action for the test purpose.
struct F(&'static str, Action, DetectorSet);

fn program(
    records: &str,
    fields: &[F],
    subject: Option<&str>,
    unlisted: Unlisted,
) -> (Arc<Program>, Arc<ActionTable>) {
    let env = Dfa::build(&[(Selector::parse(records).unwrap(), Mark::Record)]).unwrap();
    let mut sels: Vec<(Selector, Mark)> = fields
        .iter()
        .enumerate()
        .map(|(i, f)| (Selector::parse(f.0).unwrap(), Mark::Field(i as u32)))
        .collect();
    if let Some(s) = subject {
        sels.push((Selector::parse(s).unwrap(), Mark::Subject));
    }
    let rec = Dfa::build(&sels).unwrap();
    let specs = fields
        .iter()
        .map(|f| FieldSpec {
            selector: f.0.to_owned(),
            category: 0,
            scan: f.2,
            seal: crate::transform::Seal::No,
        })
        .collect();
    let prog = Program::new(
        env,
        rec,
        specs,
        vec!["user".into()],
        unlisted,
        Arc::new(Render::default()),
    );
    let table = ActionTable {
        fields: fields.iter().map(|f| f.1).collect(),
        detectors: [Action::Redact; Detector::COUNT],
        unlisted: match unlisted {
            Unlisted::Allow => Action::Allow,
            Unlisted::Redact => Action::Redact,
            Unlisted::Remove => Action::Remove,
        },
    };
    (Arc::new(prog), Arc::new(table))
}

fn none() -> DetectorSet {
    DetectorSet::EMPTY
}

fn run(p: &(Arc<Program>, Arc<ActionTable>), body: &str) -> Result<String, TransformError> {
    run_with(p, body, |_| RecordOutcome::Keep)
}

fn run_with(
    p: &(Arc<Program>, Arc<ActionTable>),
    body: &str,
    gate: impl FnMut(Subject<'_>) -> RecordOutcome,
) -> Result<String, TransformError> {
    let (out, _) = rewrite_all(&p.0, &p.1, Limits::default(), body.as_bytes(), gate)?;
    Ok(String::from_utf8(out).unwrap())
}

/// Feeds `body` split at every possible point and checks the output never changes.
fn every_split(p: &(Arc<Program>, Arc<ActionTable>), body: &str, expected: &str) {
    let bytes = body.as_bytes();
    let mut keep = |_: Subject<'_>| RecordOutcome::Keep;
    for cut in 0..=bytes.len() {
        let mut rw = Rewriter::new(p.0.clone(), p.1.clone(), Limits::default());
        let mut out = Vec::new();
        rw.push(&bytes[..cut], &mut keep, &mut out).unwrap();
        rw.push(&bytes[cut..], &mut keep, &mut out).unwrap();
        rw.finish(&mut keep, &mut out).unwrap();
        assert!(rw.is_complete());
        assert_eq!(String::from_utf8(out).unwrap(), expected, "split at {cut}");
    }
}

#[test]
fn redacts_selected_values_and_keeps_every_other_byte() {
    let p = program(
        "$",
        &[F("$.properties.email", Action::Redact, none())],
        None,
        Unlisted::Allow,
    );
    let body = "{ \"id\" : 1e400,\n  \"properties\": {\"email\":\"a@b.example\" , \"n\": 123456789012345678901234567890, \"s\":\"\\u00e9\\/\"}\t}\n";
    let expected = "{ \"id\" : 1e400,\n  \"properties\": {\"email\":null , \"n\": 123456789012345678901234567890, \"s\":\"\\u00e9\\/\"}\t}\n";
    assert_eq!(run(&p, body).unwrap(), expected);
    every_split(&p, body, expected);
}

#[test]
fn every_occurrence_counts() {
    let p = program(
        "$",
        &[F("$.email", Action::Redact, none())],
        None,
        Unlisted::Allow,
    );
    assert_eq!(
        run(&p, r#"{"email":"a","EMAIL":"b","\u0065mail":"c","Em\u0041il":"d","emails":"e","email":"f"}"#).unwrap(),
        r#"{"email":null,"EMAIL":null,"\u0065mail":null,"Em\u0041il":null,"emails":"e","email":null}"#
    );
}

#[test]
fn containers_are_replaced_whole_or_per_leaf() {
    let p = program(
        "$",
        &[
            F("$.address", Action::Redact, none()),
            F("$.p", Action::Redact, none()),
            F("$.p.keep", Action::Allow, none()),
        ],
        None,
        Unlisted::Allow,
    );
    assert_eq!(
        run(
            &p,
            r#"{"address":{"street":"x","n":[1,2]},"p":{"a":"1","keep":"2","b":[3]}}"#
        )
        .unwrap(),
        r#"{"address":null,"p":{"a":null,"keep":"2","b":null}}"#
    );
}

#[test]
fn remove_deletes_members_with_one_comma() {
    let f = |s| program("$", &[F(s, Action::Remove, none())], None, Unlisted::Allow);
    let p = f("$.a");
    assert_eq!(run(&p, r#"{"a":1,"b":2}"#).unwrap(), r#"{"b":2}"#);
    assert_eq!(run(&p, r#"{"b":2,"a":1}"#).unwrap(), r#"{"b":2}"#);
    assert_eq!(
        run(&p, r#"{"b":2,"a":1,"c":3}"#).unwrap(),
        r#"{"b":2,"c":3}"#
    );
    assert_eq!(run(&p, r#"{"a":1,"a":2,"b":3}"#).unwrap(), r#"{"b":3}"#);
    assert_eq!(run(&p, r#"{"a":1,"A":2}"#).unwrap(), r#"{}"#);
    assert_eq!(
        run(&p, r#"{ "a" : 1 , "b" : 2 }"#).unwrap(),
        r#"{ "b" : 2 }"#
    );
    assert_eq!(run(&p, r#"{"b":2 , "a":1 }"#).unwrap(), r#"{"b":2  }"#);
    assert_eq!(
        run(&p, r#"{"a":{"x":[1,{"y":2}]},"b":1}"#).unwrap(),
        r#"{"b":1}"#
    );
    let p = f("$.l[*]");
    assert_eq!(
        run(&p, r#"{"l":[1,2,3],"m":[4]}"#).unwrap(),
        r#"{"l":[],"m":[4]}"#
    );
    // Removing the record root itself is impossible: it is redacted instead.
    let p = f("$");
    assert_eq!(run(&p, r#"{"a":1}"#).unwrap(), "null");
    every_split(&f("$.a"), r#"{"b":2,"a":1,"c":3}"#, r#"{"b":2,"c":3}"#);
}

#[test]
fn lists_of_records_and_subjects() {
    let p = program(
        "$.results[*]",
        &[
            F("$.properties.email", Action::Redact, none()),
            F("$.properties.phone", Action::Mask(Mask::Last(4)), none()),
        ],
        Some("$.id"),
        Unlisted::Allow,
    );
    let body = r#"{"results":[{"id":"1","properties":{"email":"a@x.example","phone":"+1 555 234 5678"}},{"properties":{"email":"b@x.example"},"id":2},{"id":"3","id":"4"},{"id":{"x":1}},{}],"paging":{"next":{"after":"5"}}}"#;
    let mut seen = Vec::new();
    let out = run_with(&p, body, |s| {
        seen.push(s.clone().map_id());
        RecordOutcome::Keep
    })
    .unwrap();
    assert_eq!(
        out,
        r#"{"results":[{"id":"1","properties":{"email":null,"phone":"***5678"}},{"properties":{"email":null},"id":2},{"id":"3","id":"4"},{"id":{"x":1}},{}],"paging":{"next":{"after":"5"}}}"#
    );
    assert_eq!(
        seen,
        vec!["id:1", "id:2", "ambiguous", "invalid", "missing"]
    );
}

trait MapId {
    fn map_id(self) -> String;
}
impl MapId for Subject<'_> {
    fn map_id(self) -> String {
        match self {
            Subject::Id(s) => format!("id:{s}"),
            Subject::Ambiguous => "ambiguous".into(),
            Subject::Invalid => "invalid".into(),
            Subject::Missing => "missing".into(),
        }
    }
}

#[test]
fn same_subject_spelled_twice_is_not_ambiguous() {
    let p = program("$[*]", &[], Some("$.id"), Unlisted::Allow);
    let mut seen = Vec::new();
    run_with(&p, r#"[{"id":"7","ID":"\u0037"}]"#, |s| {
        seen.push(s.map_id());
        RecordOutcome::Keep
    })
    .unwrap();
    assert_eq!(seen, vec!["id:7"]);
}

#[test]
fn record_outcomes_drop_redact_block() {
    let p = program(
        "$.results[*]",
        &[F("$.email", Action::Allow, none())],
        Some("$.id"),
        Unlisted::Allow,
    );
    let body =
        r#"{"results":[{"id":"1","email":"a"}, {"id":"2","email":"b"}, {"id":"3","email":"c"}]}"#;
    let by = |drop: &'static [&'static str], outcome: RecordOutcome| {
        move |s: Subject<'_>| match s {
            Subject::Id(id) if drop.contains(&&*id) => outcome,
            _ => RecordOutcome::Keep,
        }
    };
    let d = RecordOutcome::Drop;
    assert_eq!(
        run_with(&p, body, by(&["1"], d)).unwrap(),
        r#"{"results":[{"id":"2","email":"b"}, {"id":"3","email":"c"}]}"#
    );
    assert_eq!(
        run_with(&p, body, by(&["2"], d)).unwrap(),
        r#"{"results":[{"id":"1","email":"a"}, {"id":"3","email":"c"}]}"#
    );
    assert_eq!(
        run_with(&p, body, by(&["3"], d)).unwrap(),
        r#"{"results":[{"id":"1","email":"a"}, {"id":"2","email":"b"}]}"#
    );
    assert_eq!(
        run_with(&p, body, by(&["1", "2"], d)).unwrap(),
        r#"{"results":[{"id":"3","email":"c"}]}"#
    );
    assert_eq!(
        run_with(&p, body, by(&["1", "2", "3"], d)).unwrap(),
        r#"{"results":[]}"#
    );
    assert_eq!(
        run_with(&p, body, by(&["2"], RecordOutcome::Redact)).unwrap(),
        r#"{"results":[{"id":"1","email":"a"}, {"id":"2","email":null}, {"id":"3","email":"c"}]}"#
    );
    assert_eq!(
        run_with(&p, body, by(&["2"], RecordOutcome::Block)),
        Err(TransformError::Blocked { record: 1 })
    );
    let single = program("$", &[], Some("$.id"), Unlisted::Allow);
    assert!(matches!(
        run_with(&single, r#"{"id":"1"}"#, |_| RecordOutcome::Drop),
        Err(TransformError::Blocked { .. })
    ));
}

#[test]
fn unlisted_values_follow_the_resource_default() {
    let p = program(
        "$.results[*]",
        &[F("$.name", Action::Allow, none())],
        Some("$.id"),
        Unlisted::Redact,
    );
    assert_eq!(
        run(
            &p,
            r#"{"results":[{"id":"1","name":"n","x":{"y":[1]}}],"paging":{"n":2}}"#
        )
        .unwrap(),
        r#"{"results":[{"id":null,"name":"n","x":null}],"paging":null}"#
    );
    let p = program(
        "$.results[*]",
        &[F("$.name", Action::Allow, none())],
        None,
        Unlisted::Remove,
    );
    assert_eq!(
        run(&p, r#"{"results":[{"id":"1","name":"n","x":2}],"total":1}"#).unwrap(),
        r#"{"results":[{"name":"n"}]}"#
    );
}

#[test]
fn free_text_fields_are_scanned_when_allowed() {
    let p = program(
        "$",
        &[
            F("$.notes", Action::Allow, DetectorSet::all()),
            F("$.other", Action::Redact, DetectorSet::all()),
        ],
        None,
        Unlisted::Allow,
    );
    assert_eq!(
        run(
            &p,
            r#"{"notes":"mail a@b.example or card 4111 1111 1111 1111.","other":"x@y.example"}"#
        )
        .unwrap(),
        r#"{"notes":"mail [EMAIL] or card [CARD].","other":null}"#
    );
}

#[test]
fn lists_stream_record_by_record() {
    let p = program(
        "$.results[*]",
        &[F("$.e", Action::Redact, none())],
        None,
        Unlisted::Allow,
    );
    let mut rw = Rewriter::new(p.0.clone(), p.1.clone(), Limits::default());
    let mut out = Vec::new();
    let mut keep = |_: Subject<'_>| RecordOutcome::Keep;
    rw.push(
        br#"{"results":[{"e":"1"},{"e":"2"},{"e":"3"#,
        &mut keep,
        &mut out,
    )
    .unwrap();
    assert_eq!(
        String::from_utf8(out.clone()).unwrap(),
        r#"{"results":[{"e":null},{"e":null}"#
    );
    rw.push(br#""}]}"#, &mut keep, &mut out).unwrap();
    rw.finish(&mut keep, &mut out).unwrap();
    assert_eq!(
        String::from_utf8(out).unwrap(),
        r#"{"results":[{"e":null},{"e":null},{"e":null}]}"#
    );
    assert_eq!(rw.stats().records, 3);
    assert_eq!(rw.stats().redacted, 3);
}

#[test]
fn memory_is_bounded_by_the_largest_record() {
    let p = program(
        "$.results[*]",
        &[F("$.e", Action::Redact, none())],
        None,
        Unlisted::Allow,
    );
    let limits = Limits {
        max_depth: 64,
        max_buffer: 64,
    };
    let mut rw = Rewriter::new(p.0.clone(), p.1.clone(), limits);
    let mut out = Vec::new();
    let mut keep = |_: Subject<'_>| RecordOutcome::Keep;
    rw.push(b"{\"results\":[", &mut keep, &mut out).unwrap();
    for _ in 0..1000 {
        rw.push(br#"{"e":"0123456789"},"#, &mut keep, &mut out)
            .unwrap();
    }
    // An unfinished record larger than the limit must not be held.
    let big = format!(r#"{{"e":"{}"#, "x".repeat(100));
    assert_eq!(
        rw.push(big.as_bytes(), &mut keep, &mut out),
        Err(TransformError::TooLarge { limit: 64 })
    );
}

#[test]
fn malformed_input_fails() {
    let p = program(
        "$",
        &[F("$.a", Action::Redact, none())],
        None,
        Unlisted::Allow,
    );
    for bad in [
        "",
        " ",
        "{",
        "{\"a\":1",
        "{\"a\":1,}",
        "[1,]",
        "{\"a\" 1}",
        "{a:1}",
        "{'a':1}",
        "[01]",
        "[1.]",
        "[.5]",
        "[+1]",
        "[NaN]",
        "[Infinity]",
        "{\"a\":1}{}",
        "{\"a\":1} x",
        "\u{feff}{}",
        "[\"\\ud800\"]",
        "[\"a\tb\"]",
        "[tru]",
        "[nul]",
        "// c\n{}",
        "{\"a\":1 /* c */}",
        "[1 2]",
        "{\"a\":1 \"b\":2}",
        "]",
        "{]",
        "[}",
        "\"abc",
        "{\"a\":\"\\x\"}",
    ] {
        assert!(
            matches!(run(&p, bad), Err(TransformError::Malformed { .. })),
            "{bad:?} was accepted"
        );
    }
    let invalid_utf8 = [b'[', b'"', 0xC3, 0x28, b'"', b']'];
    // (the deferral path is covered in `deferred_decisions_wait_for_resume`)
    assert!(
        rewrite_all(&p.0, &p.1, Limits::default(), &invalid_utf8, |_| {
            RecordOutcome::Keep
        })
        .is_err()
    );
    let deep = "[".repeat(65) + &"]".repeat(65);
    assert!(matches!(
        run(&p, &deep),
        Err(TransformError::Malformed {
            kind: lex::Malformed::TooDeep,
            ..
        })
    ));
}

#[test]
fn scalars_and_top_level_values() {
    let p = program(
        "$",
        &[F("$", Action::Redact, none())],
        None,
        Unlisted::Allow,
    );
    assert_eq!(run(&p, " \"secret\" ").unwrap(), " null ");
    assert_eq!(run(&p, "12").unwrap(), "null");
    let p = program("$", &[], None, Unlisted::Allow);
    for ok in [
        "1", "true", "null", "[]", "{}", "  [ ]  ", "\"\"", "-0.0e-0",
    ] {
        assert_eq!(run(&p, ok).unwrap(), ok);
    }
}

#[test]
fn descendant_selectors_reach_nested_values() {
    let p = program(
        "$",
        &[F("$..email", Action::Redact, none())],
        None,
        Unlisted::Allow,
    );
    assert_eq!(
        run(&p, r#"{"a":[{"email":"x","b":{"Email":"y"}}],"email":"z"}"#).unwrap(),
        r#"{"a":[{"email":null,"b":{"Email":null}}],"email":null}"#
    );
}

#[test]
fn most_restrictive_action_wins_on_overlap() {
    let p = program(
        "$",
        &[
            F("$.p.email", Action::Allow, none()),
            F("$..email", Action::Mask(Mask::EmailDomain), none()),
        ],
        None,
        Unlisted::Allow,
    );
    assert_eq!(
        run(&p, r#"{"p":{"email":"j@d.example"}}"#).unwrap(),
        r#"{"p":{"email":"***@d.example"}}"#
    );
}

#[test]
fn deferred_decisions_wait_for_resume() {
    let p = program("$.results[*]", &[], Some("$.id"), Unlisted::Allow);
    let mut rw = Rewriter::new(p.0.clone(), p.1.clone(), Limits::default());
    let mut out = Vec::new();
    struct Later;
    impl Gate for Later {
        fn decide(&mut self, _: Subject<'_>) -> Option<RecordOutcome> {
            None
        }
    }
    rw.push(
        br#"{"results":[{"id":"1"},{"id":"2"}]}"#,
        &mut Later,
        &mut out,
    )
    .unwrap();
    rw.finish(&mut Later, &mut out).unwrap();
    assert!(
        out.is_empty(),
        "nothing leaves before its record is decided"
    );
    let ids: Vec<String> = rw.undecided().map(|s| s.map_id()).collect();
    assert_eq!(ids, vec!["id:1", "id:2"]);
    let mut drop_first = |s: Subject<'_>| {
        if s == Subject::Id("1".into()) {
            RecordOutcome::Drop
        } else {
            RecordOutcome::Keep
        }
    };
    rw.resume(&mut drop_first, &mut out).unwrap();
    assert!(rw.is_complete());
    assert_eq!(
        String::from_utf8(out).unwrap(),
        r#"{"results":[{"id":"2"}]}"#
    );
}

#[test]
fn redacted_containers_do_not_leak_their_keys() {
    let p = program(
        "$",
        &[F("$..email", Action::Redact, none())],
        None,
        Unlisted::Allow,
    );
    assert_eq!(
        run(
            &p,
            r#"{"email":{"jane@x.example":true},"list":[{"email":[]}]}"#
        )
        .unwrap(),
        r#"{"email":null,"list":[{"email":null}]}"#
    );
    let p = program(
        "$",
        &[
            F("$.p", Action::Redact, none()),
            F("$.p.keep", Action::Allow, none()),
        ],
        None,
        Unlisted::Allow,
    );
    // `keep` is shown, so `p` keeps its shape; `a` is replaced whole.
    assert_eq!(
        run(&p, r#"{"p":{"a":{"jane@x.example":1},"keep":2}}"#).unwrap(),
        r#"{"p":{"a":null,"keep":2}}"#
    );
    let p = program(
        "$.results[*]",
        &[F("$.name", Action::Allow, none())],
        None,
        Unlisted::Remove,
    );
    assert_eq!(
        run(
            &p,
            r#"{"results":[{"name":"n","extra":{"jane@x.example":1},"tags":["a"]}]}"#
        )
        .unwrap(),
        r#"{"results":[{"name":"n"}]}"#
    );
}
