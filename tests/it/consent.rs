//! Consent end to end: the admin API changes what the next response holds;
//! expiry, restarts, concurrency, store failures, bad input, minimised writes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use consentry::clock::ManualClock;
use consentry::consent::model::{ConsentEvent, SubjectConsents};
use consentry::consent::store::{Applied, ConsentStore, Erased, StoreError, Stored};

use crate::harness::*;

const ONE: &str = "/crm/v3/objects/contacts/7";
const LIST: &str = "/crm/v3/objects/contacts";

fn list(ids: impl IntoIterator<Item = u64>) -> String {
    let recs: Vec<String> = ids.into_iter().map(contact).collect();
    format!(
        r#"{{"results":[{}],"paging":{{"next":{{"after":"x"}}}}}}"#,
        recs.join(",")
    )
}

fn ids(got: &Got) -> Vec<String> {
    got.json()["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect()
}

async fn change(gw: &TestGateway, subject: &str, purpose: &str, status: &str) -> Got {
    let body = format!(r#"{{"subject":"{subject}","purpose":"{purpose}","status":"{status}"}}"#);
    admin(gw, "POST", "/v1/consents", "application/json", &body).await
}

/// Every stored statement, as the export lists them.
async fn export(gw: &TestGateway) -> Vec<serde_json::Value> {
    let got = admin(gw, "GET", "/v1/consents/export", "", "").await;
    assert_eq!(got.status, 200, "{}", got.text());
    got.text()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn policy_with(on_missing: &str) -> String {
    example_policy().replace(
        "on_missing_consent: drop",
        &format!("on_missing_consent: {on_missing}"),
    )
}

#[tokio::test]
async fn a_grant_or_withdrawal_holds_from_the_next_request() {
    let gw = TestGateway::builder().admin().start().await;
    gw.crm.on(ONE, Reply::json(contact(7)));
    gw.crm.on(LIST, Reply::json(list(5..=9)));

    let got = get(&gw.url(ONE), MARKETING).await;
    assert_eq!(
        (got.status, got.problem().as_str()),
        (403, "consent-required")
    );
    let j = got.json();
    assert!(j["detail"].as_str().unwrap().contains("marketing"), "{j}");
    assert!(
        !got.text().contains("@"),
        "the refusal names no personal data"
    );
    assert!(ids(&get(&gw.url(LIST), MARKETING).await).is_empty());

    let ok = change(&gw, "7", "marketing", "granted").await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert_eq!(ok.json()["inserted"], 1);
    let got = get(&gw.url(ONE), MARKETING).await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert!(got.json()["properties"]["email"].is_string());
    assert_eq!(ids(&get(&gw.url(LIST), MARKETING).await), ["7"]);

    // A grant of `marketing` covers a sub-purpose the client names.
    let sub = send(
        "GET",
        &gw.url(ONE),
        &[
            ("x-api-key", MULTI),
            ("x-purpose", "marketing.communications.email"),
        ],
        b"",
    )
    .await;
    assert_eq!(sub.status, 200, "{}", sub.text());

    assert_eq!(change(&gw, "7", "marketing", "withdrawn").await.status, 200);
    let got = get(&gw.url(ONE), MARKETING).await;
    assert_eq!(
        (got.status, got.problem().as_str()),
        (403, "consent-required")
    );
    assert!(ids(&get(&gw.url(LIST), MARKETING).await).is_empty());
    // Support works on contract: consent is not its business.
    assert_eq!(get(&gw.url(ONE), SUPPORT).await.status, 200);
}

#[tokio::test]
async fn each_on_missing_consent_action_in_lists_and_single_records() {
    for (action, single_status) in [("drop", 403), ("redact", 200), ("block", 403)] {
        let gw = TestGateway::builder()
            .policy("p.yaml", &policy_with(action))
            .grant("5", "marketing")
            .grant("7", "marketing")
            .start()
            .await;
        gw.crm.on(LIST, Reply::json(list(5..=8)));
        gw.crm
            .on("/crm/v3/objects/contacts/6", Reply::json(contact(6)));
        let got = get(&gw.url(LIST), MARKETING).await;
        let single = get(&gw.url("/crm/v3/objects/contacts/6"), MARKETING).await;
        assert_eq!(single.status, single_status, "{action}: {}", single.text());
        match action {
            "drop" => {
                assert_eq!(got.status, 200);
                assert_eq!(ids(&got), ["5", "7"], "{action}");
                assert_eq!(got.json()["paging"]["next"]["after"], "x");
            }
            "redact" => {
                assert_eq!(got.status, 200);
                let v = got.json();
                let recs = v["results"].as_array().unwrap();
                assert_eq!(recs.len(), 4, "{}", got.text());
                assert_eq!(recs[0]["id"], "5");
                assert_eq!(recs[1]["id"], "[REDACTED]", "{}", got.text());
                // The record stays, every value in it redacted.
                assert_eq!(recs[1]["properties"], "[REDACTED]");
                assert_eq!(recs[3]["properties"], "[REDACTED]");
                assert_eq!(recs[2]["id"], "7");
                assert_eq!(single.json()["properties"], "[REDACTED]");
                assert!(
                    !got.text().contains(
                        consentry::demo::data::contact(6)["properties"]["email"]
                            .as_str()
                            .unwrap()
                    )
                );
            }
            _ => {
                assert_eq!(
                    (got.status, got.problem().as_str()),
                    (403, "consent-required"),
                    "one customer without consent refuses the whole list"
                );
            }
        }
        assert_eq!(single_status == 403, single.status == 403);
        if single.status == 403 {
            assert_eq!(single.problem(), "consent-required");
        }
    }
}

#[tokio::test]
async fn a_grant_lapses_when_it_expires() {
    let clock = ManualClock::at(1_900_000_000_000);
    let gw = TestGateway::builder()
        .admin()
        .clock(Arc::clone(&clock))
        .start()
        .await;
    gw.crm.on(ONE, Reply::json(contact(7)));
    let body = r#"{"subject":"7","purpose":"marketing","status":"granted","expires_at":"2030-03-17T18:00:00Z","proof":"form-991"}"#;
    let ok = admin(&gw, "POST", "/v1/consents", "application/json", body).await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert_eq!(get(&gw.url(ONE), MARKETING).await.status, 200);
    // 2030-03-17T17:46:40Z + 1h: past the expiry.
    clock.advance(Duration::from_secs(3600));
    let got = get(&gw.url(ONE), MARKETING).await;
    assert_eq!(
        (got.status, got.problem().as_str()),
        (403, "consent-required")
    );
    let cur = admin(&gw, "GET", "/v1/subjects/7/consents", "", "").await;
    let c = &cur.json()["consents"][0];
    assert_eq!(
        (c["status"].as_str(), c["expired"].as_bool()),
        (Some("granted"), Some(true))
    );
    assert_eq!(c["proof"], "form-991");
}

#[tokio::test]
async fn a_100_record_list_costs_one_store_lookup() {
    let gw = TestGateway::builder()
        .grant_all(100, "marketing")
        .start()
        .await;
    gw.crm.on(LIST, Reply::json(list(1..=100)));
    let before = gw.consents().lookups();
    let got = get(&gw.url(LIST), MARKETING).await;
    assert_eq!(got.status, 200);
    assert_eq!(ids(&got).len(), 100);
    assert_eq!(gw.consents().lookups() - before, 1, "one batched lookup");
    // Cached: the next list needs none.
    let got = get(&gw.url(LIST), MARKETING).await;
    assert_eq!(ids(&got).len(), 100);
    assert_eq!(gw.consents().lookups() - before, 1);
}

/// Toggles a customer's consent through the admin API while other requests
/// run, and checks that no response started after a withdrawal was
/// acknowledged (and before the next grant began) holds the customer.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_changes_never_serve_a_customer_after_the_withdrawal_ack() {
    let gw = Arc::new(
        TestGateway::builder()
            .admin()
            .grant_all(40, "marketing")
            .start()
            .await,
    );
    gw.crm.on(LIST, Reply::json(list(1..=40)));
    gw.crm.on(ONE, Reply::json(contact(7)));
    // Odd: withdrawal number n/2 acknowledged, no grant begun since.
    let phase = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let checked = Arc::new(AtomicU64::new(0));
    let mut readers = Vec::new();
    for r in 0..4 {
        let (gw, phase, stop, checked) = (
            Arc::clone(&gw),
            Arc::clone(&phase),
            Arc::clone(&stop),
            Arc::clone(&checked),
        );
        readers.push(tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let before = phase.load(Ordering::SeqCst);
                let single = r % 2 == 0;
                let got = if single {
                    get(&gw.url(ONE), MARKETING).await
                } else {
                    get(&gw.url(LIST), MARKETING).await
                };
                let after = phase.load(Ordering::SeqCst);
                let served = if single {
                    got.status == 200
                } else {
                    assert_eq!(got.status, 200);
                    ids(&got).iter().any(|i| i == "7")
                };
                if before % 2 == 1 && before == after {
                    assert!(
                        !served,
                        "customer 7 served after withdrawal {before} was acknowledged"
                    );
                    checked.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for _ in 0..25 {
        // Even: a grant may be under way (this task is the only writer).
        let p = phase.load(Ordering::SeqCst);
        phase.store(p + p % 2, Ordering::SeqCst);
        assert_eq!(change(&gw, "7", "marketing", "granted").await.status, 200);
        assert_eq!(get(&gw.url(ONE), MARKETING).await.status, 200);
        assert_eq!(change(&gw, "7", "marketing", "withdrawn").await.status, 200);
        phase.fetch_add(1, Ordering::SeqCst); // odd: withdrawal acknowledged
        assert_eq!(get(&gw.url(ONE), MARKETING).await.status, 403);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stop.store(true, Ordering::SeqCst);
    for r in readers {
        r.await.unwrap();
    }
    assert!(
        checked.load(Ordering::Relaxed) > 0,
        "some responses ran entirely after a withdrawal"
    );
}

#[tokio::test]
async fn consent_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("store/consentry.db");
    let ring = write_master_key(dir.path());
    let gw = TestGateway::builder()
        .admin()
        .store_file(&file)
        .master_key(&ring)
        .start()
        .await;
    assert_eq!(change(&gw, "7", "marketing", "granted").await.status, 200);
    assert_eq!(change(&gw, "8", "marketing", "granted").await.status, 200);
    assert_eq!(change(&gw, "8", "marketing", "withdrawn").await.status, 200);
    gw.stop().await;

    let gw = TestGateway::builder()
        .admin()
        .store_file(&file)
        .master_key(&ring)
        .start()
        .await;
    gw.crm.on(LIST, Reply::json(list(6..=9)));
    assert_eq!(ids(&get(&gw.url(LIST), MARKETING).await), ["7"]);
    let h = admin(&gw, "GET", "/v1/subjects/8/consents/history", "", "").await;
    let statuses: Vec<&str> = h.json()["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| match e["status"].as_str().unwrap() {
            "granted" => "granted",
            _ => "withdrawn",
        })
        .collect();
    assert_eq!(statuses, ["granted", "withdrawn"]);
}

#[tokio::test]
async fn bad_input_is_refused_and_changes_nothing() {
    let gw = TestGateway::builder().admin().start().await;
    assert_eq!(change(&gw, "1", "marketing", "granted").await.status, 200);
    let before = export(&gw).await;
    let json = "application/json";
    let cases: Vec<(&str, &str, &str, u16, &str, &str)> = vec![
        (
            "/v1/consents",
            json,
            r#"{"subject":"7","purpose":"marketting","status":"granted"}"#,
            400,
            "invalid-consent",
            "unknown purpose `marketting`",
        ),
        (
            "/v1/consents",
            json,
            r#"{"subject":"","purpose":"marketing","status":"granted"}"#,
            400,
            "invalid-consent",
            "subject id",
        ),
        (
            "/v1/consents",
            json,
            r#"{"subject":"a\u0000b","purpose":"marketing","status":"granted"}"#,
            400,
            "invalid-consent",
            "control",
        ),
        (
            "/v1/consents",
            json,
            r#"{"subject":7.5,"purpose":"marketing","status":"granted"}"#,
            400,
            "invalid-consent",
            "`subject`",
        ),
        (
            "/v1/consents",
            json,
            r#"{"subject":"7","purpose":"marketing","status":"granted","expires_at":"2001-01-01T00:00:00Z"}"#,
            400,
            "invalid-consent",
            "in the past",
        ),
        (
            "/v1/consents",
            json,
            r#"{"subject":"7","purpose":"marketing","status":"maybe"}"#,
            400,
            "invalid-consent",
            "maybe",
        ),
        (
            "/v1/consents",
            json,
            r#"{"subject":"7","purpose":"marketing","status":"granted","colour":"red"}"#,
            400,
            "invalid-consent",
            "colour",
        ),
        (
            "/v1/consents",
            json,
            r#"[{"subject":"7","purpose":"marketing","status":"granted"},{"subject":"8","purpose":"nope","status":"granted"}]"#,
            400,
            "invalid-consent",
            "record 2",
        ),
        (
            "/v1/consents",
            json,
            "{not json",
            400,
            "invalid-consent",
            "not JSON",
        ),
        (
            "/v1/consents",
            "text/plain",
            r#"{"subject":"7","purpose":"marketing","status":"granted"}"#,
            415,
            "unsupported-media-type",
            "application/json",
        ),
        (
            "/v1/consents/import",
            "text/csv",
            "subject,purpose,status,at,source\n7,marketing,granted,2026-01-01T00:00:00Z,form\n8,marketing,granted,yesterday,form\n",
            400,
            "invalid-import",
            "line 3",
        ),
        (
            "/v1/consents/import",
            "text/csv",
            "subject,purpose,status,at,source\n7,marketing,granted,2026-01-01T00:00:00Z,form\n8,analytics.nope,granted,2026-01-01T00:00:00Z,form\n",
            400,
            "invalid-import",
            "line 3: unknown purpose",
        ),
        (
            "/v1/consents/import",
            json,
            r#"[{"subject":"7","purpose":"marketing","status":"granted"}]"#,
            400,
            "invalid-import",
            "`at` is missing",
        ),
        (
            "/v1/consents/import",
            "application/octet-stream",
            "x",
            415,
            "unsupported-media-type",
            "text/csv",
        ),
    ];
    for (path, ct, body, status, slug, says) in cases {
        let got = admin(&gw, "POST", path, ct, body).await;
        assert_eq!(
            (got.status, got.problem().as_str()),
            (status, slug),
            "{body}: {}",
            got.text()
        );
        let detail = got.json()["detail"].as_str().unwrap().to_owned();
        assert!(detail.contains(says), "{body}: {detail}");
    }
    // Oversized import: refused whole.
    let mut big = String::from("subject,purpose,status,at,source\n");
    while big.len() <= consentry::admin::consent::MAX_IMPORT_BODY {
        big.push_str("1234567,marketing,granted,2026-01-01T00:00:00Z,a-long-source-name-here\n");
    }
    let got = admin(&gw, "POST", "/v1/consents/import", "text/csv", &big).await;
    assert_eq!(
        (got.status, got.problem().as_str()),
        (413, "body-too-large")
    );
    // Tokens.
    let body = r#"{"subject":"7","purpose":"marketing","status":"granted"}"#;
    for auth in [
        None,
        Some("Bearer wrong-token-0123456789abcdefgh"),
        Some("Basic dGVzdDp0ZXN0"),
        Some(&format!("Bearer {ADMIN_TOKEN}x")[..]),
    ] {
        let mut h = vec![("content-type", "application/json")];
        if let Some(a) = auth {
            h.push(("authorization", a));
        }
        let got = send("POST", &gw.admin_url("/v1/consents"), &h, body.as_bytes()).await;
        assert_eq!(got.status, 401, "{auth:?}");
        assert!(got.problem().starts_with("admin-token-"));
        assert!(
            got.headers["www-authenticate"]
                .to_str()
                .unwrap()
                .starts_with("Bearer")
        );
    }
    assert_eq!(export(&gw).await, before, "nothing changed in the store");
    // Health needs no token; unknown paths are 404 problems.
    let h = send("GET", &gw.admin_url("/healthz"), &[], b"").await;
    assert_eq!(h.status, 200);
    let nf = admin(&gw, "GET", "/v1/nothing", "", "").await;
    assert_eq!((nf.status, nf.problem().as_str()), (404, "not-found"));
    let bad = admin(&gw, "GET", "/v1/subjects/%00/consents", "", "").await;
    assert_eq!(
        (bad.status, bad.problem().as_str()),
        (400, "invalid-subject")
    );
}

#[tokio::test]
async fn imports_are_all_or_nothing_idempotent_and_round_trip() {
    let gw = TestGateway::builder().admin().start().await;
    let csv = "subject,purpose,status,at,source,expires_at,proof\n\
               1,marketing,granted,2026-01-01T00:00:00Z,signup,,form-1\n\
               2,marketing,granted,2026-01-01T00:00:00Z,signup,2099-01-01T00:00:00Z,form-2\n\
               2,marketing,withdrawn,2026-02-01T00:00:00Z,unsubscribe,,\n\
               007,analytics,objected,2026-03-01T00:00:00Z,privacy-center,,\n";
    let got = admin(&gw, "POST", "/v1/consents/import", "text/csv", csv).await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(
        (
            got.json()["inserted"].as_u64(),
            got.json()["unchanged"].as_u64()
        ),
        (Some(4), Some(0))
    );
    let again = admin(&gw, "POST", "/v1/consents/import", "text/csv", csv).await;
    assert_eq!(
        (
            again.json()["inserted"].as_u64(),
            again.json()["unchanged"].as_u64()
        ),
        (Some(0), Some(4))
    );
    gw.crm.on(LIST, Reply::json(list(1..=3)));
    assert_eq!(ids(&get(&gw.url(LIST), MARKETING).await), ["1"]);
    let cur = admin(&gw, "GET", "/v1/subjects/007/consents", "", "").await;
    assert_eq!(cur.json()["consents"][0]["status"], "objected");

    // The export imports back unchanged (CSV and JSON lines).
    let jsonl = admin(&gw, "GET", "/v1/consents/export?format=jsonl", "", "").await;
    let csv_out = admin(&gw, "GET", "/v1/consents/export?format=csv", "", "").await;
    assert_eq!(csv_out.text().lines().count(), 5);
    for (ct, body) in [
        ("application/json", jsonl.text()),
        ("text/csv", csv_out.text()),
    ] {
        let got = admin(&gw, "POST", "/v1/consents/import", ct, &body).await;
        assert_eq!(got.json()["unchanged"], 4, "{ct}: {}", got.text());
    }
}

#[tokio::test]
async fn the_cli_imports_and_exports() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("policies")).unwrap();
    std::fs::write(dir.path().join("policies/p.yaml"), example_policy()).unwrap();
    write_master_key(dir.path());
    let cfg = dir.path().join("consentry.yaml");
    std::fs::write(
        &cfg,
        format!(
            "listen: 127.0.0.1:0\nupstream: {{ url: http://127.0.0.1:9 }}\npolicies: policies\n\
             keys: {{ hash_key: test-hash-key-0123456789abcdef, master_key_file: master.key }}\nstorage: {{ sqlite: data/c.db }}\n\
             clients:\n  - {{ name: m, api_key_sha256: {}, purposes: [marketing] }}\n",
            consentry::config::api_key_hash(MARKETING)
        ),
    )
    .unwrap();
    let file = dir.path().join("consents.csv");
    std::fs::write(
        &file,
        "subject,purpose,status,at,source\n7,marketing,granted,2026-01-01T00:00:00Z,form\n",
    )
    .unwrap();
    let bin = env!("CARGO_BIN_EXE_consentry");
    let run = |args: &[&str]| {
        std::process::Command::new(bin)
            .args(args)
            .arg("--config")
            .arg(&cfg)
            .output()
            .unwrap()
    };
    let out = run(&["consent", "import", file.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("1 new"));
    let out = run(&["consent", "import", file.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("0 new, 1 already there"));
    std::fs::write(&file, "subject,purpose,status,at,source\n8,marketing,granted,2026-01-01T00:00:00Z,form\n9,nope,granted,2026-01-01T00:00:00Z,form\n").unwrap();
    let out = run(&["consent", "import", file.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("line 3: unknown purpose `nope`"));
    let out = run(&["consent", "export", "--format", "csv"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert_eq!(text.lines().count(), 2, "{text}");
    assert!(text.contains("7,marketing,granted"), "{text}");
}

/// A store that fails every call after `fail` is set.
#[derive(Debug, Default)]
struct FlakyStore {
    inner: consentry::consent::store::MemoryStore,
    fail: AtomicBool,
    /// Lookups hang for longer than the gateway waits.
    hang: AtomicBool,
}

impl FlakyStore {
    fn check(&self) -> Result<(), StoreError> {
        if self.fail.load(Ordering::SeqCst) {
            Err(StoreError("disk I/O error".into()))
        } else {
            Ok(())
        }
    }
}

impl ConsentStore for FlakyStore {
    fn apply(&self, e: &[ConsentEvent], at: i64) -> Result<Applied, StoreError> {
        self.check()?;
        self.inner.apply(e, at)
    }
    fn current(
        &self,
        s: &[&str],
    ) -> Result<std::collections::HashMap<String, SubjectConsents>, StoreError> {
        self.check()?;
        if self.hang.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_secs(6));
        }
        self.inner.current(s)
    }
    fn history(&self, s: &str) -> Result<Vec<Stored>, StoreError> {
        self.check()?;
        self.inner.history(s)
    }
    fn export(&self, sink: &mut dyn FnMut(Stored)) -> Result<(), StoreError> {
        self.check()?;
        self.inner.export(sink)
    }
    fn erase(&self, e: &Erased) -> Result<Option<Erased>, StoreError> {
        self.check()?;
        self.inner.erase(e)
    }
    fn erasures(&self) -> Result<Vec<Erased>, StoreError> {
        self.inner.erasures()
    }
}

#[tokio::test]
async fn a_failing_store_fails_closed() {
    let store = Arc::new(FlakyStore::default());
    let gw = TestGateway::builder()
        .admin()
        .store(Arc::clone(&store) as Arc<dyn ConsentStore>)
        .grant("7", "marketing")
        .start()
        .await;
    gw.crm.on(LIST, Reply::json(list(7..=9)));
    gw.crm.on(ONE, Reply::json(contact(7)));
    store.fail.store(true, Ordering::SeqCst);
    for path in [LIST, ONE] {
        let got = get(&gw.url(path), MARKETING).await;
        assert_eq!(
            (got.status, got.problem().as_str()),
            (503, "consent-unavailable"),
            "{path}"
        );
        assert!(!got.text().contains("@"));
    }
    assert_eq!(
        get(&gw.url(ONE), SUPPORT).await.status,
        200,
        "no consent needed, no store needed"
    );
    let got = change(&gw, "7", "marketing", "withdrawn").await;
    assert_eq!(
        (got.status, got.problem().as_str()),
        (503, "consent-store-unavailable")
    );
    assert!(
        !got.text().contains("disk I/O"),
        "store internals stay in the log"
    );
    store.fail.store(false, Ordering::SeqCst);
    assert_eq!(
        ids(&get(&gw.url(LIST), MARKETING).await),
        ["7"],
        "the failed withdrawal changed nothing"
    );
    // A lookup that hangs fails closed too (after 5 s), for subjects not cached.
    store.hang.store(true, Ordering::SeqCst);
    gw.crm.on(LIST, Reply::json(list(20..=22)));
    let got = get(&gw.url(LIST), MARKETING).await;
    assert_eq!(
        (got.status, got.problem().as_str()),
        (503, "consent-unavailable")
    );
}

#[test]
fn a_store_that_cannot_be_opened_stops_start_up() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("policies")).unwrap();
    std::fs::write(dir.path().join("policies/p.yaml"), example_policy()).unwrap();
    write_master_key(dir.path());
    // The store's folder is a file.
    std::fs::write(dir.path().join("blocked"), "").unwrap();
    let cfg = dir.path().join("consentry.yaml");
    std::fs::write(
        &cfg,
        "listen: 127.0.0.1:0\nupstream: { url: http://127.0.0.1:9 }\npolicies: policies\n\
         keys: { hash_key: test-hash-key-0123456789abcdef, master_key_file: master.key }\nstorage: { sqlite: blocked/c.db }\n\
         clients:\n  - { name: m, api_key_sha256: 0000000000000000000000000000000000000000000000000000000000000000, purposes: [marketing] }\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_consentry"))
        .args(["serve", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot open the store") && err.contains("nothing was started"),
        "{err}"
    );
}

#[tokio::test]
async fn writes_carry_only_what_the_purpose_may_collect() {
    let gw = TestGateway::start().await;
    gw.crm.on(
        LIST,
        Reply::json(r#"{"id":"901","properties":{"email":"new@x.example"}}"#).status(201),
    );
    gw.crm.on(ONE, Reply::json(contact(7)));
    let json = ("content-type", "application/json");
    let got = send(
        "POST",
        &gw.url(LIST),
        &[("x-api-key", MARKETING), json],
        br#"{"properties":{"email":"new@x.example","firstname":"Nia","phone":"+1 555 234 5678"}}"#,
    )
    .await;
    assert_eq!(got.status, 201, "{}", got.text());
    assert_eq!(
        got.json()["id"],
        "901",
        "the new record comes back to its creator"
    );
    // Only the e-mail address, and as the token the CRM stores.
    let sent: serde_json::Value = serde_json::from_slice(&gw.crm.last().body).unwrap();
    let props = sent["properties"].as_object().unwrap();
    assert_eq!(props.keys().collect::<Vec<_>>(), ["email"]);
    assert!(
        props["email"].as_str().unwrap().starts_with("ctd1."),
        "{sent}"
    );

    // Support refuses rather than removes (minimise: refuse).
    let n = gw.crm.count();
    let got = send(
        "PATCH",
        &gw.url(ONE),
        &[("x-api-key", SUPPORT), json],
        br#"{"properties":{"notes":"card 4111 1111 1111 1111"}}"#,
    )
    .await;
    assert_eq!(
        (got.status, got.problem().as_str()),
        (403, "not-collectable")
    );
    assert!(!got.text().contains("4111"));
    assert_eq!(gw.crm.count(), n, "nothing reached the CRM");

    for (headers, status, slug) in [
        (
            vec![("x-api-key", SUPPORT), ("content-type", "text/plain")],
            415,
            "request-not-json",
        ),
        (
            vec![("x-api-key", SUPPORT), json, ("content-encoding", "gzip")],
            415,
            "request-encoding",
        ),
    ] {
        let got = send("PATCH", &gw.url(ONE), &headers, br#"{"properties":{}}"#).await;
        assert_eq!((got.status, got.problem().as_str()), (status, slug));
    }
    let got = send(
        "PATCH",
        &gw.url(ONE),
        &[("x-api-key", SUPPORT), json],
        b"{\"properties\":",
    )
    .await;
    assert_eq!(got.status, 400, "{}", got.text());
    assert_eq!(gw.crm.count(), n);
}

#[tokio::test]
async fn without_echo_created_a_created_record_is_consent_checked_too() {
    let policy = example_policy().replace("    echo_created: true\n", "");
    assert!(!policy.contains("echo_created"));
    let gw = TestGateway::builder()
        .policy("p.yaml", &policy)
        .start()
        .await;
    gw.crm.on(
        LIST,
        Reply::json(r#"{"id":"901","properties":{"email":"new@x.example"}}"#).status(201),
    );
    let got = send(
        "POST",
        &gw.url(LIST),
        &[
            ("x-api-key", MARKETING),
            ("content-type", "application/json"),
        ],
        br#"{"properties":{"email":"new@x.example"}}"#,
    )
    .await;
    assert_eq!(
        (got.status, got.problem().as_str()),
        (403, "consent-required")
    );
}

#[tokio::test]
async fn a_small_record_limit_holds_for_lists_waiting_on_consent() {
    // Records waiting for their lookup must not count against a record
    // buffer they individually fit in.
    let gw = TestGateway::builder()
        .config("limits: { record: 16KiB }")
        .grant_all(100, "marketing")
        .start()
        .await;
    gw.crm.on(LIST, Reply::json(list(1..=100)));
    let got = get(&gw.url(LIST), MARKETING).await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(ids(&got).len(), 100);
}

#[tokio::test]
async fn a_write_for_a_customer_without_consent_never_reaches_the_crm() {
    let gw = TestGateway::builder().admin().start().await;
    gw.crm.on(ONE, Reply::json(contact(7)));
    let url = gw.url(ONE);
    let patch = || {
        send(
            "PATCH",
            &url,
            &[
                ("x-api-key", MARKETING),
                ("content-type", "application/json"),
            ],
            br#"{"properties":{"email":"new@x.example","phone":"+1 555 234 5678"}}"#,
        )
    };
    let got = patch().await;
    assert_eq!(
        (got.status, got.problem().as_str()),
        (403, "consent-required")
    );
    assert!(
        got.json()["detail"]
            .as_str()
            .unwrap()
            .contains("not sent to the CRM")
    );
    assert_eq!(gw.crm.count(), 0, "refused before the CRM");
    assert_eq!(change(&gw, "7", "marketing", "granted").await.status, 200);
    let got = patch().await;
    assert_eq!(got.status, 200, "{}", got.text());
    // Only the e-mail address, and as the token the CRM stores.
    let sent: serde_json::Value = serde_json::from_slice(&gw.crm.last().body).unwrap();
    let props = sent["properties"].as_object().unwrap();
    assert_eq!(props.keys().collect::<Vec<_>>(), ["email"]);
    assert!(
        props["email"].as_str().unwrap().starts_with("ctd1."),
        "{sent}"
    );
    assert_eq!(change(&gw, "7", "marketing", "withdrawn").await.status, 200);
    assert_eq!(patch().await.status, 403);
    // A path segment that is no well-formed subject id is refused too.
    let odd = send(
        "PATCH",
        &gw.url("/crm/v3/objects/contacts/%207"),
        &[
            ("x-api-key", MARKETING),
            ("content-type", "application/json"),
        ],
        br#"{"properties":{}}"#,
    )
    .await;
    assert_eq!(
        (odd.status, odd.problem().as_str()),
        (403, "consent-required")
    );
    assert_eq!(gw.crm.count(), 1);
}

#[tokio::test]
async fn an_acknowledged_change_survives_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("policies")).unwrap();
    std::fs::write(dir.path().join("policies/p.yaml"), example_policy()).unwrap();
    write_master_key(dir.path());
    let (listen, admin_port) = (free_port(), free_port());
    let cfg = dir.path().join("consentry.yaml");
    std::fs::write(
        &cfg,
        format!(
            "listen: 127.0.0.1:{listen}\nupstream: {{ url: http://127.0.0.1:9 }}\npolicies: policies\n\
             keys: {{ hash_key: test-hash-key-0123456789abcdef, master_key_file: master.key }}\nstorage: {{ sqlite: data/c.db }}\n\
             admin: {{ listen: 127.0.0.1:{admin_port}, token: {ADMIN_TOKEN} }}\n\
             clients:\n  - {{ name: m, api_key_sha256: {}, purposes: [marketing] }}\n",
            consentry::config::api_key_hash(MARKETING)
        ),
    )
    .unwrap();
    let start = || {
        Killed(
            std::process::Command::new(env!("CARGO_BIN_EXE_consentry"))
                .args(["serve", "--config"])
                .arg(&cfg)
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap(),
        )
    };
    let admin_url = |p: &str| format!("http://127.0.0.1:{admin_port}{p}");
    let auth = format!("Bearer {ADMIN_TOKEN}");
    let wait_up = || async {
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", admin_port))
                .await
                .is_ok()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the gateway did not start");
    };
    let child = start();
    wait_up().await;
    for (subject, status) in [("7", "granted"), ("8", "granted"), ("8", "withdrawn")] {
        let body =
            format!(r#"{{"subject":"{subject}","purpose":"marketing","status":"{status}"}}"#);
        let got = send(
            "POST",
            &admin_url("/v1/consents"),
            &[
                ("authorization", &auth),
                ("content-type", "application/json"),
            ],
            body.as_bytes(),
        )
        .await;
        assert_eq!(got.status, 200, "{}", got.text());
    }
    drop(child);
    let _child = start();
    wait_up().await;
    for (subject, want) in [("7", "granted"), ("8", "withdrawn")] {
        let got = send(
            "GET",
            &admin_url(&format!("/v1/subjects/{subject}/consents")),
            &[("authorization", &auth)],
            b"",
        )
        .await;
        assert_eq!(got.json()["consents"][0]["status"], want, "{}", got.text());
    }
}
