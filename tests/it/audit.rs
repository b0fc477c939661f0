//! The audit trail through a real listener: one event per request, chained,
//! durable before the response, and no response when it cannot be written.

use std::time::Duration;

use crate::harness::*;

const ONE: &str = "/crm/v3/objects/contacts/7";
const LIST: &str = "/crm/v3/objects/contacts";

/// The stored events, each with its customer entries (stored beside the
/// body, each under its commitment) put back in place.
fn events(gw: &TestGateway) -> Vec<serde_json::Value> {
    let conn = rusqlite::Connection::open(gw.dir().join("audit.db")).unwrap();
    let mut stmt = conn
        .prepare("SELECT body, entries FROM audit_events ORDER BY seq")
        .unwrap();
    stmt.query_map([], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, Vec<u8>>(1)?))
    })
    .unwrap()
    .map(|row| {
        let (body, blob) = row.unwrap();
        let mut e: serde_json::Value = serde_json::from_str(&body).unwrap();
        let open: Vec<serde_json::Value> = consentry::audit::entries::open(&blob)
            .unwrap()
            .into_iter()
            .filter_map(|s| s.entry)
            .map(|e| serde_json::to_value(e).unwrap())
            .collect();
        if !open.is_empty() {
            e["subjects"] = open.into();
        }
        e
    })
    .collect()
}

