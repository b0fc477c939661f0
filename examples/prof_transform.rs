//! Profiling loop for the rewriter (not a benchmark: use `cargo bench`).
//! `cargo run --release --example prof_transform -- FILE ITERATIONS [validate]`
//! Rewrites FILE (a list like the peer harness's contacts_100.json) with the
//! peers' policy (bench/policies/peer.yaml) and prints the best of 10 rounds.
#![allow(clippy::unwrap_used, clippy::expect_used)]
use std::sync::Arc;

use consentry::policy::{Options, compile};
use consentry::transform::{ActionTable, Limits, Program, RecordOutcome, rewrite_into};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let body = std::fs::read(&args[1]).expect("fixture");
    let iters: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(1000);
    let yaml = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/bench/policies/peer.yaml"
    ))
    .unwrap();
    let (set, _) = compile::compile(&[("peer.yaml".into(), yaml)], &Options::default()).unwrap();
    let res = set
        .resources()
        .iter()
        .find(|r| &*r.name == "contacts")
        .unwrap();
    let (mut prog, mut table) = (
        Arc::clone(&res.program),
        Arc::clone(&res.rule_for("essential.service").unwrap().table),
    );
    if args.get(3).map(String::as_str) == Some("validate") {
        prog = Arc::new(Program::validate_only());
        table = Arc::new(ActionTable::allow_all(&prog));
    }
    let mut out = Vec::new();
    let mut best = f64::MAX;
    for _ in 0..10 {
        let t = std::time::Instant::now();
        for _ in 0..iters / 10 {
            out.clear();
            rewrite_into(
                &prog,
                &table,
                Limits::default(),
                &body,
                |_| RecordOutcome::Keep,
                &mut out,
            )
            .unwrap();
        }
        best = best.min(t.elapsed().as_secs_f64());
    }
    println!(
        "best {:.1} MB/s",
        (body.len() * (iters / 10)) as f64 / best / 1e6
    );
}
