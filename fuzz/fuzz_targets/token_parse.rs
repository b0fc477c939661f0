//! Tokens: parsing never panics, and only an untouched token decrypts. The
//! input edits a valid token (each byte XORed into it); whatever parses and
//! decrypts must be exactly the token that was written.
#![no_main]

use std::sync::OnceLock;

use consentry::keys::token::{self, Kind};
use consentry::keys::wrap::DataKey;
use libfuzzer_sys::fuzz_target;

struct Fixture {
    dk: DataKey,
    random: String,
    deterministic: String,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let dk = DataKey::generate().unwrap();
        let random = token::encrypt(&dk, "user.contact.email", b"carla@globex.example").unwrap();
        let deterministic = token::encrypt_deterministic(&dk, "user.contact.email", b"carla@globex.example").unwrap();
        Fixture { dk, random, deterministic }
    })
}

fuzz_target!(|data: &[u8]| {
    // Arbitrary text: no panic.
    if let Ok(s) = std::str::from_utf8(data) {
        if let Some(t) = token::parse(s) {
            let _ = token::decrypt(&fixture().dk, &t, "user.contact.email");
        }
    }
    let f = fixture();
    for original in [&f.random, &f.deterministic] {
        let mut b = original.clone().into_bytes();
        for (i, x) in data.iter().enumerate() {
            let n = b.len();
            b[i % n] ^= x;
        }
        let Ok(s) = String::from_utf8(b) else { continue };
        let Some(t) = token::parse(&s) else { continue };
        if let Ok(plain) = token::decrypt(&f.dk, &t, "user.contact.email") {
            assert_eq!(&s, original, "an edited token decrypted");
            assert_eq!(&*plain, b"carla@globex.example");
            assert!(t.kind == Kind::Randomised || t.kind == Kind::Deterministic);
        }
    }
});
