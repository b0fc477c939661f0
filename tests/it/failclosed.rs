//! Whatever the CRM sends that the gateway cannot inspect becomes a 502
//! problem+json with none of the CRM's bytes in it.

use std::io::Write;
use std::time::Duration;

use bytes::Bytes;

use crate::harness::*;

const ONE: &str = "/crm/v3/objects/contacts/7";

/// A contact whose e-mail marks "leaked if you can read this".
const SECRET: &str = "leaked.if.seen@secret.example";

fn body() -> String {
    contact(7).replace(
        &consentry::demo::data::contact(7)["properties"]["email"]
            .as_str()
            .unwrap()
            .to_owned(),
        SECRET,
    )
}

async fn refused(gw: &TestGateway, reply: Reply, problem: &str) {
    gw.crm.on(ONE, reply);
    let got = get(&gw.url(ONE), MARKETING).await;
    assert_eq!(got.status, 502, "{problem}: {}", got.text());
    assert_eq!(got.problem(), problem);
    assert!(
        !got.text().contains("secret.example"),
        "{problem}: CRM bytes leaked"
    );
}

#[tokio::test]
async fn every_encoding_is_decoded_and_inspected() {
    let gw = TestGateway::start().await;
    let plain = body();
    let expected = {
        gw.crm.on(ONE, Reply::json(plain.clone()));
        get(&gw.url(ONE), SUPPORT).await.body
    };
    let mut multi = gzip(&plain.as_bytes()[..100]);
    multi.extend(gzip(&plain.as_bytes()[100..]));
    let zlib = {
        let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(plain.as_bytes()).unwrap();
        e.finish().unwrap()
    };
    let br = {
        let mut out = Vec::new();
        {
            let mut w = brotli::CompressorWriter::new(&mut out, 4096, 5, 22);
            w.write_all(plain.as_bytes()).unwrap();
        }
        out
    };
    let zst = zstd::encode_all(plain.as_bytes(), 3).unwrap();
    for (enc, data) in [
        ("gzip", gzip(plain.as_bytes())),
        ("gzip", multi),
        ("deflate", zlib),
        ("br", br),
        ("zstd", zst),
    ] {
        // Split the compressed body in small chunks, as a network would.
        let chunks: Vec<Bytes> = data.chunks(97).map(Bytes::copy_from_slice).collect();
        gw.crm.on(
            ONE,
            Reply::json("")
                .chunks(chunks)
                .header("content-encoding", enc),
        );
        let got = get(&gw.url(ONE), SUPPORT).await;
        assert_eq!(got.status, 200, "{enc}: {}", got.text());
        assert_eq!(got.body, expected, "{enc}");
        assert!(
            !got.headers.contains_key("content-encoding"),
            "{enc}: we answer in identity"
        );
        assert_eq!(
            gw.crm.last().headers["accept-encoding"],
            "gzip, br, zstd, deflate"
        );
    }
}

#[tokio::test]
async fn what_cannot_be_inspected_fails_closed() {
    let gw = TestGateway::start().await;
    let b = body();
    refused(
        &gw,
        Reply::json(b.clone()).header("content-encoding", "compress"),
        "unsupported-encoding",
    )
    .await;
    refused(
        &gw,
        Reply::json(b.clone()).header("content-encoding", "gzip, br"),
        "unsupported-encoding",
    )
    .await;
    refused(
        &gw,
        Reply::json(b.clone()).header("content-encoding", "gzip"),
        "decompression-failed",
    )
    .await;
    let truncated = gzip(b.as_bytes());
    let truncated = truncated[..truncated.len() - 4].to_vec();
    refused(
        &gw,
        Reply::json(truncated).header("content-encoding", "gzip"),
        "decompression-failed",
    )
    .await;
    refused(
        &gw,
        Reply::json(b.clone()).header("content-type", "text/html"),
        "not-json",
    )
    .await;
    refused(
        &gw,
        Reply::json(b.clone()).without_header("content-type"),
        "not-json",
    )
    .await;
    refused(
        &gw,
        Reply::json(b.clone()).header("content-type", "application/json; charset=iso-8859-1"),
        "not-json",
    )
    .await;
    for malformed in [
        b.replace("\"archived\":false", "\"archived\":False"),
        b[..b.len() - 5].to_owned(),
        format!("{b} trailing"),
        b.replace(&format!("\"{SECRET}\""), &format!("'{SECRET}'")),
        b.replace("\"archived\":false}", "\"archived\":false,}"),
        format!("\u{feff}{b}"),
        b.replace(SECRET, "bad\\x escape"),
        b.replace("\"archived\":false", "\"archived\":NaN"),
        b.replace("\"archived\":false", "\"archived\":\"\\ud800\""),
    ] {
        refused(&gw, Reply::json(malformed), "malformed-json").await;
    }
    refused(
        &gw,
        Reply::json(b.clone())
            .status(206)
            .header("content-range", "bytes 0-10/100"),
        "partial-content",
    )
    .await;
    refused(&gw, Reply::json("").status(304), "unexpected-not-modified").await;
}

