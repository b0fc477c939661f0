#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark: panics on bad fixtures are fine
//! Audit events per second through the group-committing writer, on this
//! machine's disk (fsync per commit): 512 requests in flight record one
//! event each, as a loaded gateway would. Run: `cargo bench --bench audit`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};

use consentry::audit::store::AuditStore;
use consentry::audit::writer::Audit;
use consentry::audit::{Counts, Event, SubjectEntry};
use consentry::transform::{HashKey, Stats};

fn event(i: u64) -> Event {
    Event {
        at: 1_795_781_642_000 + i as i64,
        kind: "request".into(),
        request_id: Some(format!("bench-{i:08}")),
        client: Some("support-desk".into()),
        purpose: Some("essential.service".into()),
        method: Some("GET".into()),
        route: Some("/crm/v3/objects/contacts/{id}".into()),
        status: Some(200),
        decision: "served".into(),
        problem: None,
        subjects: vec![SubjectEntry {
            subject: "3f1c0e5d9a7b42c1a0d3e8f7b6c5a4d3".into(),
            record: "shown".into(),
        }],
        counts: None,
        categories: Some(Arc::new(serde_json::json!({
            "disclosed": ["user.contact.email", "user.name"],
            "masked": ["user.contact.phone_number"],
        }))),
        policy_version: Some(1),
    }
}

fn throughput(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let store = AuditStore::open(&dir.path().join("audit.db")).unwrap();
    let audit: Arc<Audit> =
        Audit::start(store, HashKey::new(b"bench-audit-key-0123456789").unwrap()).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    const IN_FLIGHT: u64 = 512;
    let mut g = c.benchmark_group("audit");
    g.throughput(Throughput::Elements(IN_FLIGHT));
    g.measurement_time(Duration::from_secs(8));
    g.bench_function("512_concurrent_events_group_committed", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                rt.block_on(async {
                    let tasks: Vec<_> = (0..IN_FLIGHT)
                        .map(|i| {
                            let a = Arc::clone(&audit);
                            tokio::spawn(async move { a.record(event(i)).await.unwrap() })
                        })
                        .collect();
                    for t in tasks {
                        t.await.unwrap();
                    }
                });
            }
            start.elapsed()
        })
    });
    g.finish();
}

/// Building and encoding one request's event on the worker, as the gateway
/// does for a single contact: the pseudonym, the counts, the JSON, the
/// sealed customer entry.
fn build(c: &mut Criterion) {
    let key = HashKey::new(b"bench-hash-key-0123456789abcdef").unwrap();
    let cats = Arc::new(serde_json::json!({
        "disclosed": ["user.contact.email", "user.name"],
        "masked": ["user.contact.phone_number"],
    }));
    c.bench_function("audit/build_one_event", |b| {
        b.iter(|| {
            let mut e = event(7);
            e.subjects = vec![SubjectEntry {
                subject: consentry::audit::pseudonym(&key, "1042"),
                record: "shown".into(),
            }];
            e.categories = Some(Arc::clone(&cats));
            e.counts = Some(Counts::Request(Stats {
                records: 1,
                masked: 1,
                redacted: 2,
                ..Stats::default()
            }));
            std::hint::black_box(consentry::audit::writer::encode(e).unwrap())
        })
    });
}

criterion_group!(benches, throughput, build);
criterion_main!(benches);
