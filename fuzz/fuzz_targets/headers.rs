//! Request header hygiene: whatever the client sends, no hop-by-hop header
//! and nothing its `Connection` header names comes out of the filter.
#![no_main]

use http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;

const HOP: &[&str] = &["connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade", "proxy-authenticate", "proxy-authorization"];

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let mut h = HeaderMap::new();
    for line in text.lines().take(32) {
        let Some((k, v)) = line.split_once(':') else { continue };
        let (Ok(k), Ok(v)) = (HeaderName::from_bytes(k.trim().as_bytes()), HeaderValue::from_str(v.trim())) else { continue };
        h.append(k, v);
    }
    let key = HeaderName::from_static("x-api-key");
    let out = consentry::proxy::forward::filter_headers(&h, &[&key], &[], "x-forwarded-");
    assert!(out.keys().all(|k| !k.as_str().starts_with("x-forwarded-")));
    for n in HOP {
        assert!(!out.contains_key(*n), "{n} passed");
    }
    assert!(!out.contains_key("x-api-key"));
    for v in h.get_all("connection") {
        if let Ok(s) = v.to_str() {
            for t in s.split(',') {
                let t = t.trim();
                if !t.is_empty() {
                    assert!(!out.contains_key(t.to_ascii_lowercase().as_str()), "{t} named by Connection passed");
                }
            }
        }
    }
});
