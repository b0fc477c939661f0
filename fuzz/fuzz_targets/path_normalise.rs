//! Path normalisation: never panics; the result is canonical (normalising it
//! again changes nothing) and holds none of the ambiguous forms it refuses.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    let _ = consentry::path::check_query(s);
    let Ok(n) = consentry::path::normalise(s) else { return };
    assert_eq!(consentry::path::normalise(&n).as_deref(), Ok(n.as_str()), "not idempotent: {s:?}");
    assert!(n.starts_with('/'));
    assert!(n == "/" || !n.ends_with('/'));
    for bad in ["//", "/./", "/../", "\\", ";", "#", "%2F", "%2f", "%5C", "%25"] {
        assert!(!n.contains(bad), "{bad} in {n:?} from {s:?}");
    }
    assert!(!n.ends_with("/.") && !n.ends_with("/.."));
    assert!(n.bytes().all(|b| b.is_ascii_graphic()));
});
