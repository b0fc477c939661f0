//! Profiling loop for the rewriter (not a benchmark: use `cargo bench`).
//! `cargo run --release --example prof_transform -- FILE ITERATIONS`
#![allow(clippy::unwrap_used, clippy::expect_used)]
use std::sync::Arc;

use consentry::transform::{
    Action, ActionTable, Detector, DetectorSet, Dfa, FieldSpec, Limits, Mark, Mask, Program,
    RecordOutcome, Render, Selector, Unlisted, rewrite_into,
};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let body = std::fs::read(&args[1]).expect("fixture");
    let iters: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(1000);
    let env = Dfa::build(&[(Selector::parse("$.results[*]").unwrap(), Mark::Record)]).unwrap();
    let fields = [
        ("$.properties.email", Action::Redact),
        ("$.properties.date_of_birth", Action::Redact),
        ("$.properties.phone", Action::Mask(Mask::Last(4))),
    ];
    let mut sels: Vec<(Selector, Mark)> = fields
        .iter()
        .enumerate()
        .map(|(i, f)| (Selector::parse(f.0).unwrap(), Mark::Field(i as u32)))
        .collect();
    sels.push((Selector::parse("$.id").unwrap(), Mark::Subject));
    let specs = fields
        .iter()
        .map(|f| FieldSpec {
            selector: f.0.into(),
            category: 0,
            scan: DetectorSet::EMPTY,
        })
        .collect();
    let render = Render {
        placeholder: b"\"[REDACTED]\"".as_slice().into(),
        ..Render::default()
    };
    let prog = Arc::new(Program::new(
        env,
        Dfa::build(&sels).unwrap(),
        specs,
        vec![],
        Unlisted::Allow,
        Arc::new(render),
    ));
    let table = Arc::new(ActionTable {
        fields: fields.iter().map(|f| f.1).collect(),
        detectors: [Action::Redact; Detector::COUNT],
        unlisted: Action::Allow,
    });
    let validate = Arc::new(Program::validate_only());
    let allow = Arc::new(ActionTable::allow_all(&validate));
    let env2 = Dfa::build(&[(Selector::parse("$.results[*]").unwrap(), Mark::Record)]).unwrap();
    let rec2 = Dfa::build(&[(Selector::parse("$.id").unwrap(), Mark::Subject)]).unwrap();
    let records_only = Arc::new(Program::new(
        env2,
        rec2,
        vec![],
        vec![],
        Unlisted::Allow,
        Arc::new(Render::default()),
    ));
    let allow2 = Arc::new(ActionTable::allow_all(&records_only));
    let (prog, table) = match args.get(3).map(String::as_str) {
        Some("validate") => (&validate, &allow),
        Some("records") => (&records_only, &allow2),
        _ => (&prog, &table),
    };
    let mut out = Vec::new();
    let mut best = f64::MAX;
    for _ in 0..10 {
        let t = std::time::Instant::now();
        for _ in 0..iters / 10 {
            out.clear();
            rewrite_into(
                prog,
                table,
                Limits::default(),
                &body,
                |_| RecordOutcome::Keep,
                &mut out,
            )
            .unwrap();
        }
        let el = t.elapsed().as_secs_f64();
        eprint!("{:.0} ", (body.len() * (iters / 10)) as f64 / el / 1e6);
        best = best.min(el);
    }
    println!(
        "best {:.1} MB/s",
        (body.len() * (iters / 10)) as f64 / best / 1e6
    );
}
