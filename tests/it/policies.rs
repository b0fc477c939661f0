//! The example policies compile and their declarative cases pass, through
//! the library and through the `consentry` binary as a user runs them.

use std::path::Path;
use std::process::Command;

use consentry::policy::{self, testing};

fn dir() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/policies"))
}

#[test]
fn example_policy_cases_pass() {
    let opts = policy::Options {
        hash_key: consentry::transform::HashKey::new(testing::TEST_HASH_KEY)
            .map(std::sync::Arc::new),
        require_hash_key: true,
        ..Default::default()
    };
    let (set, warnings) = policy::load_dir(dir(), &opts).unwrap_or_else(|r| panic!("{r}"));
    assert_eq!(warnings.warnings().count(), 0, "{warnings}");
    let results = testing::run_dir(dir(), &set).unwrap_or_else(|r| panic!("{r}"));
    assert!(results.len() >= 10);
    let failed: Vec<_> = results.iter().filter(|r| r.failure.is_some()).collect();
    assert!(failed.is_empty(), "{failed:#?}");
}

#[test]
fn the_binary_checks_and_tests_policies() {
    let bin = env!("CARGO_BIN_EXE_consentry");
    let out = Command::new(bin)
        .args(["policy", "test"])
        .arg(dir())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("0 failed"), "{text}");

    let bad = tempfile::tempdir().unwrap();
    std::fs::write(
        bad.path().join("broken.yaml"),
        "name: broken\nresources:\n  - name: a\n    match: { methods: [GET], path: /x }\n    fields: { $.e: user.contact.emial }\nrules:\n  - purpose: marketting\n",
    )
    .unwrap();
    let out = Command::new(bin)
        .args(["policy", "check"])
        .arg(bad.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success());
    assert!(
        text.contains("broken.yaml:5:") && text.contains("did you mean `user.contact.email`"),
        "{text}"
    );
    assert!(
        text.contains("broken.yaml:7:") && text.contains("marketting"),
        "{text}"
    );
    assert!(text.contains("2 error(s)"), "{text}");
}

#[test]
fn a_bad_config_stops_start_up_with_every_error() {
    let bin = env!("CARGO_BIN_EXE_consentry");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("c.yaml"),
        "listen: nowhere\nupstream: { url: \"ftp://x\" }\npolicies: missing-folder\nclients: []\n",
    )
    .unwrap();
    let out = Command::new(bin)
        .args(["serve", "--config"])
        .arg(dir.path().join("c.yaml"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("c.yaml:1:") && err.contains("`nowhere` is not an address"),
        "{err}"
    );
    assert!(err.contains("c.yaml:2:"), "{err}");
    assert!(err.contains("nothing was started"), "{err}");
}
