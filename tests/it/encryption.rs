//! Encryption at rest, end to end: the gateway in front of the sample CRM,
//! which stores exactly what it receives.

use std::sync::Arc;

use consentry::demo::crm::Crm;
use http::Method;
use serde_json::{Value, json};

use crate::harness::*;

const CONTACTS: &str = "/crm/v3/objects/contacts";
const SEARCH: &str = "/crm/v3/objects/contacts/search";

/// The plain values of a new contact that the CRM must never hold.
const SECRETS: [&str; 6] = [
    "nia.okafor@example.org",
    "+44 20 7946 0958",
    "Downing",
    "SW1A 2AA",
    "1990-04-01",
    "after 6pm",
];

fn new_contact(email: &str) -> String {
    json!({"properties": {
        "email": email,
        "firstname": "Nia",
        "lastname": "Okafor",
        "phone": "+44 20 7946 0958",
        "address": "10 Downing Street",
        "zip": "SW1A 2AA",
        "city": "London",
        "date_of_birth": "1990-04-01",
        "notes": "Prefers calls after 6pm",
    }})
    .to_string()
}

async fn gateway(crm_url: &str) -> TestGateway {
    TestGateway::builder()
        .upstream(crm_url)
        .admin()
        .start()
        .await
}

async fn create(gw: &TestGateway, key: &str, body: &str) -> Got {
    send(
        "POST",
        &gw.url(CONTACTS),
        &[("x-api-key", key), ("content-type", "application/json")],
        body.as_bytes(),
    )
    .await
}

async fn admin_json(gw: &TestGateway, method: &str, path: &str, body: &str) -> Got {
    admin(gw, method, path, "application/json", body).await
}

/// The contact as the CRM stores it (no gateway).
fn stored(crm: &Crm, id: &str) -> Value {
    let r = crm.answer(&Method::GET, &format!("{CONTACTS}/{id}"), None, b"");
    let body =
        futures_util::FutureExt::now_or_never(http_body_util::BodyExt::collect(r.into_body()))
            .unwrap()
            .unwrap()
            .to_bytes();
    serde_json::from_slice(&body).unwrap()
}

/// Writes properties straight into the CRM's copy (no gateway), as someone
/// with access to the CRM could.
fn tamper(crm: &Crm, id: &str, props: Value) {
    let body = json!({ "properties": props }).to_string();
    let r = crm.answer(
        &Method::PATCH,
        &format!("{CONTACTS}/{id}"),
        None,
        body.as_bytes(),
    );
    assert_eq!(r.status(), 200);
}

fn assert_no_secrets(bytes: &[u8]) {
    let text = String::from_utf8_lossy(bytes);
    for s in SECRETS {
        assert!(!text.contains(s), "the CRM holds `{s}` in clear: {text}");
    }
}

#[tokio::test]
async fn the_crm_stores_tokens_and_each_purpose_reads_what_it_may() {
    let (crm, url) = sample_crm().await;
    let gw = gateway(&url).await;
    let got = create(&gw, SUPPORT, &new_contact(SECRETS[0])).await;
    assert_eq!(got.status, 201, "{}", got.text());
    let view = got.json();
    let id = view["id"].as_str().unwrap().to_owned();
    // Support gets its own record back as its rule shows it.
    assert_eq!(view["properties"]["email"], SECRETS[0]);
    assert_eq!(view["properties"]["phone"], "***0958");
    assert_eq!(view["properties"]["notes"], "Prefers calls after 6pm");

    // What the CRM received and stores: tokens, names in clear.
    for body in crm.received() {
        assert_no_secrets(&body);
    }
    assert_no_secrets(&crm.stored());
    let raw = stored(&crm, &id);
    let p = &raw["properties"];
    assert!(p["email"].as_str().unwrap().starts_with("ctd1."), "{raw}");
    for f in ["phone", "address", "zip", "date_of_birth", "notes"] {
        assert!(p[f].as_str().unwrap().starts_with("ctk1."), "{f}: {raw}");
    }
    assert_eq!(
        (p["firstname"].as_str(), p["city"].as_str()),
        (Some("Nia"), Some("London"))
    );

    // Read back: support in clear (phone masked by its rule).
    let got = get(&gw.url(&format!("{CONTACTS}/{id}")), SUPPORT).await;
    assert_eq!(got.status, 200, "{}", got.text());
    let p = &got.json()["properties"];
    assert_eq!(p["email"], SECRETS[0]);
    assert_eq!(p["phone"], "***0958");
    assert_eq!(p["address"], "10 Downing Street");
    assert_eq!(p["zip"], "SW1A 2AA");
    assert_eq!(p["date_of_birth"], "1990-04-01");

    // Marketing: nothing without the customer's consent; with it, the
    // e-mail address only.
    let one = gw.url(&format!("{CONTACTS}/{id}"));
    let got = get(&one, MARKETING).await;
    assert_eq!(
        (got.status, got.problem().as_str()),
        (403, "consent-required")
    );
    let grant = json!({"subject": id, "purpose": "marketing", "status": "granted"}).to_string();
    assert_eq!(
        admin_json(&gw, "POST", "/v1/consents", &grant).await.status,
        200
    );
    let got = get(&one, MARKETING).await;
    assert_eq!(got.status, 200, "{}", got.text());
    let p = got.json()["properties"].clone();
    assert_eq!(p["email"], SECRETS[0]);
    for f in [
        "phone",
        "address",
        "zip",
        "date_of_birth",
        "notes",
        "firstname",
    ] {
        assert!(p.get(f).is_none(), "{f}: {p}");
    }
    assert!(!got.text().contains("ctk1."), "no token leaks as a value");
}