#[tokio::test]
async fn bodies_over_the_limits_fail_closed() {
    let gw = TestGateway::builder()
        .config("limits: { response_body: 64KiB, decompressed_body: 128KiB }")
        .start()
        .await;
    let mut big = String::from(r#"{"id":"7","properties":{"email":""#);
    big.push_str(SECRET);
    big.push_str(r#"","notes":""#);
    big.push_str(&"x".repeat(100 << 10));
    big.push_str(r#""}}"#);
    refused(&gw, Reply::json(big.clone()), "response-too-large").await;
    // A compression bomb: small on the wire, huge decoded.
    let mut bomb = String::from(r#"{"id":"7","notes":""#);
    bomb.push_str(&" ".repeat(4 << 20));
    bomb.push_str(r#""}"#);
    let z = gzip(bomb.as_bytes());
    assert!(z.len() < 64 << 10);
    refused(
        &gw,
        Reply::json(z).header("content-encoding", "gzip"),
        "response-too-large",
    )
    .await;
}

#[tokio::test]
async fn duplicate_and_escaped_keys_are_all_rewritten() {
    let gw = TestGateway::builder().grant("7", "marketing").start().await;
    let b = format!(
        r#"{{"id":"7","properties":{{"phone":"+1 555 234 5678","Phone":"+1 555 234 5679","ph\u006fne":"+1 555 234 5670","PHONE":"+1 555 234 5671","email":"{SECRET}"}}}}"#
    );
    gw.crm.on(ONE, Reply::json(b));
    let got = get(&gw.url(ONE), SUPPORT).await;
    assert_eq!(
        got.text(),
        format!(
            r#"{{"id":"7","properties":{{"phone":"***5678","Phone":"***5679","ph\u006fne":"***5670","PHONE":"***5671","email":"{SECRET}"}}}}"#
        )
    );
    let got = get(&gw.url(ONE), MARKETING).await;
    assert_eq!(
        got.text(),
        format!(r#"{{"id":"7","properties":{{"email":"{SECRET}"}}}}"#)
    );
}

#[tokio::test]
async fn slow_upstream_bodies_time_out() {
    let gw = TestGateway::start().await; // body_idle: 2s in the harness
    let b = body();
    let (a, rest) = b.split_at(20);
    let reply = Reply {
        delay: Some(Duration::from_secs(4)),
        ..Reply::json("").chunks(vec![a.to_owned().into(), rest.to_owned().into()])
    };
    refused_with(&gw, reply, 504, "upstream-timeout").await;
}

async fn refused_with(gw: &TestGateway, reply: Reply, status: u16, problem: &str) {
    gw.crm.on(ONE, reply);
    let got = get(&gw.url(ONE), MARKETING).await;
    assert_eq!(
        (got.status, got.problem().as_str()),
        (status, problem),
        "{}",
        got.text()
    );
}

#[tokio::test]
async fn an_upstream_reset_mid_body_is_refused() {
    let gw = TestGateway::start().await;
    let b = body();
    let (a, _) = b.split_at(100);
    let reply = Reply {
        break_after: true,
        ..Reply::json("").chunks(vec![a.to_owned().into()])
    };
    refused_with(&gw, reply, 502, "upstream-failed").await;
}

#[tokio::test]
async fn empty_bodies_pass_without_a_content_type() {
    let gw = TestGateway::start().await;
    gw.crm.on(
        ONE,
        Reply::json("").without_header("content-type").status(404),
    );
    let got = get(&gw.url(ONE), SUPPORT).await;
    assert_eq!(got.status, 404);
    assert!(got.body.is_empty());
    gw.crm.on(ONE, Reply::json("").status(204));
    assert_eq!(get(&gw.url(ONE), SUPPORT).await.status, 204);
}

#[tokio::test]
async fn ambiguous_content_types_and_empty_json_bodies() {
    let gw = TestGateway::start().await;
    refused(
        &gw,
        Reply::json(body())
            .header("content-type", "application/json")
            .chunks(vec![body().into()])
            .with_second_content_type(),
        "not-json",
    )
    .await;
    gw.crm
        .on(ONE, Reply::json("").header("content-length", "0"));
    let got = get(&gw.url(ONE), SUPPORT).await;
    assert_eq!(
        got.status,
        200,
        "an empty body carries nothing to inspect: {}",
        got.text()
    );
    assert!(got.body.is_empty());
}

#[tokio::test]
async fn free_text_inside_a_list_is_scanned_too() {
    let gw = TestGateway::start().await;
    gw.crm.on(
        ONE,
        Reply::json(r#"{"id":"7","properties":{"notes":["card 4111 1111 1111 1111", {"more": "call +1 555 234 5678"}]}}"#),
    );
    let got = get(&gw.url(ONE), SUPPORT).await;
    assert_eq!(
        got.text(),
        r#"{"id":"7","properties":{"notes":["card [CARD]", {"more": "call ***5678"}]}}"#
    );
}
