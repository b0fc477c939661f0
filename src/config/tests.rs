use std::path::Path;

use super::*;

fn write_policy(dir: &Path) {
    std::fs::write(
        dir.join("p.yaml"),
        r#"
name: p
resources:
  - name: c
    match: { methods: [GET], path: "/c/{id}" }
    fields: { $.email: user.contact.email }
rules:
  - purpose: essential.service
    allow: [user]
"#,
    )
    .unwrap();
}

fn env(n: &str) -> Option<String> {
    match n {
        "TOKEN" => Some("s3cret-token".into()),
        "HASH" => Some("0123456789abcdef0123456789abcdef".into()),
        _ => None,
    }
}

#[test]
fn loads_a_full_config() {
    let dir = tempfile::tempdir().unwrap();
    write_policy(dir.path());
    let key_hash = api_key_hash("client-key-0123456789abcdef");
    let text = format!(
        r#"
listen: 127.0.0.1:0
upstream:
  url: http://127.0.0.1:4000/api/
  headers:
    - name: Authorization
      value: "Bearer ${{TOKEN}}"
  timeouts: {{ connect: 2s, response: 500ms }}
policies: .
keys:
  hash_key: ${{HASH}}
clients:
  - name: desk
    api_key_sha256: {key_hash}
    purposes: [essential.service.operations.support]
limits:
  request_body: 1MiB
  stream_after: 16KiB
log: {{ format: json, access: false }}
"#
    );
    let (c, set, _) = load_str(&dir.path().join("consentry.yaml"), &text, env).unwrap();
    assert_eq!(c.upstream.prefix, "/api");
    assert_eq!(c.upstream.response_timeout, Duration::from_millis(500));
    assert_eq!(c.limits.request_body, 1 << 20);
    assert_eq!(c.limits.stream_after, 16 << 10);
    assert_eq!(c.log.format, LogFormat::Json);
    assert!(c.hash_key.is_some());
    assert_eq!(set.resources().len(), 1);
    let client = c.clients.identify(b"client-key-0123456789abcdef").unwrap();
    assert_eq!(&*client.name, "desk");
    assert!(c.clients.identify(b"client-key-0123456789abcdeF").is_none());
    // Secrets never show in Debug output.
    let dbg = format!("{c:?}");
    assert!(!dbg.contains("s3cret"), "{dbg}");
    assert!(!dbg.contains("0123456789abcdef0123"), "{dbg}");
}

#[test]
fn reports_every_config_error_with_lines() {
    let dir = tempfile::tempdir().unwrap();
    write_policy(dir.path());
    let text = r#"
listen: localhost
upstream:
  url: ftp://crm
  headers:
    - name: "Bad Header"
      value: x
    - name: Authorization
      value: "Bearer ${MISSING}"
policies: .
clients:
  - name: a
    api_key_sha256: not-hex
    purposes: [essential.service]
  - name: b
    api_key_sha256: 0000000000000000000000000000000000000000000000000000000000000000
    purposes: [marketting]
limits: { request_body: 10 parsecs, header_read_timeout: soon }
log: { format: xml }
routes: { unmatched: maybe }
"#;
    let r = load_str(&dir.path().join("c.yaml"), text, env).unwrap_err();
    let s = r.to_string();
    for (needle, line) in [
        ("`localhost` is not an address", 2),
        ("must be http:// or https://", 4),
        ("`Bad Header` is not a header name", 6),
        ("`MISSING` is not set", 9),
        ("must be 64 hex digits", 13),
        ("`10 parsecs` is not a size", 18),
        ("`soon` is not a duration", 18),
        ("unknown log format `xml`", 19),
        ("unknown `unmatched` behaviour", 20),
    ] {
        let d = r.items.iter().find(|d| d.message.contains(needle));
        let d = d.unwrap_or_else(|| panic!("missing {needle} in\n{s}"));
        assert_eq!(d.line, line, "{needle}");
    }
}

