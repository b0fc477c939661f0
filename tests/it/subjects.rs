//! Subject requests end to end: erasure (suppression, shredding, the
//! forwarded delete, the receipt, unlinking), access reports with the CRM's
//! record, and what the auditor token may and may not do.

use serde_json::{Value, json};

use crate::harness::*;

const CONTACTS: &str = "/crm/v3/objects/contacts";
const ONE: &str = "/crm/v3/objects/contacts/7";
const SUBJECTS: &str = "subjects: { record: \"/crm/v3/objects/contacts/{id}\", access_purpose: essential.legal_obligation, forward_erasure: true }";

async fn as_auditor(gw: &TestGateway, method: &str, path: &str) -> Got {
    let auth = format!("Bearer {AUDITOR_TOKEN}");
    send(
        method,
        &gw.admin_url(path),
        &[("authorization", &auth)],
        b"",
    )
    .await
}

async fn erase(gw: &TestGateway, id: &str, unlink: bool) -> Got {
    let body = json!({ "unlink": unlink }).to_string();
    admin(
        gw,
        "POST",
        &format!("/v1/subjects/{id}/erase"),
        "application/json",
        &body,
    )
    .await
}

fn ids(list: &Value) -> Vec<String> {
    list["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_owned())
        .collect()
}

/// The legacy CRM keeps the record (no forwarded delete): the gateway
/// withholds it anyway, for every purpose, alone or in lists, across a
/// restart.
#[tokio::test]
async fn an_erased_customer_never_leaves_the_gateway_again() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("consentry.db");
    let ring = write_master_key(dir.path());
    let start = || {
        TestGateway::builder()
            .admin()
            .store_file(&file)
            .master_key(&ring)
            .grant_all(9, "marketing")
            .start()
    };
    let gw = start().await;
    let list = format!(
        r#"{{"results":[{},{},{}]}}"#,
        contact(1),
        contact(7),
        contact(9)
    );
    gw.crm.on(CONTACTS, Reply::json(list.clone()));
    gw.crm.on(ONE, Reply::json(contact(7)));
    assert_eq!(get(&gw.url(ONE), SUPPORT).await.status, 200);

    let got = erase(&gw, "7", false).await;
    assert_eq!(got.status, 200, "{}", got.text());
    let receipt = got.json();
    assert_eq!(receipt["suppressed"], true);
    assert_eq!(receipt["already_erased"], false);
    assert_eq!(receipt["receipt"].as_str().unwrap().len(), 32);

    let check = |gw: &TestGateway| {
        let (one, all) = (gw.url(ONE), gw.url(CONTACTS));
        async move {
            for key in [SUPPORT, MARKETING] {
                let got = get(&one, key).await;
                assert_eq!((got.status, got.problem().as_str()), (410, "record-erased"));
                let got = get(&all, key).await;
                assert_eq!(got.status, 200);
                assert_eq!(ids(&got.json()), ["1", "9"], "{key}");
                assert!(!got.text().contains("Doe-7") && !got.text().contains("\"7\""));
            }
        }
    };
    check(&gw).await;

    // Their path is closed to writes too: nothing reaches the CRM.
    let before = gw.crm.count();
    for method in ["PATCH"] {
        let got = send(
            method,
            &gw.url(ONE),
            &[("x-api-key", SUPPORT), ("content-type", "application/json")],
            br#"{"properties":{"firstname":"Again"}}"#,
        )
        .await;
        assert_eq!(
            (got.status, got.problem().as_str()),
            (410, "record-erased"),
            "{method}"
        );
    }
    assert_eq!(gw.crm.count(), before);

    // Asking again changes nothing and returns the first receipt.
    let again = erase(&gw, "7", false).await.json();
    assert_eq!(again["already_erased"], true);
    assert_eq!(again["receipt"], receipt["receipt"]);
    assert_eq!(again["erased_at"], receipt["erased_at"]);

    gw.stop().await;
    let gw = start().await;
    gw.crm.on(CONTACTS, Reply::json(list));
    gw.crm.on(ONE, Reply::json(contact(7)));
    check(&gw).await;
}

