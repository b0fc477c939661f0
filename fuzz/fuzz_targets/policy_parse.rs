//! Policy compilation: any text yields a policy set or diagnostics, never a
//! panic; every diagnostic names the file.
#![no_main]

use std::path::PathBuf;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let src = [(PathBuf::from("fuzz.yaml"), text.to_owned())];
    match consentry::policy::compile::compile(&src, &consentry::policy::Options::default()) {
        Ok((set, _)) => {
            for r in set.resources() {
                let path = r.template.replace("{", "x").replace("}", "");
                let _ = set.decide(&http::Method::GET, &path, "essential.service");
            }
        }
        Err(report) => {
            assert!(report.has_errors());
            assert!(report.items.iter().all(|d| d.file == PathBuf::from("fuzz.yaml")));
        }
    }
});
