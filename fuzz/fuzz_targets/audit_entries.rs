//! Stored audit entries: parsing arbitrary bytes never panics; unlinking
//! never changes a commitment; and an edited sealed list either fails to
//! parse or no longer carries the commitments the chain holds (so a changed
//! entry is always found by `audit verify`).
#![no_main]

use consentry::audit::SubjectEntry;
use consentry::audit::entries;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Arbitrary bytes: no panic, and unlinking keeps every commitment.
    if let Some(slots) = entries::open(data) {
        let mut copy = data.to_vec();
        if let Some(p) = data.get(49..65).and_then(|p| <[u8; 16]>::try_from(p).ok()) {
            entries::unlink(&mut copy, &p);
            let after = entries::open(&copy).expect("an unlinked list still parses");
            assert_eq!(
                after.iter().map(|s| s.commit).collect::<Vec<_>>(),
                slots.iter().map(|s| s.commit).collect::<Vec<_>>()
            );
        }
    }
    // A sealed list, edited by XORing the input into it.
    let list = [
        SubjectEntry { subject: "0123456789abcdef0123456789abcdef".into(), record: "shown".into() },
        SubjectEntry { subject: "fedcba9876543210fedcba9876543210".into(), record: "consent marketing granted".into() },
    ];
    let Ok((mut blob, commits)) = entries::seal(&list) else { return };
    let mut changed = false;
    for (b, d) in blob.iter_mut().zip(data) {
        *b ^= d;
        changed |= *d != 0;
    }
    if let Some(slots) = entries::open(&blob) {
        let same = slots.iter().map(|s| s.commit).collect::<Vec<_>>() == commits;
        let open_same = slots.iter().map(|s| s.entry.clone()).collect::<Vec<_>>()
            == list.iter().cloned().map(Some).collect::<Vec<_>>();
        assert!(!changed || !(same && open_same), "an edited entry passed as the original");
    }
});
