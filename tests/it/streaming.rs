//! Large lists stream record by record; memory is bounded by the largest
//! record; a problem after the first byte cuts the connection.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::BodyExt;
use tokio::sync::Notify;

use crate::harness::*;

const LIST: &str = "/crm/v3/objects/contacts";

fn records(from: u64, n: u64) -> String {
    (from..from + n).map(contact).collect::<Vec<_>>().join(",")
}

async fn open(url: &str, key: &str) -> http::Response<hyper::body::Incoming> {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Full<Bytes>>();
    let req = http::Request::get(url)
        .header("x-api-key", key)
        .body(Default::default())
        .unwrap();
    client.request(req).await.unwrap()
}

#[tokio::test]
async fn a_large_list_reaches_the_client_before_the_crm_has_finished() {
    let gw = TestGateway::builder()
        .grant_all(60, "marketing")
        .config("limits: { stream_after: 16KiB }")
        .start()
        .await;
    let hold = Arc::new(Notify::new());
    let first = format!(r#"{{"results":[{}"#, records(1, 30));
    let rest = format!(
        r#",{}],"paging":{{"next":{{"after":"60"}}}}}}"#,
        records(31, 30)
    );
    gw.crm.on(
        LIST,
        Reply {
            hold: Some(Arc::clone(&hold)),
            ..Reply::json("").chunks(vec![first.into(), rest.into()])
        },
    );
    let resp = open(&gw.url(LIST), MARKETING).await;
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers().get("content-length").is_none(),
        "streamed, so no length"
    );
    let mut body = resp.into_body();
    // The CRM is still holding the second half: this must arrive anyway.
    let frame = tokio::time::timeout(std::time::Duration::from_secs(5), body.frame())
        .await
        .expect("the first records arrive while the CRM is still sending")
        .unwrap()
        .unwrap();
    let head = frame.into_data().unwrap();
    assert!(head.starts_with(br#"{"results":[{"id":"1","properties":{"email":"#));
    assert!(
        !String::from_utf8_lossy(&head).contains("\"phone\""),
        "streamed records are redacted"
    );
    hold.notify_one();
    let mut all = head.to_vec();
    all.extend_from_slice(&body.collect().await.unwrap().to_bytes());
    let v: serde_json::Value = serde_json::from_slice(&all).unwrap();
    assert_eq!(v["results"].as_array().unwrap().len(), 60);
    assert_eq!(v["paging"]["next"]["after"], "60");
    assert!(
        v["results"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["properties"].get("lastname").is_none())
    );
}

#[tokio::test]
async fn memory_is_bounded_by_the_largest_record_not_the_body() {
    // Each record is ~2 KB; the record buffer is 32 KiB; the body is ~10 MB.
    let gw = TestGateway::builder()
        .config("limits: { record: 32KiB }")
        .start()
        .await;
    let mut chunks: Vec<Bytes> = vec![Bytes::from_static(b"{\"results\":[")];
    for i in 0..50u64 {
        let sep = if i == 0 { "" } else { "," };
        chunks.push(format!("{sep}{}", records(i * 100 + 1, 100)).into());
    }
    chunks.push(Bytes::from_static(b"]}"));
    let total: usize = chunks.iter().map(Bytes::len).sum();
    assert!(total > 8 << 20, "{total}");
    gw.crm.on(LIST, Reply::json("").chunks(chunks));
    let got = get(&gw.url(LIST), SUPPORT).await;
    assert_eq!(
        got.status,
        200,
        "{}",
        &got.text()[..got.text().len().min(300)]
    );
    let v = got.json();
    assert_eq!(v["results"].as_array().unwrap().len(), 5000);
    // One record larger than the buffer is refused instead of buffered.
    let huge = format!(
        r#"{{"results":[{{"id":"1","properties":{{"notes":"{}"}}}}]}}"#,
        "x".repeat(64 << 10)
    );
    gw.crm.on(LIST, Reply::json(huge));
    let got = get(&gw.url(LIST), SUPPORT).await;
    assert_eq!(
        (got.status, got.problem().as_str()),
        (502, "response-too-large")
    );
}

#[tokio::test]
async fn a_problem_after_the_first_byte_cuts_the_connection() {
    let gw = TestGateway::builder()
        .grant_all(21, "marketing")
        .config("limits: { stream_after: 8KiB }")
        .start()
        .await;
    let good = format!(r#"{{"results":[{}"#, records(1, 20));
    let bad = r#",{"id":"21","properties":{"email":"secret@leak.example",}}]}"#;
    // The pause lets the good records (after their consent lookup) leave
    // before the bad chunk arrives.
    gw.crm.on(
        LIST,
        Reply {
            delay: Some(std::time::Duration::from_millis(200)),
            ..Reply::json("").chunks(vec![good.into(), bad.into()])
        },
    );
    let resp = open(&gw.url(LIST), MARKETING).await;
    assert_eq!(resp.status(), 200, "the head was sent before the problem");
    let mut got = Vec::new();
    let mut body = resp.into_body();
    let mut failed = false;
    while let Some(f) = body.frame().await {
        match f {
            Ok(f) => got.extend_from_slice(&f.into_data().unwrap_or_default()),
            Err(_) => {
                failed = true;
                break;
            }
        }
    }
    assert!(
        failed,
        "the client must see an incomplete body, not a clean end"
    );
    assert!(serde_json::from_slice::<serde_json::Value>(&got).is_err());
    assert!(!String::from_utf8_lossy(&got).contains("leak.example"));
}
