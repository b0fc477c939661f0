#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark: panics on bad fixtures are fine
//! Transform kernel benchmarks: the rewriter on the peer benchmark's fixtures
//! against a serde_json parse + modify + serialize redactor, in the same run.
//!
//! Fixtures: `$CONSENTRY_FIXTURES`, else `/tmp/consentry-bench/fixtures` (made by
//! `../shared/bench/setup.sh`), else `../shared/bench/fixtures`, else the demo
//! CRM's generator (same shape). Run: `cargo bench --bench transform`.

use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};

use consentry::policy::{Options, Resource, Rule, compile};
use consentry::transform::{
    ActionTable, DetectorSet, Limits, Program, RecordOutcome, Rewriter, Subject, rewrite_into,
};

fn fixture(name: &str) -> Vec<u8> {
    let dirs = [
        std::env::var("CONSENTRY_FIXTURES").ok().map(PathBuf::from),
        Some(PathBuf::from("/tmp/consentry-bench/fixtures")),
        Some(PathBuf::from("../shared/bench/fixtures")),
    ];
    for d in dirs.into_iter().flatten() {
        if let Ok(b) = std::fs::read(d.join(name)) {
            return b;
        }
    }
    let n = match name {
        "contact_1.json" => 0,
        "contacts_100.json" => 100,
        _ => 10_000,
    };
    consentry::demo::data::fixture_body(n)
}

/// The peers' policy, compiled from `bench/policies/peer.yaml` as the gateway
/// compiles it. With `notes`, the notes are also scanned for e-mails, phones
/// and cards. `resource` is `contact` (one record) or `contacts` (a list).
fn program(resource: &str, notes: bool) -> (Arc<Program>, Arc<ActionTable>) {
    let (res, rule) = compiled(resource, notes, false);
    (Arc::clone(&res.program), Arc::clone(&rule.table))
}

/// A resource of the peers' policy (see `peer_yaml`) and its support rule.
fn compiled(resource: &str, notes: bool, consent: bool) -> (Arc<Resource>, Arc<Rule>) {
    let (set, _) = compile::compile(
        &[("peer.yaml".into(), peer_yaml(notes, consent))],
        &Options::default(),
    )
    .unwrap();
    let res = set
        .resources()
        .iter()
        .find(|r| &*r.name == resource)
        .unwrap();
    let rule = Arc::clone(res.rule_for("essential.service").unwrap());
    (Arc::clone(res), rule)
}

/// The peers' policy; `notes` scans the notes too; `consent` gives each
/// record a subject and makes the purpose need consent (as `bench/consent.sh`).
fn peer_yaml(notes: bool, consent: bool) -> String {
    let mut yaml = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/bench/policies/peer.yaml"
    ))
    .unwrap();
    if consent {
        yaml = yaml.replace("    fields: ", "    subject: $.id\n    fields: ");
        yaml = yaml.replace(
            "  - purpose: essential.service\n",
            "  - purpose: essential.service\n    basis: consent\n",
        );
    }
    if notes {
        yaml = yaml.replace(
            "      $.properties.phone: user.contact.phone_number\n",
            "      $.properties.phone: user.contact.phone_number\n      $.properties.notes: { category: user.content, scan: [email, phone, payment_card] }\n",
        );
        yaml = yaml.replace(
            "redact: [user.contact.email,",
            "redact: [user.financial, user.contact.email,",
        );
    }
    yaml
}

/// The DOM baseline: what a serde_json redactor does with the same policy.
fn serde_redact(body: &[u8]) -> Vec<u8> {
    let mut v: serde_json::Value = serde_json::from_slice(body).unwrap();
    fn one(rec: &mut serde_json::Value) {
        if let Some(p) = rec.get_mut("properties").and_then(|p| p.as_object_mut()) {
            for k in ["email", "date_of_birth"] {
                if let Some(x) = p.get_mut(k) {
                    *x = serde_json::Value::String("[REDACTED]".into());
                }
            }
            if let Some(x) = p.get_mut("phone") {
                let d: String = x
                    .as_str()
                    .unwrap_or("")
                    .chars()
                    .filter(|c| c.is_ascii_digit())
                    .collect();
                *x = serde_json::Value::String(format!("***{}", &d[d.len().saturating_sub(4)..]));
            }
        }
    }
    match v.get_mut("results").and_then(|r| r.as_array_mut()) {
        Some(list) => list.iter_mut().for_each(one),
        None => one(&mut v),
    }
    serde_json::to_vec(&v).unwrap()
}

fn kernel(c: &mut Criterion) {
    let cases = [
        ("contact_1", "contact_1.json", "contact"),
        ("contacts_100", "contacts_100.json", "contacts"),
        ("export_10k", "export.json", "export"),
    ];
    for (name, file, records) in cases {
        let body = fixture(file);
        let mut g = c.benchmark_group(format!("transform/{name}"));
        g.throughput(Throughput::Bytes(body.len() as u64));
        if body.len() > 1 << 20 {
            g.sample_size(10);
        }
        let fields = program(records, false);
        let notes = program(records, true);
        let limits = Limits::default();
        let mut out = Vec::with_capacity(body.len() + 1024);
        let keep = |_: Subject<'_>| RecordOutcome::Keep;
        g.bench_function("rewriter_fields", |b| {
            b.iter(|| {
                out.clear();
                rewrite_into(
                    &fields.0,
                    &fields.1,
                    limits,
                    black_box(&body),
                    keep,
                    &mut out,
                )
                .unwrap()
            })
        });
        g.bench_function("rewriter_fields_and_notes", |b| {
            b.iter(|| {
                out.clear();
                rewrite_into(&notes.0, &notes.1, limits, black_box(&body), keep, &mut out).unwrap()
            })
        });
        // As the proxy runs it: 64 KiB chunks in, a fresh output buffer per chunk.
        g.bench_function("rewriter_fields_chunked_64k", |b| {
            b.iter(|| {
                let mut rw = Rewriter::new(fields.0.clone(), fields.1.clone(), limits);
                let mut gate = keep;
                let mut n = 0;
                for chunk in black_box(&body).chunks(64 << 10) {
                    let mut o = Vec::new();
                    rw.push(chunk, &mut gate, &mut o).unwrap();
                    n += o.len();
                }
                let mut o = Vec::new();
                rw.finish(&mut gate, &mut o).unwrap();
                n + o.len()
            })
        });
        g.bench_function("serde_json_dom", |b| {
            b.iter(|| serde_redact(black_box(&body)))
        });
        g.finish();
    }
}

