//! The data path through a real listener: identity, purposes, routing, header
//! hygiene and the views each purpose gets.

use crate::harness::*;

const ONE: &str = "/crm/v3/objects/contacts/7";

#[tokio::test]
async fn support_and_marketing_see_the_same_contact_differently() {
    let gw = TestGateway::builder().grant("7", "marketing").start().await;
    let original = contact(7);
    gw.crm.on(ONE, Reply::json(original.clone()));
    let orig: serde_json::Value = serde_json::from_str(&original).unwrap();

    let support = get(&gw.url(ONE), SUPPORT).await;
    assert_eq!(support.status, 200, "{}", support.text());
    let s = support.json();
    let phone = orig["properties"]["phone"].as_str().unwrap();
    let digits: String = phone.chars().filter(char::is_ascii_digit).collect();
    assert_eq!(
        s["properties"]["phone"],
        format!("***{}", &digits[digits.len() - 4..])
    );
    assert_eq!(s["properties"]["email"], orig["properties"]["email"]);
    assert_eq!(
        s["properties"]["date_of_birth"],
        orig["properties"]["date_of_birth"]
    );

    let marketing = get(&gw.url(ONE), MARKETING).await;
    assert_eq!(marketing.status, 200);
    let m = marketing.json();
    let props = m["properties"].as_object().unwrap();
    assert_eq!(props["email"], orig["properties"]["email"]);
    for gone in [
        "firstname",
        "lastname",
        "phone",
        "mobilephone",
        "address",
        "date_of_birth",
        "notes",
        "zip",
    ] {
        assert!(
            !props.contains_key(gone),
            "marketing must not see {gone}: {m}"
        );
    }
    // The response is byte-for-byte the original outside rewritten values.
    assert!(
        marketing
            .text()
            .starts_with(r#"{"id":"7","properties":{"email":""#),
        "{}",
        marketing.text()
    );
    assert_eq!(marketing.headers["cache-control"], "no-store");
    assert_eq!(
        marketing.headers["content-length"],
        marketing.body.len().to_string().as_str()
    );
}

#[tokio::test]
async fn identity_and_purpose_are_checked_before_anything_is_forwarded() {
    let gw = TestGateway::builder().grant("7", "marketing").start().await;
    gw.crm.on(ONE, Reply::json(contact(7)));
    let url = gw.url(ONE);
    type Case<'a> = (Vec<(&'a str, &'a str)>, u16, &'a str);
    let cases: Vec<Case> = vec![
        (vec![], 401, "api-key-missing"),
        (
            vec![("x-api-key", "not-a-key-of-anyone-at-all")],
            401,
            "api-key-unknown",
        ),
        (
            vec![("x-api-key", MARKETING), ("x-purpose", "essential.service")],
            403,
            "purpose-not-allowed",
        ),
        (vec![("x-api-key", MULTI)], 400, "purpose-required"),
        (
            vec![("x-api-key", MULTI), ("x-purpose", "marketting")],
            400,
            "purpose-invalid",
        ),
        (
            vec![
                ("x-api-key", MULTI),
                ("x-purpose", "marketing"),
                ("x-purpose", "marketing"),
            ],
            400,
            "purpose-repeated",
        ),
        (
            vec![("x-api-key", SUPPORT), ("x-purpose", "functional.service")],
            403,
            "purpose-not-allowed",
        ),
    ];
    for (headers, status, problem) in cases {
        let got = send("GET", &url, &headers, b"").await;
        assert_eq!(got.status, status, "{headers:?}: {}", got.text());
        assert_eq!(got.problem(), problem, "{headers:?}");
        let j = got.json();
        assert_eq!(j["status"], status);
        assert!(j["request_id"].as_str().is_some_and(|r| !r.is_empty()));
        assert!(
            !got.text().contains("not-a-key"),
            "problem bodies never echo credentials"
        );
    }
    assert_eq!(gw.crm.count(), 0, "no refused request reached the CRM");
    // A multi-purpose client names its purpose; a sub-purpose of an allowed one is fine.
    let ok = send(
        "GET",
        &url,
        &[
            ("x-api-key", MULTI),
            ("x-purpose", "marketing.communications.email"),
        ],
        b"",
    )
    .await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert!(ok.json()["properties"].get("phone").is_none());
}

