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
    let keys = Arc::new(Keys::new(
        MasterKeys::generate().unwrap(),
        store,
        Arc::new(SystemClock),
    ));
    let n = AtomicU64::new(0);
    // The binding commits on the runtime's blocking pool, as in the gateway.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .build()
        .unwrap();
    c.bench_function("key/create_store_and_bind_sqlite", |b| {
        b.iter(|| {
            let owner = pending_owner().unwrap();
            let dk = DataKey::generate().unwrap();
            keys.store_pending(&owner, &dk).unwrap();
            let id = n.fetch_add(1, Ordering::Relaxed).to_string();
            rt.block_on(async {
                let ticket = keys.bind_begin(&owner, Arc::new(dk), &id).unwrap();
                ticket.bound().await.unwrap();
            })
        })
    });
}

criterion_group!(benches, tokens, create_key);
criterion_main!(benches, reads);

/// A 100-record list whose records carry 7 tokens each (6 categories of the
/// example policy, e-mail deterministic), decrypted for support, against
/// the same list stored in clear through the same program and gate.
fn list_reads(c: &mut Criterion) {
    use std::path::PathBuf;
    use std::sync::Arc;

    use consentry::clock::ManualClock;
    use consentry::keys::master::MasterKeys;
    use consentry::keys::service::{Keys, subject_owner};
    use consentry::keys::store::MemoryKeyStore;
    use consentry::keys::vault::{Sealer, Vault};
    use consentry::policy::collect::collect;
    use consentry::policy::compile::{Options, compile};
    use consentry::proxy::gate::RecordGate;
    use consentry::transform::{Limits, rewrite_with};

    let fields = r#"
      $.id: user.unique_id
      $.properties.email: user.contact.email
      $.properties.firstname: user.name.first
      $.properties.lastname: user.name.last
      $.properties.phone: user.contact.phone_number
      $.properties.mobilephone: user.contact.phone_number
      $.properties.address: user.contact.address.street
      $.properties.city: user.contact.address.city
      $.properties.zip: user.contact.address.postal_code
      $.properties.date_of_birth: user.demographic.date_of_birth
      $.properties.notes: user.content.private
"#;
    let policy = format!(
        r#"
name: bench
encrypt:
  user.contact.email: deterministic
  user.contact.phone_number: randomised
  user.contact.address.street: randomised
  user.contact.address.postal_code: randomised
  user.demographic.date_of_birth: randomised
  user.content.private: randomised
resources:
  - name: update
    match: {{ methods: [PATCH], path: "/c/{{id}}" }}
    subject: $.id
    path_subject: id
    fields: {{ {f} }}
    unlisted: allow
  - name: list
    match: {{ methods: [GET], path: /c }}
    records: $.results[*]
    subject: $.id
    fields: {{ {f} }}
    unlisted: allow
rules:
  - purpose: essential.service
    allow: [user, system]
"#,
        f = fields.trim().replace('\n', ", ").replace("  ", "")
    );
    let (set, _) = compile(&[(PathBuf::from("b.yaml"), policy)], &Options::default()).unwrap();
    let update = &set.resources()[0];
    let list = &set.resources()[1];
    let rule = list.rule_for("essential.service").unwrap();
    let keys = Arc::new(Keys::new(
        MasterKeys::generate().unwrap(),
        Arc::new(MemoryKeyStore::default()),
        ManualClock::at(1),
    ));
    let det = vec!["user.contact.email".to_owned()];
    let mut sealed = Vec::new();
    let mut plain = Vec::new();
    for j in 1..=100u64 {
        let rec = serde_json::to_vec(&consentry::demo::data::contact(j)).unwrap();
        let dk = keys.for_write(&subject_owner(&j.to_string())).unwrap();
        let vault = Vault::for_write(&keys, Some(dk), &det).unwrap();
        let upd = update.rule_for("essential.service").unwrap();
        let c = collect(update, upd, &rec, Limits::default(), Sealer(Some(&vault))).unwrap();
        assert_eq!(c.sealed, 7);
        sealed.push(String::from_utf8(c.body).unwrap());
        plain.push(String::from_utf8(rec).unwrap());
    }
    let body = |recs: &[String]| format!(r#"{{"results":[{}]}}"#, recs.join(",")).into_bytes();
    let (sealed, plain) = (body(&sealed), body(&plain));
    let read = |b: &[u8]| {
        let vault = Vault::for_read(&keys, &det).unwrap();
        let mut gate = RecordGate::new(None, Some((Arc::clone(&keys), vault)), None);
        let mut out = Vec::with_capacity(b.len());
        rewrite_with(
            &list.program,
            &rule.table,
            Limits::default(),
            b,
            &mut gate,
            &mut out,
        )
        .unwrap();
        out
    };
    assert_eq!(
        read(&sealed),
        read(&plain),
        "the tokens decrypt to the plain list"
    );
    let mut g = c.benchmark_group("read/contacts_100");
    g.bench_function("plain_values", |b| {
        b.iter(|| black_box(read(black_box(&plain)).len()))
    });
    g.bench_function("700_tokens_decrypted", |b| {
        b.iter(|| black_box(read(black_box(&sealed)).len()))
    });
    g.finish();
}

criterion_group!(reads, list_reads);