fn detectors(c: &mut Criterion) {
    let body = fixture("contacts_100.json");
    let text = String::from_utf8_lossy(&body).into_owned();
    let mut g = c.benchmark_group("detect");
    g.throughput(Throughput::Bytes(text.len() as u64));
    let mut out = Vec::new();
    g.bench_function("all_detectors_over_list_text", |b| {
        b.iter(|| {
            out.clear();
            consentry::transform::detect::detect(
                black_box(text.as_bytes()),
                DetectorSet::all(),
                &mut out,
            );
            out.len()
        })
    });
    g.finish();
}

/// The consent check on a cached 100-record list: the same rewrite with every
/// record's subject checked against the shared consent cache (all granted,
/// as after the first request), against no check at all. The difference per
/// record is the check's cost. `gate_only` is 100 checks without rewriting.
fn consent(c: &mut Criterion) {
    use consentry::clock::ManualClock;
    use consentry::consent::Consents;
    use consentry::consent::gate::ConsentGate;
    use consentry::consent::model::{ConsentEvent, Status};
    use consentry::consent::store::MemoryStore;
    use consentry::transform::Gate;

    let body = fixture("contacts_100.json");
    let (res, rule) = compiled("contacts", false, true);
    let check = rule.consent.unwrap();
    let now = 1_900_000_000_000;
    let consents = Arc::new(Consents::new(
        Arc::new(MemoryStore::default()),
        ManualClock::at(now),
    ));
    let ids: Vec<String> = serde_json::from_slice::<serde_json::Value>(&body).unwrap()["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect();
    let events: Vec<ConsentEvent> = ids
        .iter()
        .map(|id| ConsentEvent {
            subject: id.clone(),
            purpose: "essential.service".into(),
            status: Status::Granted,
            at: now - 1,
            source: "bench".into(),
            expires: None,
            proof: None,
        })
        .collect();
    consents.record(&events, &|_| true).unwrap();
    consents.fetch(&ids).unwrap(); // warm: what the first request does
    let purpose: Arc<str> = "essential.service".into();
    let limits = Limits::default();
    let mut out = Vec::with_capacity(body.len() + 1024);
    let mut g = c.benchmark_group("consent/contacts_100");
    g.throughput(Throughput::Elements(ids.len() as u64));
    g.bench_function("rewrite_without_check", |b| {
        b.iter(|| {
            out.clear();
            let mut keep = |_: Subject<'_>| RecordOutcome::Keep;
            let mut rw = Rewriter::new(Arc::clone(&res.program), Arc::clone(&rule.table), limits);
            rw.push(black_box(&body), &mut keep, &mut out).unwrap();
            rw.finish(&mut keep, &mut out).unwrap();
            black_box(out.len())
        })
    });
    g.bench_function("rewrite_with_cached_consent", |b| {
        b.iter(|| {
            out.clear();
            let mut gate =
                ConsentGate::new(check, Arc::clone(&purpose), now, Arc::clone(&consents));
            let mut rw = Rewriter::new(Arc::clone(&res.program), Arc::clone(&rule.table), limits);
            rw.push(black_box(&body), &mut gate, &mut out).unwrap();
            rw.finish(&mut gate, &mut out).unwrap();
            assert_eq!(rw.pending(), 0, "every subject is cached");
            black_box(out.len())
        })
    });
    g.bench_function("gate_only", |b| {
        b.iter(|| {
            let mut gate =
                ConsentGate::new(check, Arc::clone(&purpose), now, Arc::clone(&consents));
            let mut kept = 0;
            for id in &ids {
                let s = Subject::Id(std::borrow::Cow::Borrowed(id.as_str()));
                kept += usize::from(gate.decide(s) == Some(RecordOutcome::Keep));
            }
            assert_eq!(kept, 100);
            black_box(kept)
        })
    });
    // A cold list: its 100 subjects fetched from SQLite in one batch.
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn consentry::consent::store::ConsentStore> = Arc::new(
        consentry::storage::sqlite::SqliteStore::open(&dir.path().join("bench.db")).unwrap(),
    );
    Consents::new(Arc::clone(&store), ManualClock::at(now))
        .record(&events, &|_| true)
        .unwrap();
    g.bench_function("fetch_uncached_from_sqlite", |b| {
        b.iter(|| {
            let fresh = Consents::new(Arc::clone(&store), ManualClock::at(now));
            black_box(fresh.fetch(&ids).unwrap().len())
        })
    });
    g.finish();
}

criterion_group!(benches, kernel, detectors, consent);
criterion_main!(benches);