#[tokio::test]
async fn credentials_purpose_and_forwarding_headers_cannot_be_smuggled() {
    let gw = TestGateway::start().await;
    gw.crm.on(ONE, Reply::json(contact(7)));
    let got = send(
        "GET",
        &gw.url(ONE),
        &[
            ("x-api-key", SUPPORT),
            ("authorization", "Bearer client-token"),
            ("cookie", "session=abc"),
            // Asking the gateway to drop its own headers, or to spoof them.
            (
                "connection",
                "keep-alive, Authorization, X-Forwarded-For, X-Crm-Account, Via",
            ),
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-host", "evil.example"),
            ("forwarded", "for=6.6.6.6"),
            ("x-real-ip", "6.6.6.6"),
            ("x-custom", "kept"),
            ("te", "trailers"),
            ("keep-alive", "timeout=5"),
            ("x-request-id", "client-chosen-id-1"),
        ],
        b"",
    )
    .await;
    assert_eq!(got.status, 200, "{}", got.text());
    let seen = gw.crm.last();
    let h = &seen.headers;
    assert_eq!(h["authorization"], "Bearer upstream-secret-token");
    assert_eq!(h["x-crm-account"], "acct-42");
    assert_eq!(h["x-forwarded-for"], "127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["via"], "1.1 consentry");
    assert_eq!(h["x-request-id"], "client-chosen-id-1");
    assert_eq!(h["x-custom"], "kept");
    for absent in [
        "x-api-key",
        "x-purpose",
        "cookie",
        "x-forwarded-host",
        "forwarded",
        "x-real-ip",
        "te",
        "keep-alive",
    ] {
        assert!(!h.contains_key(absent), "{absent} reached the CRM");
    }
    assert_eq!(h.get_all("authorization").iter().count(), 1);
    assert_eq!(h.get_all("x-forwarded-for").iter().count(), 1);
    assert_eq!(got.headers["x-request-id"], "client-chosen-id-1");
}

#[tokio::test]
async fn paths_are_normalised_once_and_ambiguous_ones_refused() {
    let gw = TestGateway::start().await;
    gw.crm.on(ONE, Reply::json(contact(7)));
    let ok = get(&gw.url("/crm//v3/objects/%63ontacts/7/?x=1"), SUPPORT).await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    let seen = gw.crm.last();
    assert_eq!(seen.path, ONE, "the CRM sees the normalised path");
    assert_eq!(seen.query.as_deref(), Some("x=1"));
    let before = gw.crm.count();
    for bad in [
        "/crm/v3/objects/contacts/..%2f7",
        "/crm/v3/objects/contacts/7%2F",
        "/crm/v3/objects/%2e%2e/contacts/7",
        "/crm/v3/objects/contacts/./7",
        "/crm/v3/objects/contacts/7;jsessionid=1",
        "/crm/v3/objects/contacts/%00",
        "/crm/v3/objects/contacts/%c3%28",
        "/crm/v3/objects/contacts/7%5c",
        "/crm/v3/objects/contacts/%252e%252e",
    ] {
        let got = get(&gw.url(bad), SUPPORT).await;
        assert_eq!(got.status, 400, "{bad}: {}", got.text());
        assert_eq!(got.problem(), "ambiguous-path", "{bad}");
    }
    // Requests a client library will not build: raw bytes on the socket.
    let req = format!(
        "GET /crm/v3/objects/contacts\\7 HTTP/1.1\r\nHost: x\r\nX-Api-Key: {SUPPORT}\r\nConnection: close\r\n\r\n"
    );
    let (status, text) = raw(gw.addr, req.as_bytes()).await;
    assert_eq!(status, 400, "{text}");
    // hyper drops a fragment while parsing the request line, before consentry
    // sees it; what matters is that the CRM gets exactly the matched path.
    let req = format!(
        "GET {ONE}#frag HTTP/1.1\r\nHost: x\r\nX-Api-Key: {SUPPORT}\r\nConnection: close\r\n\r\n"
    );
    let (status, text) = raw(gw.addr, req.as_bytes()).await;
    let before = if status == 200 {
        let seen = gw.crm.last();
        assert_eq!(
            (seen.path.as_str(), seen.query.as_deref()),
            (ONE, None),
            "no fragment reaches the CRM"
        );
        gw.crm.count()
    } else {
        assert_eq!(status, 400, "{text}");
        before
    };
    // A case variant of a route is not another route.
    let got = get(&gw.url("/CRM/v3/objects/Contacts/7"), SUPPORT).await;
    assert_eq!(
        (got.status, got.problem().as_str()),
        (400, "path-case-variant")
    );
    // Unmatched routes are refused.
    let got = get(&gw.url("/crm/v3/owners"), SUPPORT).await;
    assert_eq!(
        (got.status, got.problem().as_str()),
        (403, "route-not-allowed")
    );
    let got = send("DELETE", &gw.url(ONE), &[("x-api-key", SUPPORT)], b"").await;
    assert_eq!(got.status, 403, "DELETE is not declared");
    assert_eq!(gw.crm.count(), before, "none of these reached the CRM");
}

#[tokio::test]
async fn method_overrides_upgrades_and_connect_are_refused() {
    let gw = TestGateway::start().await;
    gw.crm.on(ONE, Reply::json(contact(7)));
    for h in [
        "X-HTTP-Method-Override",
        "X-HTTP-Method",
        "X-Method-Override",
    ] {
        let got = send(
            "GET",
            &gw.url(ONE),
            &[("x-api-key", SUPPORT), (h, "DELETE")],
            b"",
        )
        .await;
        assert_eq!(
            (got.status, got.problem().as_str()),
            (400, "method-override"),
            "{h}"
        );
    }
    let got = get(
        &gw.url("/crm/v3/objects/contacts/7?_method=DELETE"),
        SUPPORT,
    )
    .await;
    assert_eq!(
        (got.status, got.problem().as_str()),
        (400, "method-override")
    );
    let req = format!(
        "GET {ONE} HTTP/1.1\r\nHost: x\r\nX-Api-Key: {SUPPORT}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
    );
    let (status, text) = raw(gw.addr, req.as_bytes()).await;
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("upgrade-refused"), "{text}");
    let (status, _) = raw(
        gw.addr,
        b"CONNECT 127.0.0.1:22 HTTP/1.1\r\nHost: 127.0.0.1:22\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(status == 405 || status == 400, "CONNECT got {status}");
    let req = format!(
        "TRACE {ONE} HTTP/1.1\r\nHost: x\r\nX-Api-Key: {SUPPORT}\r\nConnection: close\r\n\r\n"
    );
    let (status, _) = raw(gw.addr, req.as_bytes()).await;
    assert_eq!(status, 405);
    assert_eq!(gw.crm.count(), 0);
}

#[tokio::test]
async fn head_and_conditional_requests_get_the_get_decision() {
    let gw = TestGateway::builder().grant("7", "marketing").start().await;
    let body = contact(7);
    gw.crm.on(
        ONE,
        Reply::json(body.clone())
            .header("etag", "\"abc\"")
            .header("content-md5", "xyz")
            .header("digest", "sha-256=xyz")
            .header("last-modified", "Wed, 21 Oct 2015 07:28:00 GMT"),
    );
    let full = get(&gw.url(ONE), MARKETING).await;
    let head = send("HEAD", &gw.url(ONE), &[("x-api-key", MARKETING)], b"").await;
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    assert_eq!(
        head.headers["content-length"],
        full.body.len().to_string().as_str(),
        "HEAD announces the redacted length"
    );
    assert_eq!(gw.crm.last().method, "GET", "HEAD is answered from a GET");
    for h in ["etag", "content-md5", "digest"] {
        assert!(
            !full.headers.contains_key(h),
            "{h} describes the CRM's bytes, not ours"
        );
    }
    let cond = send(
        "GET",
        &gw.url(ONE),
        &[
            ("x-api-key", MARKETING),
            ("if-none-match", "\"abc\""),
            ("if-modified-since", "Wed, 21 Oct 2015 07:28:00 GMT"),
            ("range", "bytes=0-10"),
            ("if-range", "\"abc\""),
        ],
        b"",
    )
    .await;
    assert_eq!(cond.status, 200);
    assert_eq!(
        cond.body, full.body,
        "a conditional GET gets the same decision"
    );
    let seen = gw.crm.last();
    for h in ["if-none-match", "if-modified-since", "range", "if-range"] {
        assert!(!seen.headers.contains_key(h), "{h} reached the CRM");
    }
}

#[tokio::test]
async fn response_headers_that_carry_personal_data_pass_only_where_allowed() {
    let policy = example_policy().replace(
        "    records: $\n",
        "    records: $\n    response_headers: [Location]\n",
    );
    let gw = TestGateway::builder()
        .policy("p.yaml", &policy)
        .start()
        .await;
    let leaky = |r: Reply| {
        r.header("location", "/contacts/jane.doe@example.com")
            .header("content-disposition", "attachment; filename=jane-doe.json")
            .header("link", "</contacts/jane>; rel=self")
            .header("set-cookie", "crm=1")
            .header("x-hubspot-ratelimit-remaining", "99")
            .header("connection", "close, x-secret")
            .header("x-secret", "hop")
    };
    gw.crm.on(ONE, leaky(Reply::json(contact(7))));
    gw.crm.on(
        "/crm/v3/objects/contacts",
        leaky(Reply::json(r#"{"results":[]}"#)),
    );
    let single = get(&gw.url(ONE), SUPPORT).await;
    assert!(
        single.headers.contains_key("location"),
        "this resource allows Location"
    );
    for h in ["content-disposition", "link", "set-cookie", "x-secret"] {
        assert!(!single.headers.contains_key(h), "{h} passed");
    }
    assert_eq!(single.headers["x-hubspot-ratelimit-remaining"], "99");
    let list = get(&gw.url("/crm/v3/objects/contacts"), SUPPORT).await;
    assert!(
        !list.headers.contains_key("location"),
        "the list resource does not allow Location"
    );
}

#[tokio::test]
async fn request_ids_are_kept_when_well_formed_and_generated_otherwise() {
    let gw = TestGateway::start().await;
    gw.crm.on(ONE, Reply::json(contact(7)));
    let got = send(
        "GET",
        &gw.url(ONE),
        &[
            ("x-api-key", SUPPORT),
            ("x-request-id", "bad id with spaces"),
        ],
        b"",
    )
    .await;
    let id = got.headers["x-request-id"].to_str().unwrap().to_owned();
    assert_ne!(id, "bad id with spaces");
    assert_eq!(gw.crm.last().headers["x-request-id"], id.as_str());
    let refused = send(
        "GET",
        &gw.url("/nope"),
        &[("x-api-key", SUPPORT), ("x-request-id", "trace-77")],
        b"",
    )
    .await;
    assert_eq!(refused.json()["request_id"], "trace-77");
}

#[tokio::test]
async fn upstream_failures_are_problems_not_hangs() {
    let gw = TestGateway::start().await;
    gw.crm.on(ONE, Reply::json(contact(7)).status(500));
    let got = get(&gw.url(ONE), SUPPORT).await;
    assert_eq!(
        got.status, 500,
        "CRM errors keep their status; the body is still inspected"
    );
    gw.crm.on(
        ONE,
        Reply::json(contact(7))
            .chunks(vec![contact(7)[..50].to_owned().into()])
            .header("content-length", "5000"),
    );
    let got = get(&gw.url(ONE), SUPPORT).await;
    assert_eq!(
        (got.status, got.problem().as_str()),
        (502, "upstream-failed"),
        "a body cut short"
    );
    // A CRM that is not listening at all.
    let dead = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = dead.local_addr().unwrap();
    drop(dead);
    let gw = TestGateway::builder()
        .upstream(&format!("http://{addr}"))
        .start()
        .await;
    let got = get(&gw.url(ONE), SUPPORT).await;
    assert_eq!(
        (got.status, got.problem().as_str()),
        (502, "upstream-unavailable")
    );
}

#[tokio::test]
async fn request_bodies_are_limited() {
    // The example policy declares POST /crm/v3/objects/contacts (contact-create).
    let gw = TestGateway::builder()
        .config("limits: { request_body: 1KiB }")
        .start()
        .await;
    gw.crm
        .on("/crm/v3/objects/contacts", Reply::json(r#"{"results":[]}"#));
    let ok = send(
        "POST",
        &gw.url("/crm/v3/objects/contacts"),
        &[("x-api-key", SUPPORT), ("content-type", "application/json")],
        br#"{"properties":{"firstname":"Ann"}}"#,
    )
    .await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert_eq!(
        &gw.crm.last().body[..],
        br#"{"properties":{"firstname":"Ann"}}"#
    );
    let big = vec![b'x'; 4096];
    let got = send(
        "POST",
        &gw.url("/crm/v3/objects/contacts"),
        &[("x-api-key", SUPPORT)],
        &big,
    )
    .await;
    assert_eq!(
        (got.status, got.problem().as_str()),
        (413, "request-body-too-large")
    );
}

#[tokio::test]
async fn path_and_client_overrides_never_reach_the_crm() {
    let gw = TestGateway::start().await;
    gw.crm.on(ONE, Reply::json(contact(7)));
    let got = send(
        "GET",
        &gw.url(ONE),
        &[
            ("x-api-key", SUPPORT),
            ("x-original-url", "/crm/v3/objects/contacts/8"),
            ("x-rewrite-url", "/admin"),
            ("x-forwarded-server", "evil"),
            ("x-forwarded-ssl", "on"),
            ("x-forwarded-scheme", "https"),
            ("true-client-ip", "6.6.6.6"),
            ("x-client-ip", "6.6.6.6"),
        ],
        b"",
    )
    .await;
    assert_eq!(got.status, 200);
    let h = gw.crm.last().headers;
    for name in [
        "x-original-url",
        "x-rewrite-url",
        "x-forwarded-server",
        "x-forwarded-ssl",
        "x-forwarded-scheme",
        "true-client-ip",
        "x-client-ip",
    ] {
        assert!(!h.contains_key(name), "{name} reached the CRM");
    }
    for q in [
        "?_%6Dethod=DELETE",
        "?a=1;_method=DELETE",
        "?%5F%6D%65%74%68%6F%64=PUT",
    ] {
        let got = get(&gw.url(&format!("{ONE}{q}")), SUPPORT).await;
        assert_eq!(
            (got.status, got.problem().as_str()),
            (400, "method-override"),
            "{q}"
        );
    }
}

#[tokio::test]
async fn a_declared_path_with_another_method_is_refused_even_with_passthrough() {
    let gw = TestGateway::builder()
        .config("routes: { unmatched: passthrough }")
        .start()
        .await;
    gw.crm.on(ONE, Reply::json(contact(7)));
    gw.crm
        .on("/crm/v3/owners", Reply::json(r#"{"results":[]}"#));
    let before = gw.crm.count();
    let got = send("DELETE", &gw.url(ONE), &[("x-api-key", SUPPORT)], b"").await;
    assert_eq!(
        (got.status, got.problem().as_str()),
        (403, "route-not-allowed")
    );
    assert_eq!(gw.crm.count(), before);
    // A path no policy declares passes unread under `passthrough`.
    let got = get(&gw.url("/crm/v3/owners"), SUPPORT).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.text(), r#"{"results":[]}"#);
}

#[tokio::test]
async fn http_1_0_clients_get_whole_responses_or_a_refusal() {
    let gw = TestGateway::builder()
        .config("limits: { stream_after: 4KiB }")
        .start()
        .await;
    gw.crm.on(ONE, Reply::json(contact(7)));
    let list: Vec<String> = (1..=20).map(contact).collect();
    gw.crm.on(
        "/crm/v3/objects/contacts",
        Reply::json(format!(r#"{{"results":[{}]}}"#, list.join(","))),
    );
    let small = format!("GET {ONE} HTTP/1.0\r\nX-Api-Key: {SUPPORT}\r\n\r\n");
    let (status, text) = raw(gw.addr, small.as_bytes()).await;
    assert_eq!(status, 200, "{text}");
    assert!(
        text.to_ascii_lowercase().contains("content-length:"),
        "{text}"
    );
    // Once the records' keys are cached (by a first read), nothing waits and
    // a large body streams: an HTTP/1.0 client is refused.
    let warm = get(&gw.url("/crm/v3/objects/contacts"), SUPPORT).await;
    assert_eq!(warm.status, 200);
    let big = format!("GET /crm/v3/objects/contacts HTTP/1.0\r\nX-Api-Key: {SUPPORT}\r\n\r\n");
    let (status, text) = raw(gw.addr, big.as_bytes()).await;
    assert_eq!(status, 502, "{text}");
    assert!(text.contains("streaming-unavailable"), "{text}");
}

#[tokio::test]
async fn slow_or_oversized_request_heads_are_cut_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let gw = TestGateway::builder()
        .config("limits: { header_read_timeout: 500ms, header_bytes: 16KiB }")
        .start()
        .await;
    // A client that never finishes its request head.
    let mut s = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(b"GET /crm/v3/objects/contacts/7 HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let read =
        tokio::time::timeout(std::time::Duration::from_secs(5), s.read_to_end(&mut buf)).await;
    assert!(
        read.is_ok(),
        "the gateway must close a connection whose head does not arrive in time"
    );
    // A head larger than the limit.
    let big = format!(
        "GET {ONE} HTTP/1.1\r\nHost: x\r\nX-Api-Key: {SUPPORT}\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
        "a".repeat(64 << 10)
    );
    let (status, _) = raw(gw.addr, big.as_bytes()).await;
    assert!(status == 431 || status == 0, "oversized head got {status}");
    assert_eq!(gw.crm.count(), 0);
}