/// A gateway with the admin API and subject requests in front of the
/// sample CRM (which keeps what it is sent, and deletes).
async fn before_sample_crm() -> (std::sync::Arc<consentry::demo::crm::Crm>, TestGateway) {
    let (crm, url) = sample_crm().await;
    let gw = TestGateway::builder()
        .upstream(&url)
        .admin()
        .config(SUBJECTS)
        .start()
        .await;
    (crm, gw)
}

/// With `subjects.forward_erasure`, in front of the sample CRM: the key is
/// shredded, the CRM deletes its record, the earlier audit entries are
/// unlinked and the chain still verifies.
#[tokio::test]
async fn erasure_shreds_forwards_the_delete_and_unlinks_the_trail() {
    let (crm, gw) = before_sample_crm().await;
    let body = json!({"properties": {"email": "ada@example.org", "firstname": "Ada", "phone": "+44 20 7946 0001"}});
    let created = send(
        "POST",
        &gw.url(CONTACTS),
        &[("x-api-key", SUPPORT), ("content-type", "application/json")],
        body.to_string().as_bytes(),
    )
    .await;
    assert_eq!(created.status, 201, "{}", created.text());
    let id = created.json()["id"].as_str().unwrap().to_owned();
    let one = gw.url(&format!("{CONTACTS}/{id}"));
    assert_eq!(get(&one, SUPPORT).await.status, 200);

    // The access report holds the CRM's record, decrypted for the customer
    // (with the admin token; an auditor gets the report without it).
    let audited = as_auditor(&gw, "GET", &format!("/v1/subjects/{id}/access")).await;
    assert_eq!(audited.status, 200, "{}", audited.text());
    assert!(
        audited.json().get("crm_record").is_none(),
        "{}",
        audited.text()
    );
    assert!(!audited.text().contains("ada@example.org"));
    let report = admin(&gw, "GET", &format!("/v1/subjects/{id}/access"), "", "").await;
    assert_eq!(report.status, 200, "{}", report.text());
    let report = report.json();
    let record = &report["crm_record"]["record"]["properties"];
    assert_eq!(record["email"], "ada@example.org", "{report:#}");
    assert_eq!(record["phone"], "+44 20 7946 0001");
    let accesses = report["accesses"].as_array().unwrap();
    let routes: Vec<(&str, &str)> = accesses
        .iter()
        .filter(|a| a["kind"] == "request")
        .map(|a| (a["method"].as_str().unwrap(), a["record"].as_str().unwrap()))
        .collect();
    assert_eq!(routes, [("POST", "shown"), ("GET", "shown")], "{report:#}");
    assert!(!crm.stored().is_empty());

    let got = erase(&gw, &id, true).await;
    assert_eq!(got.status, 200, "{}", got.text());
    let r = got.json();
    assert_eq!(r["data_key"], "destroyed", "{r:#}");
    assert_eq!(r["crm_delete"]["status"], 204, "{r:#}");
    assert_eq!(r["crm_delete"]["deleted"], true);
    // create, read, two access reports: four entries unlinked.
    assert_eq!(r["audit_entries_unlinked"], 4, "{r:#}");
    assert_eq!(
        String::from_utf8(crm.stored()).unwrap(),
        "[]",
        "the CRM's copy is gone"
    );

    // The trail still verifies; the customer's earlier events no longer
    // name them, only the erasure does.
    let v = as_auditor(&gw, "GET", "/v1/audit/verify").await;
    assert_eq!(v.status, 200, "{}", v.text());
    assert_eq!(v.json()["ok"], true);
    let mine = as_auditor(&gw, "GET", &format!("/v1/audit/events?subject={id}")).await;
    let kinds: Vec<Value> = mine.json()["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].clone())
        .collect();
    assert_eq!(kinds, ["erasure"], "{}", mine.text());
    let report = admin(&gw, "GET", &format!("/v1/subjects/{id}/access"), "", "")
        .await
        .json();
    assert_eq!(report["erasure"]["data_key"]["state"], "destroyed");
    assert_eq!(report["erasure"]["erased"]["receipt"], r["receipt"]);
    assert_eq!(report["crm_record"]["erased"], true, "not fetched again");

    // A write for them is refused before anything is sealed or sent.
    let got = send(
        "PATCH",
        &one,
        &[("x-api-key", SUPPORT), ("content-type", "application/json")],
        br#"{"properties":{"phone":"+1 555 0100"}}"#,
    )
    .await;
    assert_eq!(got.status, 410, "{}", got.text());
}

#[tokio::test]
async fn auditors_read_with_paging_and_change_nothing() {
    let gw = TestGateway::builder().admin().start().await;
    gw.crm.on(ONE, Reply::json(contact(7)));
    for _ in 0..5 {
        assert_eq!(get(&gw.url(ONE), SUPPORT).await.status, 200);
    }
    // Pages of two, oldest first, until `next_after` is null.
    let mut seqs = Vec::new();
    let mut after = 0;
    loop {
        let page = as_auditor(
            &gw,
            "GET",
            &format!("/v1/audit/events?subject=7&limit=2&after={after}"),
        )
        .await;
        assert_eq!(page.status, 200, "{}", page.text());
        let page = page.json();
        for e in page["events"].as_array().unwrap() {
            assert_eq!(e["client"], "support");
            seqs.push(e["seq"].as_u64().unwrap());
        }
        match page["next_after"].as_u64() {
            Some(n) => after = n,
            None => break,
        }
    }
    assert_eq!(seqs, [1, 2, 3, 4, 5]);
    let none = as_auditor(&gw, "GET", "/v1/audit/events?client=marketing").await;
    assert_eq!(none.json()["events"], json!([]));

    // Malformed filters: 400, naming the problem.
    for q in [
        "since=yesterday",
        "limit=0",
        "limit=5000",
        "after=x",
        "colour=red",
    ] {
        let got = as_auditor(&gw, "GET", &format!("/v1/audit/events?{q}")).await;
        assert_eq!(
            (got.status, got.problem().as_str()),
            (400, "invalid-filter"),
            "{q}"
        );
    }
    // The auditor token changes nothing; a wrong token gets 401.
    for (method, path) in [
        ("POST", "/v1/subjects/7/erase"),
        ("DELETE", "/v1/subjects/7/key"),
        ("POST", "/v1/consents"),
        ("POST", "/v1/audit/prune"),
        ("GET", "/v1/consents/export"),
    ] {
        let got = as_auditor(&gw, method, path).await;
        assert_eq!(
            (got.status, got.problem().as_str()),
            (403, "auditor-read-only"),
            "{method} {path}"
        );
    }
    let wrong = send(
        "GET",
        &gw.admin_url("/v1/audit/events"),
        &[("authorization", "Bearer not-the-auditor-token-0123456789")],
        b"",
    )
    .await;
    assert_eq!(wrong.status, 401);
    assert_eq!(get(&gw.url(ONE), SUPPORT).await.status, 200);
    let cps = as_auditor(&gw, "GET", "/v1/audit/checkpoints").await;
    assert_eq!(cps.status, 200);
    assert!(cps.json()[0]["signature"].as_str().unwrap().len() == 128);
}

#[tokio::test]
async fn pruning_keeps_what_remains_verifiable() {
    let gw = TestGateway::builder()
        .admin()
        .config("storage: { audit_retention: 1s }")
        .start()
        .await;
    gw.crm.on(ONE, Reply::json(contact(7)));
    for _ in 0..3 {
        get(&gw.url(ONE), SUPPORT).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    get(&gw.url(ONE), SUPPORT).await;
    let got = admin(&gw, "POST", "/v1/audit/prune", "", "").await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(got.json(), json!({"events": 3, "through": 3}));
    let v = admin(&gw, "GET", "/v1/audit/verify", "", "").await;
    assert_eq!(v.status, 200, "{}", v.text());
    assert_eq!(v.json()["events"], 2, "the 4th request and the prune act");

    // Cutting the head any further, without a signed checkpoint, is named.
    let conn = rusqlite::Connection::open(gw.dir().join("audit.db")).unwrap();
    conn.execute("DELETE FROM audit_events WHERE seq = 4", [])
        .unwrap();
    let v = admin(&gw, "GET", "/v1/audit/verify", "", "").await;
    assert_eq!(v.status, 409, "{}", v.text());
    assert!(
        v.json()["detail"]
            .as_str()
            .unwrap()
            .contains("no checkpoint marks them as pruned")
    );
}

/// The two commands a data-protection officer runs, against a running
/// gateway: `subject access ID --record` and `subject erase ID --unlink`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_answers_access_and_erasure_requests_through_the_running_gateway() {
    let (crm, gw) = before_sample_crm().await;
    assert_eq!(get(&gw.url(ONE), SUPPORT).await.status, 200);
    // The CLI finds the admin API through the config.
    let cfg = gw.dir().join("cli.yaml");
    let mut text = std::fs::read_to_string(gw.dir().join("consentry.yaml")).unwrap();
    text.push_str(&format!(
        "admin: {{ listen: \"{}\", token: {ADMIN_TOKEN} }}\n",
        gw.admin.unwrap()
    ));
    std::fs::write(&cfg, text).unwrap();
    let cli = |args: &'static [&'static str]| {
        let cfg = cfg.clone();
        tokio::task::spawn_blocking(move || {
            let ran = run_cli(&cfg, args);
            (ran.ok, ran.out, ran.err)
        })
    };
    let (ok, out, err) = cli(&["subject", "access", "7", "--record"]).await.unwrap();
    assert!(ok, "{out}{err}");
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["crm_record"]["record"]["id"], "7");
    assert_eq!(report["accesses"][0]["client"], "support");

    let (ok, out, err) = cli(&["subject", "erase", "7", "--unlink"]).await.unwrap();
    assert!(ok, "{out}{err}");
    let receipt: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(receipt["crm_delete"]["deleted"], true, "{receipt:#}");
    assert_eq!(
        receipt["audit_entries_unlinked"], 2,
        "the read and the access report"
    );
    assert_eq!(get(&gw.url(ONE), SUPPORT).await.status, 410);
    let (ok, out, _) = cli(&["audit", "query", "--subject", "7", "--format", "jsonl"])
        .await
        .unwrap();
    assert!(ok);
    let kinds: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["kind"].clone())
        .collect();
    assert_eq!(kinds, ["erasure"], "{out}");
    let (ok, out, _) = cli(&["audit", "verify"]).await.unwrap();
    assert!(ok && out.contains("the chain is intact"), "{out}");
    drop(crm);
}

