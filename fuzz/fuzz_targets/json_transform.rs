//! The rewriter on arbitrary bytes: never panics; what it accepts serde_json
//! accepts too; no value under a selected key survives; how the body is cut
//! into chunks never changes the output; report mode's `keep_all` table
//! changes no byte.
#![no_main]

use std::sync::Arc;

use consentry::transform::{
    Action, ActionTable, Detector, DetectorSet, Dfa, FieldSpec, Limits, Mark, Program, RecordOutcome, Render,
    Rewriter, Seal, Selector, Subject, Unlisted, rewrite_all,
};
use libfuzzer_sys::fuzz_target;

fn program() -> (Arc<Program>, Arc<ActionTable>) {
    let env = Dfa::build(&[(Selector::parse("$.results[*]").unwrap(), Mark::Record)]).unwrap();
    let rec = Dfa::build(&[
        (Selector::parse("$..email").unwrap(), Mark::Field(0)),
        (Selector::parse("$.notes").unwrap(), Mark::Field(1)),
        (Selector::parse("$.id").unwrap(), Mark::Subject),
    ])
    .unwrap();
    let fields = vec![
        FieldSpec { selector: "$..email".into(), category: 0, scan: DetectorSet::EMPTY, seal: Seal::No },
        FieldSpec { selector: "$.notes".into(), category: 1, scan: DetectorSet::all(), seal: Seal::No },
    ];
    let prog = Program::new(env, rec, fields, vec!["a".into(), "b".into()], Unlisted::Allow, Arc::new(Render::default()));
    let table = ActionTable {
        fields: vec![Action::Redact, Action::Allow],
        detectors: [Action::Redact; Detector::COUNT],
        unlisted: Action::Allow,
    };
    (Arc::new(prog), Arc::new(table))
}

fn no_email(v: &serde_json::Value, in_record: bool) -> bool {
    match v {
        serde_json::Value::Object(o) => o.iter().all(|(k, x)| {
            (!in_record || !k.eq_ignore_ascii_case("email") || x.is_null()) && no_email(x, in_record)
        }),
        serde_json::Value::Array(a) => a.iter().all(|x| no_email(x, in_record)),
        _ => true,
    }
}

fuzz_target!(|data: &[u8]| {
    let (prog, table) = program();
    let keep = |_: Subject<'_>| RecordOutcome::Keep;
    let whole = rewrite_all(&prog, &table, Limits::default(), data, keep);
    if let Ok((out, _)) = &whole {
        let v: serde_json::Value = serde_json::from_slice(out).expect("output is JSON");
        if let Some(list) = v.get("results").and_then(|r| r.as_array()) {
            assert!(list.iter().all(|r| no_email(r, true)), "a selected value survived");
        }
        assert!(serde_json::from_slice::<serde_json::Value>(data).is_ok(), "accepted non-JSON");
    }
    // The same body in three chunks.
    let a = data.first().map_or(0, |b| *b as usize) % (data.len() + 1);
    let b = (a + data.len() / 2) % (data.len() + 1);
    let (a, b) = (a.min(b), a.max(b));
    let mut rw = Rewriter::new(Arc::clone(&prog), Arc::clone(&table), Limits::default());
    let mut out = Vec::new();
    let mut gate = keep;
    let split = rw
        .push(&data[..a], &mut gate, &mut out)
        .and_then(|()| rw.push(&data[a..b], &mut gate, &mut out))
        .and_then(|()| rw.push(&data[b..], &mut gate, &mut out))
        .and_then(|()| rw.finish(&mut gate, &mut out));
    match (&whole, split) {
        (Ok((w, _)), Ok(())) => assert_eq!(w, &out, "chunking changed the output"),
        (Err(_), Err(_)) => {}
        (w, s) => panic!("whole {:?} vs split {:?}", w.as_ref().map(|_| ()), s),
    }
    // Report mode's output table keeps every byte of what it accepts.
    let keep_all = Arc::new(ActionTable::keep_all(&prog));
    if let Ok((kept, _)) = rewrite_all(&prog, &keep_all, Limits::default(), data, keep) {
        assert_eq!(kept, data, "keep_all changed a byte");
    }
});
