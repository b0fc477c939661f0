//! Selectors: parsing never panics, and what parses compiles to an automaton
//! whose lookups never panic.
#![no_main]

use consentry::transform::{Dfa, Mark, Selector};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let sels: Vec<(Selector, Mark)> = text
        .split('\n')
        .take(8)
        .filter_map(|l| Selector::parse(l).ok())
        .enumerate()
        .map(|(i, s)| (s, Mark::Field(i as u32)))
        .collect();
    let Ok(dfa) = Dfa::build(&sels) else { return };
    let mut s = dfa.start();
    for word in text.split(|c: char| !c.is_alphanumeric()).take(16) {
        s = if word.is_empty() { dfa.step_elem(s) } else { dfa.step_key(s, word.as_bytes()) };
        let _ = dfa.state(s);
    }
});
