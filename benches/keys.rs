#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark: panics on bad fixtures are fine
//! Token cost per field: encrypt plus decrypt of one e-mail address, both
//! token kinds, with the data key already unwrapped (as cached on the hot
//! path). Run: `cargo bench --bench keys`.

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

criterion_group!(benches, tokens);
criterion_main!(benches);
