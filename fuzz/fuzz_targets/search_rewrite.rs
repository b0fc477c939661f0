//! Search rewriting: any query string or search body, no panic; a query
//! keeps every parameter it does not rewrite byte for byte, and the
//! rewritten one holds a token, never the searched text; a rewritten body is
//! JSON whose encrypted filters hold tokens.
#![no_main]

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use consentry::clock::ManualClock;
use consentry::keys::master::MasterKeys;
use consentry::keys::service::Keys;
use consentry::keys::store::MemoryKeyStore;
use consentry::keys::vault::Vault;
use consentry::policy::PolicySet;
use consentry::policy::compile::{Options, compile};
use consentry::proxy::encrypt::{search_body, search_query};
use libfuzzer_sys::fuzz_target;

const POLICY: &str = r#"
name: s
encrypt: { user.contact.email: deterministic }
resources:
  - name: list
    match: { methods: [GET, POST], path: /c }
    records: $.results[*]
    subject: $.id
    fields: { $.email: user.contact.email }
    search:
      params: { email: user.contact.email }
      hubspot_filters: { email: user.contact.email }
rules:
  - purpose: essential.service
    allow: [user]
"#;

fn fixture() -> &'static (PolicySet, Vault) {
    static F: OnceLock<(PolicySet, Vault)> = OnceLock::new();
    F.get_or_init(|| {
        let (set, _) = compile(&[(PathBuf::from("s.yaml"), POLICY.to_owned())], &Options::default()).unwrap();
        let keys = Arc::new(Keys::new(
            MasterKeys::generate().unwrap(),
            Arc::new(MemoryKeyStore::default()),
            ManualClock::at(1),
        ));
        let vault = Vault::for_read(&keys, &["user.contact.email".to_owned()]).unwrap();
        (set, vault)
    })
}

fuzz_target!(|data: &[u8]| {
    let (set, vault) = fixture();
    let res = &set.resources()[0];
    if let Ok(q) = std::str::from_utf8(data) {
        if let Ok(Some(out)) = search_query(vault, res, q) {
            let before: Vec<&str> = q.split('&').collect();
            let after: Vec<&str> = out.split('&').collect();
            assert_eq!(before.len(), after.len());
            for (b, a) in before.iter().zip(&after) {
                if b != a {
                    let (name, value) = a.split_once('=').unwrap();
                    assert!(b.starts_with(name));
                    assert!(value.starts_with("ctd1."), "{a}");
                }
            }
        }
    }
    if let Ok(out) = search_body(vault, res, data) {
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        if let Some(groups) = v.get("filterGroups").and_then(|g| g.as_array()) {
            for f in groups.iter().filter_map(|g| g.get("filters")?.as_array()).flatten() {
                if f.get("propertyName").and_then(|p| p.as_str()) == Some("email")
                    && f.get("operator").and_then(|o| o.as_str()) == Some("EQ")
                {
                    assert!(f["value"].as_str().unwrap().starts_with("ctd1."), "{f}");
                }
            }
        }
    }
});