/// A subject-request config that cannot work stops start-up, saying why.
#[test]
fn a_record_path_the_policies_do_not_inspect_stops_start_up() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("policies")).unwrap();
    std::fs::write(dir.path().join("policies/p.yaml"), example_policy()).unwrap();
    write_master_key(dir.path());
    let cfg = dir.path().join("consentry.yaml");
    let write = |subjects: &str| {
        std::fs::write(
            &cfg,
            format!(
                "listen: 127.0.0.1:0\nupstream: {{ url: http://127.0.0.1:9 }}\npolicies: policies\n\
                 keys: {{ hash_key: test-hash-key-0123456789abcdef, master_key_file: master.key }}\n\
                 clients:\n  - {{ name: m, api_key_sha256: {}, purposes: [marketing] }}\n{subjects}\n",
                "0".repeat(64)
            ),
        )
        .unwrap();
    };
    let serve = || {
        let ran = run_cli(&cfg, &["serve"]);
        (ran.ok, ran.err)
    };
    write(
        "subjects: { record: \"/crm/v3/owners/{id}\", access_purpose: essential.legal_obligation }",
    );
    let (ok, err) = serve();
    assert!(
        !ok && err.contains("is not a GET route the policies inspect"),
        "{err}"
    );
    write(
        "subjects: { record: \"/crm/v3/objects/contacts/{id}\", access_purpose: analytics.nothing }",
    );
    let (ok, err) = serve();
    assert!(
        !ok && err.contains("which no policy has a rule for"),
        "{err}"
    );
}