#[tokio::test]
async fn an_update_stores_tokens_under_the_customers_own_key() {
    let (crm, url) = sample_crm().await;
    let gw = gateway(&url).await;
    let got = create(&gw, SUPPORT, &new_contact("u@example.org")).await;
    let id = got.json()["id"].as_str().unwrap().to_owned();
    let one = gw.url(&format!("{CONTACTS}/{id}"));
    let got = send(
        "PATCH",
        &one,
        &[("x-api-key", SUPPORT), ("content-type", "application/json")],
        br#"{"properties":{"phone":"+1 555 010 4242"}}"#,
    )
    .await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(got.json()["properties"]["phone"], "***4242");
    assert!(!String::from_utf8_lossy(&crm.stored()).contains("555 010"));
    // An invented contact (never written through the gateway) gets its
    // first key on its first encrypted write.
    let got = send(
        "PATCH",
        &gw.url(&format!("{CONTACTS}/7")),
        &[("x-api-key", SUPPORT), ("content-type", "application/json")],
        br#"{"properties":{"notes":"moved to Lyon"}}"#,
    )
    .await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(got.json()["properties"]["notes"], "moved to Lyon");
    assert!(
        stored(&crm, "7")["properties"]["notes"]
            .as_str()
            .unwrap()
            .starts_with("ctk1.")
    );
}

#[tokio::test]
async fn tokens_moved_or_altered_never_pass_as_values() {
    let (crm, url) = sample_crm().await;
    let gw = gateway(&url).await;
    let a = create(&gw, SUPPORT, &new_contact("a@example.org"))
        .await
        .json();
    let b = create(&gw, SUPPORT, &new_contact("b@example.org"))
        .await
        .json();
    let (a, b) = (
        a["id"].as_str().unwrap().to_owned(),
        b["id"].as_str().unwrap().to_owned(),
    );
    let ra = stored(&crm, &a)["properties"].clone();
    let rb = stored(&crm, &b)["properties"].clone();
    // Another customer's token, another field's token, and a flipped bit.
    tamper(&crm, &b, json!({ "phone": ra["phone"] }));
    tamper(&crm, &a, json!({ "address": ra["zip"] }));
    let dob = ra["date_of_birth"].as_str().unwrap();
    let mut flipped = dob.as_bytes().to_vec();
    let last = flipped.len() - 3;
    flipped[last] = if flipped[last] == b'A' { b'B' } else { b'A' };
    tamper(
        &crm,
        &a,
        json!({ "date_of_birth": String::from_utf8(flipped).unwrap(), "mobilephone": "ctk1.not-a-token" }),
    );
    let got = get(&gw.url(&format!("{CONTACTS}/{b}")), SUPPORT).await;
    assert_eq!(got.status, 200, "{}", got.text());
    let p = got.json()["properties"].clone();
    assert_eq!(p["phone"], "[REDACTED]", "a's phone token in b's record");
    assert_eq!(p["zip"], "SW1A 2AA", "b's own tokens still open");
    assert_ne!(rb["phone"], ra["phone"]);
    let got = get(&gw.url(&format!("{CONTACTS}/{a}")), SUPPORT).await;
    let p = got.json()["properties"].clone();
    assert_eq!(
        p["address"], "[REDACTED]",
        "a zip token in the address field"
    );
    assert_eq!(p["date_of_birth"], "[REDACTED]", "an altered token");
    assert_eq!(p["mobilephone"], "[REDACTED]", "a malformed token");
    assert_eq!(p["phone"], "***0958");
    assert!(!got.text().contains("ctk1."), "{}", got.text());
    let status = admin_json(&gw, "GET", "/v1/keys", "").await.json();
    assert_eq!(status["undecryptable_tokens_total"], 4, "{status}");
}