#[test]
fn unknown_client_purpose_and_policy_errors_come_together() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("bad.yaml"),
        "name: x\nresources: []\nrules:\n  - purpose: nope\n",
    )
    .unwrap();
    let text = r#"
listen: 127.0.0.1:0
upstream: { url: "http://127.0.0.1:1" }
policies: .
storage: { audit: off }
clients:
  - name: b
    api_key_sha256: 0000000000000000000000000000000000000000000000000000000000000000
    purposes: [marketting]
"#;
    let r = load_str(&dir.path().join("c.yaml"), text, env).unwrap_err();
    let s = r.to_string();
    assert!(s.contains("bad.yaml:4"), "{s}");
    let dir2 = tempfile::tempdir().unwrap();
    write_policy(dir2.path());
    let r = load_str(&dir2.path().join("c.yaml"), text, env).unwrap_err();
    let s = r.to_string();
    assert!(
        s.contains("c.yaml:9") && s.contains("did you mean `marketing`"),
        "{s}"
    );
}

#[test]
fn sizes_and_durations() {
    assert_eq!(parse_size("64KiB"), Some(65536));
    assert_eq!(parse_size("10MB"), Some(10_000_000));
    assert_eq!(parse_size("7"), Some(7));
    assert_eq!(parse_size("x"), None);
    assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
    assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
    assert_eq!(parse_duration("2h"), Some(Duration::from_secs(7200)));
    assert_eq!(
        parse_duration("400d"),
        Some(Duration::from_secs(400 * 86_400))
    );
    assert_eq!(parse_duration("2w"), None);
}

#[test]
fn the_example_config_needs_its_secrets_except_in_the_demo() {
    // A copy, so that the master key the demo makes lands in a temporary folder.
    let dir = tempfile::tempdir().unwrap();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let path = dir.path().join("consentry.yaml");
    std::fs::copy(repo.join("consentry.yaml"), &path).unwrap();
    std::fs::create_dir(dir.path().join("policies")).unwrap();
    for f in std::fs::read_dir(repo.join("policies")).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, dir.path().join("policies").join(f.file_name().unwrap())).unwrap();
    }
    let path = path.as_path();
    let report = load_with_env(path, |_| None).unwrap_err().to_string();
    assert!(
        report.contains("master key ring cannot be used"),
        "serve does not make the key: {report}"
    );
    crate::demo::ensure_master_key(path).unwrap();
    assert!(dir.path().join("consentry-data/master.key").exists());
    let no_secrets = |n: &str| match n {
        "CONSENTRY_ADMIN_TOKEN" | "CONSENTRY_HASH_KEY" | "CONSENTRY_AUDITOR_TOKEN" => None,
        _ => std::env::var(n).ok(),
    };
    let report = load_with_env(path, no_secrets).unwrap_err().to_string();
    assert!(
        !report.contains("CONSENTRY_AUDITOR_TOKEN"),
        "the auditor token is optional: {report}"
    );
    assert!(
        report.contains("`CONSENTRY_ADMIN_TOKEN` is not set"),
        "{report}"
    );
    assert!(
        report.contains("`CONSENTRY_HASH_KEY` is not set"),
        "{report}"
    );
    // What `consentry demo` supplies when the environment has nothing.
    let demo_only = |n: &str| match n {
        "CONSENTRY_ADMIN_TOKEN" => Some(crate::demo::DEMO_ADMIN_TOKEN.to_owned()),
        "CONSENTRY_HASH_KEY" => Some(crate::demo::DEMO_HASH_KEY.to_owned()),
        "CONSENTRY_AUDITOR_TOKEN" => Some(crate::demo::DEMO_AUDITOR_TOKEN.to_owned()),
        _ => std::env::var(n).ok(),
    };
    let (cfg, set, _) = load_with_env(path, demo_only).unwrap_or_else(|r| panic!("{r}"));
    let admin = cfg.admin.expect("the example config has an admin API");
    assert!(admin.listen.ip().is_loopback());
    assert!(
        admin
            .token
            .matches(crate::demo::DEMO_ADMIN_TOKEN.as_bytes())
    );
    assert!(
        admin
            .auditor
            .is_some_and(|a| a.matches(crate::demo::DEMO_AUDITOR_TOKEN.as_bytes()))
    );
    assert_eq!(
        cfg.subjects.record_path("a/b").as_deref(),
        Some("/crm/v3/objects/contacts/a%2Fb")
    );
    assert!(cfg.subjects.forward_erasure);
    assert_eq!(
        cfg.audit_retention,
        Some(std::time::Duration::from_secs(400 * 86_400))
    );
    assert!(set.resources().len() >= 4);
}

