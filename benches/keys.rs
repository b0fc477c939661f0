#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark: panics on bad fixtures are fine
//! Token cost per field: encrypt plus decrypt of one e-mail address, both
//! token kinds, with the data key already unwrapped (as cached on the hot
//! path); and a create's key on the SQLite store (made, stored under a
//! pending name, bound to the id the CRM assigned: two durable commits).
//! Run: `cargo bench --bench keys`.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};

use consentry::keys::token;
use consentry::keys::wrap::DataKey;

fn tokens(c: &mut Criterion) {
    let dk = DataKey::generate().unwrap();
    let value = b"carla.lopez7@globex.example";
    let mut g = c.benchmark_group("token/one_field");
    g.bench_function("randomised_encrypt_then_decrypt", |b| {
        b.iter(|| {
            let t = token::encrypt(&dk, "user.contact.email", black_box(value)).unwrap();
            let p = token::parse(&t).unwrap();
            black_box(token::decrypt(&dk, &p, "user.contact.email").unwrap().len())
        })
    });
    g.bench_function("deterministic_encrypt_then_decrypt", |b| {
        b.iter(|| {
            let t =
                token::encrypt_deterministic(&dk, "user.contact.email", black_box(value)).unwrap();
            let p = token::parse(&t).unwrap();
            black_box(token::decrypt(&dk, &p, "user.contact.email").unwrap().len())
        })
    });
    g.finish();
}

fn create_key(c: &mut Criterion) {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    use consentry::clock::SystemClock;
    use consentry::keys::master::MasterKeys;
    use consentry::keys::service::{Keys, pending_owner};
    use consentry::storage::sqlite::SqliteStore;

    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(&dir.path().join("k.db")).unwrap());
    let keys = Keys::new(
        MasterKeys::generate().unwrap(),
        store,
        Arc::new(SystemClock),
    );
    let n = AtomicU64::new(0);
    c.bench_function("key/create_store_and_bind_sqlite", |b| {
        b.iter(|| {
            let owner = pending_owner().unwrap();
            let dk = DataKey::generate().unwrap();
            keys.store_pending(&owner, &dk).unwrap();
            let id = n.fetch_add(1, Ordering::Relaxed).to_string();
            black_box(keys.bind(&owner, &id).unwrap().id)
        })
    });
}

criterion_group!(benches, tokens, create_key);
criterion_main!(benches);