#[tokio::test]
async fn rotation_keeps_tokens_readable_and_retires_the_old_version() {
    let (crm, url) = sample_crm().await;
    let gw = gateway(&url).await;
    let a = create(&gw, SUPPORT, &new_contact("r@example.org"))
        .await
        .json();
    let a = a["id"].as_str().unwrap().to_owned();
    let before = stored(&crm, &a);
    let file = gw.dir().join("master.key");
    let ring = consentry::keys::master::MasterKeys::load_file(&file).unwrap();
    let two = ring.with_new_version().unwrap();
    two.replace_file(&file).unwrap();
    let got = admin_json(&gw, "POST", "/v1/keys/rotate", "").await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(got.json()["current"], 2);
    assert!(
        got.json()["rewrapped"].as_u64().unwrap() >= 2,
        "{}",
        got.text()
    );
    let status = admin_json(&gw, "GET", "/v1/keys", "").await.json();
    assert_eq!(
        status["data_keys_by_master_version"].get("v1"),
        None,
        "{status}"
    );
    // Nothing in the CRM changed, and it still reads.
    assert_eq!(stored(&crm, &a), before);
    let one = gw.url(&format!("{CONTACTS}/{a}"));
    assert_eq!(
        get(&one, SUPPORT).await.json()["properties"]["zip"],
        "SW1A 2AA"
    );
    // Retire v1: the file without it, adopted.
    two.without_version(1).unwrap().replace_file(&file).unwrap();
    let got = admin_json(&gw, "POST", "/v1/keys/rotate", "").await;
    assert_eq!(got.json()["retired"], json!([1]), "{}", got.text());
    assert_eq!(
        get(&one, SUPPORT).await.json()["properties"]["zip"],
        "SW1A 2AA"
    );
    let b = create(&gw, SUPPORT, &new_contact("r2@example.org")).await;
    assert_eq!(b.json()["properties"]["zip"], "SW1A 2AA");
    // A key file whose versions differ from the ones in use is refused.
    consentry::keys::master::MasterKeys::generate()
        .unwrap()
        .with_new_version()
        .unwrap()
        .with_new_version()
        .unwrap()
        .replace_file(&file)
        .unwrap();
    let got = admin_json(&gw, "POST", "/v1/keys/rotate", "").await;
    assert_eq!(
        (got.status, got.problem().as_str()),
        (409, "key-ring-refused")
    );
    assert!(!got.text().contains("consentry-master-key"));
}

#[tokio::test]
async fn a_shredded_customer_stays_unreadable_after_a_restart() {
    let (crm, url) = sample_crm().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("consentry.db");
    let ring = write_master_key(dir.path());
    let start = || {
        TestGateway::builder()
            .upstream(&url)
            .admin()
            .store_file(&file)
            .master_key(&ring)
            .start()
    };
    let gw = start().await;
    let a = create(&gw, SUPPORT, &new_contact("s@example.org"))
        .await
        .json();
    let b = create(&gw, SUPPORT, &new_contact("t@example.org"))
        .await
        .json();
    let (a, b) = (
        a["id"].as_str().unwrap().to_owned(),
        b["id"].as_str().unwrap().to_owned(),
    );
    let got = admin_json(&gw, "DELETE", &format!("/v1/subjects/{a}/key"), "").await;
    assert_eq!(got.json()["destroyed"], true, "{}", got.text());
    let check = |gw: &TestGateway| {
        let (ua, ub) = (
            gw.url(&format!("{CONTACTS}/{a}")),
            gw.url(&format!("{CONTACTS}/{b}")),
        );
        async move {
            let got = get(&ua, SUPPORT).await;
            assert_eq!(got.status, 200, "{}", got.text());
            let p = got.json()["properties"].clone();
            for f in ["email", "phone", "address", "zip", "date_of_birth", "notes"] {
                assert_eq!(p[f], "[REDACTED]", "{f}: {p}");
            }
            assert_eq!(p["firstname"], "Nia", "clear fields are not encrypted");
            let got = get(&ub, SUPPORT).await;
            assert_eq!(
                got.json()["properties"]["zip"],
                "SW1A 2AA",
                "others unaffected"
            );
        }
    };
    check(&gw).await;
    // No new key comes back for an erased customer.
    let got = send(
        "PATCH",
        &gw.url(&format!("{CONTACTS}/{a}")),
        &[("x-api-key", SUPPORT), ("content-type", "application/json")],
        br#"{"properties":{"phone":"+1 555 010 9999"}}"#,
    )
    .await;
    assert_eq!(
        (got.status, got.problem().as_str()),
        (409, "subject-erased")
    );
    gw.stop().await;
    let gw = start().await;
    check(&gw).await;
    drop(crm);
}