#[test]
fn subject_requests_and_the_auditor_token_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    write_policy(dir.path());
    let load = |extra: &str| {
        let text = format!(
            "listen: 127.0.0.1:0\nupstream: {{ url: http://127.0.0.1:4000 }}\npolicies: .\n\
             keys: {{ hash_key: test-hash-key-0123456789abcdef }}\n{extra}"
        );
        load_str(&dir.path().join("c.yaml"), &text, |_| None)
            .err()
            .map(|r| r.to_string())
            .unwrap_or_default()
    };
    let r = load("subjects: { record: /contacts/x }\n");
    assert!(
        r.contains("c.yaml:5") && r.contains("not a record path"),
        "{r}"
    );
    let r = load("subjects: { forward_erasure: true }\n");
    assert!(r.contains("`forward_erasure` needs `record`"), "{r}");
    let same = "admin: { token: aaaaaaaaaaaaaaaaaaaaaaaaaaaa, auditor_token: aaaaaaaaaaaaaaaaaaaaaaaaaaaa }\n";
    let r = load(same);
    assert!(
        r.contains("the auditor token equals the admin token"),
        "{r}"
    );
    let r = load("storage: { audit_retention: soon }\n");
    assert!(r.contains("`soon` is not a duration"), "{r}");
    assert_eq!(
        load("subjects: { record: \"/contacts/{id}\", forward_erasure: true }\n"),
        ""
    );
}

#[cfg(unix)]
#[test]
fn the_master_key_ring_comes_from_a_0600_file_or_the_environment() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    write_policy(dir.path());
    let ring = crate::keys::master::MasterKeys::generate().unwrap();
    ring.write_new_file(&dir.path().join("master.key")).unwrap();
    let text = |keys: &str| {
        format!(
            "listen: 127.0.0.1:0\nupstream: {{ url: http://127.0.0.1:4000 }}\npolicies: .\nkeys: {{ {keys} }}\nstorage: {{ audit: off }}\n\
             clients:\n  - {{ name: d, api_key_sha256: {}, purposes: [essential.service] }}\n",
            api_key_hash("client-key-0123456789abcdef")
        )
    };
    let path = dir.path().join("consentry.yaml");
    let (c, _, _) = load_str(&path, &text("master_key_file: master.key"), env).unwrap();
    assert_eq!(c.master_keys.unwrap().current().version, 1);
    let ring_text = ring.to_text();
    let from_env = |n: &str| (n == "RING").then(|| ring_text.to_string());
    let (c, _, _) = load_str(&path, &text("master_key: \"${RING}\""), from_env).unwrap();
    assert!(c.master_keys.is_some());
    // Readable by others: refused, with the fix.
    std::fs::set_permissions(
        dir.path().join("master.key"),
        std::fs::Permissions::from_mode(0o640),
    )
    .unwrap();
    let e = load_str(&path, &text("master_key_file: master.key"), env)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("consentry.yaml:4:") && e.contains("chmod 600"),
        "{e}"
    );
    // Unusable text: refused, without echoing it.
    let bad = |n: &str| (n == "RING").then(|| "consentry-master-key v1 c2VjcmV0".to_owned());
    let e = load_str(&path, &text("master_key: \"${RING}\""), bad)
        .unwrap_err()
        .to_string();
    assert!(e.contains("not 32 bytes") && !e.contains("c2VjcmV0"), "{e}");
    let e = load_str(
        &path,
        &text("master_key: x, master_key_file: master.key"),
        env,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("not both"), "{e}");
}