#[tokio::test]
async fn every_request_gets_one_chained_event_before_its_response() {
    let gw = TestGateway::builder().grant("1", "marketing").start().await;
    gw.crm.on(ONE, Reply::json(contact(7)));
    let list = format!(r#"{{"results":[{},{}]}}"#, contact(1), contact(2));
    gw.crm.on(LIST, Reply::json(list));
    gw.crm.on(
        "/crm/v3/objects/contacts/9",
        Reply::json("<html>").header("content-type", "text/html"),
    );
    let mut statuses = Vec::new();
    statuses.push(get(&gw.url(ONE), SUPPORT).await.status); // served
    statuses.push(get(&gw.url(LIST), MARKETING).await.status); // 2 dropped to 1
    statuses.push(get(&gw.url(ONE), "no-such-key-0123456789").await.status); // refused
    statuses.push(
        get(&gw.url("/crm/v3/objects/contacts/9"), SUPPORT)
            .await
            .status,
    ); // CRM fault
    statuses.push(
        get(&gw.url("/crm/v3/properties/contacts"), SUPPORT)
            .await
            .status,
    ); // passthrough
    assert_eq!(statuses, [200, 200, 401, 502, 404]);
    let ev = events(&gw);
    assert_eq!(ev.len(), 5, "{ev:#?}");
    let decisions: Vec<&str> = ev.iter().map(|e| e["decision"].as_str().unwrap()).collect();
    assert_eq!(
        decisions,
        ["served", "served", "refused", "refused", "passed"]
    );
    assert_eq!(ev[0]["route"], "/crm/v3/objects/contacts/{id}");
    assert_eq!(ev[0]["client"], "support");
    assert_eq!(ev[0]["purpose"], "essential.service");
    // What support saw of the record, by category.
    let masked = &ev[0]["categories"]["masked"];
    assert_eq!(masked, &serde_json::json!(["user.contact.phone_number"]));
    let disclosed = ev[0]["categories"]["disclosed"].as_array().unwrap();
    assert!(
        disclosed.contains(&"user.contact.email".into()),
        "{disclosed:?}"
    );
    let removed = ev[1]["categories"]["removed"].as_array().unwrap();
    assert!(
        removed.contains(&"user.contact.phone_number".into()),
        "{removed:?}"
    );
    let shown = ev[1]["categories"]["disclosed"].as_array().unwrap();
    assert!(shown.contains(&"user.contact.email".into()), "{shown:?}");
    assert!(
        ev[2].get("categories").is_none(),
        "a refusal discloses nothing"
    );
    assert_eq!(ev[2]["problem"], "api-key-unknown");
    assert_eq!(ev[3]["problem"], "not-json");
    // The list: one customer shown, one dropped, both as pseudonyms.
    let subjects = ev[1]["subjects"].as_array().unwrap();
    let records: Vec<&str> = subjects
        .iter()
        .map(|s| s["record"].as_str().unwrap())
        .collect();
    assert_eq!(records, ["shown", "dropped"]);
    assert_eq!(subjects[0]["subject"].as_str().unwrap().len(), 32);
    assert_eq!(ev[1]["counts"]["records_dropped"], 1);
    // The trail holds no subject ids, e-mail addresses or paths.
    let raw = serde_json::to_string(&ev).unwrap();
    for leak in ["\"7\"", "\"1\"", "@", "/contacts/7"] {
        assert!(!raw.contains(leak), "{leak}: {raw}");
    }
    assert_eq!(
        consentry::audit::store::verify(&gw.dir().join("audit.db")).unwrap(),
        Ok(5)
    );
}

#[tokio::test]
async fn no_response_leaves_when_its_event_cannot_be_stored() {
    let gw = TestGateway::start().await;
    gw.crm.on(ONE, Reply::json(contact(7)));
    assert_eq!(get(&gw.url(ONE), SUPPORT).await.status, 200);
    // Another process holds the audit file's write lock: commits fail.
    let path = gw.dir().join("audit.db");
    let blocker = rusqlite::Connection::open(&path).unwrap();
    blocker.execute_batch("BEGIN EXCLUSIVE;").unwrap();
    let got = tokio::time::timeout(Duration::from_secs(20), get(&gw.url(ONE), SUPPORT))
        .await
        .unwrap();
    assert_eq!(
        (got.status, got.problem().as_str()),
        (503, "audit-unavailable")
    );
    assert!(!got.text().contains("properties"), "none of the data");
    // The store is back: so is the gateway, and the chain holds.
    blocker.execute_batch("COMMIT;").unwrap();
    assert_eq!(get(&gw.url(ONE), SUPPORT).await.status, 200);
    assert_eq!(consentry::audit::store::verify(&path).unwrap(), Ok(2));
}

#[tokio::test]
async fn the_cli_verifies_the_chain_and_names_the_first_bad_event() {
    let gw = TestGateway::start().await;
    gw.crm.on(ONE, Reply::json(contact(7)));
    for _ in 0..4 {
        get(&gw.url(ONE), SUPPORT).await;
    }
    let verify = || {
        let ran = run_cli(&gw.dir().join("consentry.yaml"), &["audit", "verify"]);
        (ran.ok, ran.text())
    };
    let (ok, text) = verify();
    assert!(
        ok && text.contains("4 event(s), the chain is intact"),
        "{text}"
    );
    let conn = rusqlite::Connection::open(gw.dir().join("audit.db")).unwrap();
    conn.execute(
        "UPDATE audit_events SET body = replace(body, 'served', 'passed') WHERE seq = 3",
        [],
    )
    .unwrap();
    let (ok, text) = verify();
    assert!(!ok && text.contains("event 3:"), "{text}");
}

#[tokio::test]
async fn a_withheld_record_and_an_unreachable_crm_each_get_exactly_one_event() {
    // Contact 7 never opted in to marketing: the single record is withheld
    // (403), and the event names them with what became of their record.
    let gw = TestGateway::builder().start().await;
    gw.crm.on(ONE, Reply::json(contact(7)));
    let blocked = get(&gw.url(ONE), MARKETING).await;
    assert_eq!(
        (blocked.status, blocked.problem().as_str()),
        (403, "consent-required")
    );
    let down = TestGateway::builder()
        .upstream("http://127.0.0.1:9")
        .start()
        .await;
    assert_eq!(get(&down.url(ONE), SUPPORT).await.status, 502);
    let ev = events(&gw);
    assert_eq!(ev.len(), 1, "{ev:#?}");
    assert_eq!(ev[0]["decision"], "refused");
    assert_eq!(ev[0]["problem"], "consent-required");
    assert_eq!(ev[0]["subjects"][0]["record"], "dropped");
    assert!(ev[0].get("categories").is_none(), "nothing was disclosed");
    let ev = events(&down);
    assert_eq!(ev.len(), 1, "{ev:#?}");
    assert_eq!(ev[0]["problem"], "upstream-unavailable");
}

#[tokio::test]
async fn administrative_acts_are_recorded_too() {
    let gw = TestGateway::builder().admin().start().await;
    let body = r#"{"subject":"4711","purpose":"marketing","status":"granted"}"#;
    let json = "application/json";
    assert_eq!(
        admin(&gw, "POST", "/v1/consents", json, body).await.status,
        200
    );
    let shred = admin(&gw, "DELETE", "/v1/subjects/4711/key", json, "").await;
    assert_eq!(shred.status, 200);
    let ev = events(&gw);
    let kinds: Vec<(&str, &str)> = ev
        .iter()
        .map(|e| (e["kind"].as_str().unwrap(), e["decision"].as_str().unwrap()))
        .collect();
    assert_eq!(kinds, [("consent", "changed"), ("keys", "shredded")]);
    assert_eq!(ev[0]["subjects"][0]["record"], "consent marketing granted");
    assert_eq!(
        ev[0]["subjects"][0]["subject"],
        ev[1]["subjects"][0]["subject"]
    );
    assert!(!serde_json::to_string(&ev).unwrap().contains("4711"));
}

#[tokio::test]
async fn a_streamed_response_is_recorded_before_its_first_byte_and_at_its_end() {
    let gw = TestGateway::builder()
        .config("limits: { stream_after: 4KiB }")
        .start()
        .await;
    let list: Vec<String> = (1..=20).map(contact).collect();
    gw.crm.on(
        LIST,
        Reply::json(format!(r#"{{"results":[{}]}}"#, list.join(","))),
    );
    // The first read looks up the customers' keys (nothing waits after it),
    // the second streams.
    assert_eq!(get(&gw.url(LIST), SUPPORT).await.status, 200);
    assert_eq!(get(&gw.url(LIST), SUPPORT).await.status, 200);
    // The final event is written when the stream ends, just after the body.
    let mut ev = events(&gw);
    for _ in 0..50 {
        if ev.len() == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        ev = events(&gw);
    }
    let decisions: Vec<&str> = ev.iter().map(|e| e["decision"].as_str().unwrap()).collect();
    assert_eq!(decisions, ["served", "streaming", "served"]);
    assert_eq!(ev[2]["subjects"].as_array().unwrap().len(), 20);
    assert_eq!(ev[2]["counts"]["records"], 20);
}

#[tokio::test]
async fn auditors_query_by_customer_client_and_decision() {
    let gw = TestGateway::builder().grant("1", "marketing").start().await;
    let list = format!(r#"{{"results":[{},{}]}}"#, contact(1), contact(2));
    gw.crm.on(LIST, Reply::json(list));
    gw.crm.on(ONE, Reply::json(contact(7)));
    get(&gw.url(LIST), MARKETING).await; // 1 shown, 2 dropped
    get(&gw.url(ONE), SUPPORT).await; // 7 shown
    get(&gw.url(ONE), "no-such-key-0123456789").await; // refused
    let query = |args: &[&str]| {
        let args: Vec<&str> = ["audit", "query"].iter().chain(args).copied().collect();
        let ran = run_cli(&gw.dir().join("consentry.yaml"), &args);
        assert!(ran.ok, "{}", ran.err);
        ran.out
    };
    let lines = |s: String| -> Vec<serde_json::Value> {
        s.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    // Customer 2: the one list that held (and dropped) their record.
    let two = lines(query(&["--subject", "2", "--format", "jsonl"]));
    assert_eq!(two.len(), 1);
    assert_eq!(two[0]["client"], "marketing");
    assert_eq!(two[0]["seq"], 1);
    let seven = lines(query(&["--subject", "7", "--format", "jsonl"]));
    assert_eq!(seven.len(), 1);
    assert_eq!(seven[0]["purpose"], "essential.service");
    assert_eq!(
        lines(query(&["--decision", "refused", "--format", "jsonl"])).len(),
        1
    );
    let csv = query(&["--client", "support", "--format", "csv"]);
    assert!(csv.starts_with("seq,time,kind,request_id,client"), "{csv}");
    assert_eq!(csv.lines().count(), 2, "{csv}");
    let table = query(&["--subject", "2"]);
    assert!(table.contains("dropped"), "{table}");
    assert!(!table.contains("\"2\""));
    assert_eq!(
        lines(query(&[
            "--since",
            "2999-01-01T00:00:00Z",
            "--format",
            "jsonl"
        ]))
        .len(),
        0
    );
}

#[tokio::test]
async fn a_subject_access_report_holds_consent_accesses_and_erasure() {
    let gw = TestGateway::builder()
        .admin()
        .grant("1", "marketing")
        .start()
        .await;
    let list = format!(r#"{{"results":[{},{}]}}"#, contact(1), contact(2));
    gw.crm.on(LIST, Reply::json(list));
    gw.crm
        .on("/crm/v3/objects/contacts/1", Reply::json(contact(1)));
    get(&gw.url(LIST), MARKETING).await; // 1 shown, 2 dropped
    get(&gw.url("/crm/v3/objects/contacts/1"), SUPPORT).await; // 1 shown
    let shred = admin(&gw, "DELETE", "/v1/subjects/2/key", "application/json", "").await;
    assert_eq!(shred.status, 200);
    let report = |id: &str| {
        let ran = run_cli(&gw.dir().join("consentry.yaml"), &["subject", "access", id]);
        assert!(ran.ok, "{}", ran.err);
        serde_json::from_str::<serde_json::Value>(&ran.out).unwrap()
    };
    let one = report("1");
    assert_eq!(one["consent_history"][0]["purpose"], "marketing");
    assert_eq!(one["consent_history"][0]["status"], "granted");
    let acc = one["accesses"].as_array().unwrap();
    let seen: Vec<(&str, &str)> = acc
        .iter()
        .map(|a| {
            (
                a["purpose"].as_str().unwrap(),
                a["record"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [("marketing", "shown"), ("essential.service", "shown")]
    );
    assert_eq!(one["erasure"]["data_key"]["state"], "none");
    let two = report("2");
    assert_eq!(two["consent_history"].as_array().unwrap().len(), 0);
    let acc = two["accesses"].as_array().unwrap();
    assert_eq!(acc[0]["record"], "dropped");
    assert_eq!(
        (acc[1]["kind"].as_str(), acc[1]["decision"].as_str()),
        (Some("keys"), Some("shredded"))
    );
    assert_eq!(two["erasure"]["data_key"]["state"], "destroyed");
}