#[tokio::test]
async fn equality_searches_on_encrypted_fields_find_the_record() {
    let (crm, url) = sample_crm().await;
    let gw = gateway(&url).await;
    let email = "search.me+crm@example.org";
    let a = create(&gw, SUPPORT, &new_contact(email)).await.json();
    let id = a["id"].as_str().unwrap().to_owned();
    // Query parameter (percent-encoded, as a client sends it).
    let got = get(
        &gw.url(&format!("{CONTACTS}?email=search.me%2Bcrm%40example.org")),
        SUPPORT,
    )
    .await;
    assert_eq!(got.status, 200, "{}", got.text());
    let results = got.json()["results"].clone();
    assert_eq!(results.as_array().unwrap().len(), 1, "{results}");
    assert_eq!(results[0]["id"], id.as_str());
    assert_eq!(results[0]["properties"]["email"], email);
    // HubSpot's search body.
    let body = json!({"filterGroups": [{"filters": [
        {"propertyName": "email", "operator": "EQ", "value": email}
    ]}], "limit": 10})
    .to_string();
    let search = |body: String| {
        let url = gw.url(SEARCH);
        async move {
            send(
                "POST",
                &url,
                &[("x-api-key", SUPPORT), ("content-type", "application/json")],
                body.as_bytes(),
            )
            .await
        }
    };
    let got = search(body).await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(got.json()["total"], 1);
    assert_eq!(got.json()["results"][0]["properties"]["email"], email);
    for body in crm.received() {
        assert!(!String::from_utf8_lossy(&body).contains("search.me"));
    }
    // An operator that cannot work on tokens is refused, with the reason.
    let got = search(
        json!({"filterGroups": [{"filters": [
            {"propertyName": "email", "operator": "CONTAINS_TOKEN", "value": "search"}
        ]}]})
        .to_string(),
    )
    .await;
    assert_eq!(
        (got.status, got.problem().as_str()),
        (400, "search-unsupported")
    );
    assert!(got.json()["detail"].as_str().unwrap().contains("EQ"));
}