#[test]
fn the_audit_trail_needs_the_hash_key_or_is_turned_off() {
    let dir = tempfile::tempdir().unwrap();
    write_policy(dir.path());
    let text = |extra: &str| {
        format!(
            "listen: 127.0.0.1:0\nupstream: {{ url: http://127.0.0.1:4000 }}\npolicies: .\n{extra}\n\
             clients:\n  - {{ name: d, api_key_sha256: {}, purposes: [essential.service] }}\n",
            api_key_hash("client-key-0123456789abcdef")
        )
    };
    let path = dir.path().join("consentry.yaml");
    let e = load_str(&path, &text(""), env).unwrap_err().to_string();
    assert!(
        e.contains("no `keys.hash_key` is set") && e.contains("storage.audit: off"),
        "{e}"
    );
    let (c, _, _) = load_str(&path, &text("keys: { hash_key: \"${HASH}\" }"), env).unwrap();
    assert_eq!(c.audit.unwrap(), dir.path().join("audit.db"));
    let (c, _, _) = load_str(&path, &text("storage: { audit: off }"), env).unwrap();
    assert!(c.audit.is_none());
}

#[test]
fn clients_by_certificate_need_a_client_ca() {
    let dir = tempfile::tempdir().unwrap();
    write_policy(dir.path());
    let text = |extra: &str| {
        format!(
            r#"
listen: 127.0.0.1:0
upstream: {{ url: "http://127.0.0.1:1" }}
policies: .
storage: {{ audit: off }}
clients:
  - name: desk
    certificate: desk.example.com
    purposes: [essential.service]
  - name: nothing
    purposes: [essential.service]
{extra}"#
        )
    };
    let s = load_str(&dir.path().join("c.yaml"), &text(""), env)
        .unwrap_err()
        .to_string();
    assert!(s.contains("c.yaml:8") && s.contains("tls.client_ca"), "{s}");
    assert!(
        s.contains("c.yaml:10") && s.contains("neither `api_key_sha256` nor `certificate`"),
        "{s}"
    );
    let s = load_str(
        &dir.path().join("c.yaml"),
        &text("tls: { cert: gw.pem, key: gw.key, client_auth: sometimes }"),
        env,
    )
    .unwrap_err()
    .to_string();
    assert!(
        s.contains("certificate file") && s.contains("gw.pem"),
        "{s}"
    );
    assert!(s.contains("unknown `client_auth` `sometimes`"), "{s}");
}

#[test]
fn a_certificate_that_names_two_clients_names_none() {
    let dir = tempfile::tempdir().unwrap();
    write_policy(dir.path());
    for f in ["ca.pem", "gw.pem", "gw.key"] {
        std::fs::write(dir.path().join(f), "x").unwrap();
    }
    let text = r#"
listen: 127.0.0.1:0
upstream: { url: "http://127.0.0.1:1" }
policies: .
storage: { audit: off }
tls: { cert: gw.pem, key: gw.key, client_ca: ca.pem }
clients:
  - { name: a, certificate: a.internal, purposes: [essential.service] }
  - { name: b, certificate: b.internal, purposes: [essential.service] }
"#;
    let (c, _, _) = load_str(&dir.path().join("c.yaml"), text, env).unwrap();
    let names = |n: &[&str]| n.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let who = |n: &[&str]| {
        c.clients
            .by_certificate(&names(n))
            .map(|c| c.name.to_string())
    };
    assert_eq!(who(&["a.internal"]).as_deref(), Some("a"));
    assert_eq!(who(&["b.internal", "other"]).as_deref(), Some("b"));
    assert_eq!(who(&["a.internal", "b.internal"]), None);
    assert_eq!(who(&["c.internal"]), None);
}
