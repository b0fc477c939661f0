//! Consent files (CSV, JSON, JSON lines) and admin API change bodies: no
//! panic, and anything accepted is well-formed enough to validate.
#![no_main]

use consentry::consent::import::{self, Defaults, Format};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for format in [Format::Csv, Format::Json] {
        if let Ok(events) = import::parse(data, format) {
            assert!(!events.is_empty());
            for e in &events {
                let _ = consentry::consent::validate(e, &|p| p == "marketing", 1_900_000_000_000);
            }
        }
    }
    let defaults = Defaults { at: 1_900_000_000_000, source: "fuzz" };
    if let Ok(events) = import::parse_changes(data, defaults) {
        assert!(events.iter().all(|e| !e.source.is_empty()));
    }
});