#[tokio::test]
async fn a_create_answered_without_an_id_is_refused() {
    let gw = TestGateway::start().await;
    gw.crm
        .on(CONTACTS, Reply::json(r#"{"status":"created"}"#).status(201));
    let got = create(&gw, SUPPORT, &new_contact("x@example.org")).await;
    assert_eq!((got.status, got.problem().as_str()), (502, "key-binding"));
    assert_no_secrets(&gw.crm.last().body);
    // No body at all: no id either.
    gw.crm.on(CONTACTS, Reply::json("").status(204));
    let got = create(&gw, SUPPORT, &new_contact("y@example.org")).await;
    assert_eq!((got.status, got.problem().as_str()), (502, "key-binding"));
    // A body with no record in it: no id either.
    for body in ["[]", "42"] {
        gw.crm.on(CONTACTS, Reply::json(body).status(201));
        let got = create(&gw, SUPPORT, &new_contact("w@example.org")).await;
        assert_eq!(
            (got.status, got.problem().as_str()),
            (502, "key-binding"),
            "{body}"
        );
    }
    // A write needs no key when it carries nothing encrypted.
    gw.crm.on(CONTACTS, Reply::json("").status(204));
    let got = create(&gw, SUPPORT, r#"{"properties":{"firstname":"Ann"}}"#).await;
    assert_eq!(got.status, 204, "{}", got.text());
}

#[tokio::test]
async fn a_create_whose_id_already_has_a_key_is_refused_and_recorded_so() {
    // The key binding is stored while the audit event is: when the binding
    // fails after the event, a second event with the same request id says
    // the answer did not leave (when it failed before, one refused event).
    let gw = TestGateway::start().await;
    let reply = || Reply::json(r#"{"id":"901","properties":{}}"#).status(201);
    gw.crm.on(CONTACTS, reply());
    let first = create(&gw, SUPPORT, &new_contact("a@example.org")).await;
    assert_eq!(first.status, 201, "{}", first.text());
    let stored_first = gw.crm.last().body;
    gw.crm.on(CONTACTS, reply());
    let second = create(&gw, SUPPORT, &new_contact("b@example.org")).await;
    assert_eq!(
        (second.status, second.problem().as_str()),
        (502, "key-binding")
    );
    let id = second.headers["x-request-id"].to_str().unwrap().to_owned();
    let conn = rusqlite::Connection::open(gw.dir().join("audit.db")).unwrap();
    let mut st = conn
        .prepare("SELECT body, entries FROM audit_events ORDER BY seq")
        .unwrap();
    let mine: Vec<(serde_json::Value, Vec<String>)> = st
        .query_map([], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, Vec<u8>>(1)?))
        })
        .unwrap()
        .map(|row| {
            let (body, blob) = row.unwrap();
            let records = consentry::audit::entries::open(&blob)
                .unwrap()
                .into_iter()
                .filter_map(|s| s.entry.map(|e| e.record))
                .collect();
            (
                serde_json::from_str::<serde_json::Value>(&body).unwrap(),
                records,
            )
        })
        .filter(|(e, _)| e["request_id"] == id.as_str())
        .collect();
    let (last, records) = mine.last().unwrap();
    assert_eq!(
        (&last["decision"], &last["problem"], &last["status"]),
        (&"refused".into(), &"key-binding".into(), &502.into())
    );
    assert_eq!(records, &["blocked"], "the customer is named as withheld");
    assert!(last.get("categories").is_none());
    // Before it, at most the event of the answer as it would have left.
    assert!(mine.len() <= 2, "{mine:?}");
    if mine.len() == 2 {
        assert_eq!(mine[0].0["decision"], "served");
    }
    // The first customer's key is untouched: their record still opens.
    let mut record: serde_json::Value = serde_json::from_slice(&stored_first).unwrap();
    record["id"] = "901".into();
    gw.crm.on(
        "/crm/v3/objects/contacts/901",
        Reply::json(record.to_string()),
    );
    let read = send(
        "GET",
        &gw.url("/crm/v3/objects/contacts/901"),
        &[("x-api-key", SUPPORT)],
        b"",
    )
    .await;
    assert_eq!(read.status, 200, "{}", read.text());
    assert_eq!(read.json()["properties"]["email"], "a@example.org");
}

#[tokio::test]
async fn tokens_and_full_text_searches_are_refused_as_input() {
    let (crm, url) = sample_crm().await;
    let gw = gateway(&url).await;
    let a = create(&gw, SUPPORT, &new_contact("z@example.org"))
        .await
        .json();
    let id = a["id"].as_str().unwrap().to_owned();
    let token = stored(&crm, &id)["properties"]["phone"].clone();
    // A token read with `token:` and written back would be sealed again.
    let body = json!({"properties": {"phone": token}}).to_string();
    let got = send(
        "PATCH",
        &gw.url(&format!("{CONTACTS}/{id}")),
        &[("x-api-key", SUPPORT), ("content-type", "application/json")],
        body.as_bytes(),
    )
    .await;
    assert_eq!(
        (got.status, got.problem().as_str()),
        (400, "token-as-value")
    );
    let n = crm.received().len();
    let got = send(
        "POST",
        &gw.url(SEARCH),
        &[("x-api-key", SUPPORT), ("content-type", "application/json")],
        br#"{"query":"z@example.org"}"#,
    )
    .await;
    assert_eq!(
        (got.status, got.problem().as_str()),
        (400, "search-unsupported")
    );
    assert_eq!(crm.received().len(), n, "nothing reached the CRM");
}

#[tokio::test]
async fn query_parameters_are_rewritten_whatever_their_case_and_the_rest_kept() {
    let gw = TestGateway::start().await;
    gw.crm.on(CONTACTS, Reply::json(r#"{"results":[]}"#));
    let got = get(
        &gw.url(&format!(
            "{CONTACTS}?limit=3&Email=z%40example.org&after=x%2By"
        )),
        SUPPORT,
    )
    .await;
    assert_eq!(got.status, 200, "{}", got.text());
    let q = gw.crm.last().query.unwrap();
    let parts: Vec<&str> = q.split('&').collect();
    assert_eq!(parts[0], "limit=3");
    assert!(parts[1].starts_with("Email=ctd1."), "{q}");
    assert_eq!(parts[2], "after=x%2By", "other parameters byte for byte");
    assert!(!q.contains("example.org"));
}

#[test]
fn the_cli_rotates_retires_and_shreds_with_the_gateway_stopped() {
    use consentry::keys::service::{Keys, subject_owner};
    use consentry::keys::store::KeyStore;
    use consentry::storage::sqlite::SqliteStore;

    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("policies")).unwrap();
    std::fs::write(dir.path().join("policies/p.yaml"), example_policy()).unwrap();
    write_master_key(dir.path());
    let cfg = dir.path().join("consentry.yaml");
    std::fs::write(
        &cfg,
        "listen: 127.0.0.1:0\nupstream: { url: http://127.0.0.1:9 }\npolicies: policies\n\
         keys: { hash_key: test-hash-key-0123456789abcdef, master_key_file: master.key }\n\
         storage: { sqlite: data/c.db }\n\
         clients:\n  - { name: m, api_key_sha256: 0000000000000000000000000000000000000000000000000000000000000000, purposes: [marketing] }\n",
    )
    .unwrap();
    let db = dir.path().join("data/c.db");
    let file = dir.path().join("master.key");
    let ring = || consentry::keys::master::MasterKeys::load_file(&file).unwrap();
    // Two customers with data keys, made as the gateway makes them.
    {
        let store: Arc<dyn KeyStore> = Arc::new(SqliteStore::open(&db).unwrap());
        let keys = Keys::new(ring(), store, Arc::new(consentry::clock::SystemClock));
        keys.for_write(&subject_owner("7")).unwrap();
        keys.for_write(&subject_owner("8")).unwrap();
    }
    let cli = |args: &[&str]| {
        let ran = run_cli(&cfg, args);
        (ran.ok, ran.text())
    };
    let (ok, text) = cli(&["keys", "retire", "--version", "1"]);
    assert!(
        !ok && text.contains("v1 is the current master key"),
        "{text}"
    );
    let (ok, text) = cli(&["keys", "rotate"]);
    assert!(
        ok && text.contains("re-wrapped 2 data key(s) under v2"),
        "{text}"
    );
    assert_eq!(ring().versions().collect::<Vec<_>>(), [1, 2]);
    let (ok, text) = cli(&["keys", "retire", "--version", "1"]);
    assert!(ok && text.contains("retired master key v1"), "{text}");
    assert_eq!(ring().versions().collect::<Vec<_>>(), [2]);
    let (ok, text) = cli(&["keys", "shred", "7"]);
    assert!(
        ok && text.contains("destroyed the data key of subject 7"),
        "{text}"
    );
    // After all that, with only v2 left: 8's key opens, 7's is gone for good.
    let store: Arc<dyn KeyStore> = Arc::new(SqliteStore::open(&db).unwrap());
    let keys = Keys::new(ring(), store, Arc::new(consentry::clock::SystemClock));
    let held = keys.subject_keys(&["7".into(), "8".into()]).unwrap();
    assert!(matches!(
        held["7"],
        consentry::keys::service::Held::Shredded
    ));
    assert!(matches!(held["8"], consentry::keys::service::Held::Live(_)));
    assert!(!text.contains("consentry-master-key"));
    // With the gateway stopped, the CLI records its acts in the trail itself.
    let (ok, text) = cli(&["audit", "query", "--kind", "keys", "--format", "jsonl"]);
    assert!(ok, "{text}");
    let acts: Vec<(String, String)> = text
        .lines()
        .map(|l| {
            let e: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                e["client"].as_str().unwrap().into(),
                e["decision"].as_str().unwrap().into(),
            )
        })
        .collect();
    let want = ["rotated", "retired", "shredded"].map(|d| ("cli".to_string(), d.to_string()));
    assert_eq!(acts, want);
    let (ok, text) = cli(&["audit", "verify"]);
    assert!(ok, "{text}");
}
