//! Production serving: TLS with client certificates (made here with
//! rcgen), HTTP/2 over ALPN, reload under load, metrics, connection limits
//! and graceful shutdown. Everything through real listeners.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::harness::*;

/// The support rule's redactions, and a stricter version that hides names too.
const REDACT: &str = "    redact: [user.financial, user.government_id]\n";
const STRICTER: &str = "    redact: [user.financial, user.government_id, user.name]\n";

struct Pki {
    dir: tempfile::TempDir,
    ca_pem: String,
    /// A client certificate from the CA, CN `desk-cert`.
    client: (CertificateDer<'static>, PrivateKeyDer<'static>),
    /// A client certificate nobody issued (self-signed), CN `desk-cert`.
    rogue: (CertificateDer<'static>, PrivateKeyDer<'static>),
}

impl Pki {
    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }
}

fn key_der(k: &KeyPair) -> PrivateKeyDer<'static> {
    PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(k.serialize_der()))
}

/// A CA; the gateway's certificate for localhost and 127.0.0.1 with its key
/// (written as files); a client certificate from the CA and a rogue one.
fn pki() -> Pki {
    let dir = tempfile::tempdir().unwrap();
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "test CA");
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, &ca_key);
    let server_key = KeyPair::generate().unwrap();
    let server_cert = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&server_key, &issuer)
        .unwrap();
    std::fs::write(dir.path().join("ca.pem"), ca_cert.pem()).unwrap();
    std::fs::write(dir.path().join("gateway.pem"), server_cert.pem()).unwrap();
    std::fs::write(dir.path().join("gateway.key"), server_key.serialize_pem()).unwrap();
    let client = |signed: bool| {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(DnType::CommonName, "desk-cert");
        let cert = if signed {
            p.signed_by(&key, &issuer).unwrap()
        } else {
            p.self_signed(&key).unwrap()
        };
        (cert.der().clone(), key_der(&key))
    };
    Pki {
        ca_pem: ca_cert.pem(),
        client: client(true),
        rogue: client(false),
        dir,
    }
}

/// An HTTP/2 client in clear (prior knowledge).
fn h2c()
-> Client<hyper_util::client::legacy::connect::HttpConnector, http_body_util::Full<bytes::Bytes>> {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http()
}

type TlsClient = Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    Empty<bytes::Bytes>,
>;

/// An HTTPS client trusting the test CA, offering `alpn` (h2 and/or
/// http/1.1), presenting `cert` if given.
fn tls_client(
    pki: &Pki,
    cert: Option<&(CertificateDer<'static>, PrivateKeyDer<'static>)>,
    h2: bool,
) -> TlsClient {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(pki.ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let b = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots);
    let config = match cert {
        Some((c, k)) => b
            .with_client_auth_cert(vec![c.clone()], k.clone_key())
            .unwrap(),
        None => b.with_no_client_auth(),
    };
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(config)
        .https_only();
    let connector = if h2 {
        connector.enable_http2().build()
    } else {
        connector.enable_http1().build()
    };
    let mut client = Client::builder(TokioExecutor::new());
    if h2 {
        client.http2_only(true);
    }
    client.build(connector)
}

async fn tls_get(
    client: &TlsClient,
    url: &str,
    headers: &[(&str, &str)],
) -> Result<(u16, http::Version, String), String> {
    let mut req = http::Request::get(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = client
        .request(req.body(Empty::new()).unwrap())
        .await
        .map_err(|e| format!("{e:?}"))?;
    let (status, version) = (resp.status().as_u16(), resp.version());
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?;
    Ok((
        status,
        version,
        String::from_utf8_lossy(&body.to_bytes()).into_owned(),
    ))
}

async fn tls_gateway(pki: &Pki, client_auth: &str) -> TestGateway {
    let gw = TestGateway::builder()
        .client("{ name: cert-desk, certificate: desk-cert, purposes: [essential.service] }")
        .config(&format!(
            "tls: {{ cert: {}, key: {}, client_ca: {}, client_auth: {client_auth} }}",
            pki.path("gateway.pem"),
            pki.path("gateway.key"),
            pki.path("ca.pem"),
        ))
        .start()
        .await;
    gw.crm
        .on("/crm/v3/objects/contacts/1", Reply::json(contact(1)));
    gw
}

#[tokio::test]
async fn tls_with_client_certificates_and_alpn() {
    let pki = pki();
    let gw = tls_gateway(&pki, "optional").await;
    let url = format!(
        "https://localhost:{}/crm/v3/objects/contacts/1",
        gw.addr.port()
    );

    // A certificate from the CA names the client: no API key, HTTP/2 by ALPN.
    let with_cert = tls_client(&pki, Some(&pki.client), true);
    let (status, version, body) = tls_get(&with_cert, &url, &[]).await.unwrap();
    assert_eq!((status, version), (200, http::Version::HTTP_2), "{body}");
    assert_eq!(gw.crm.last().headers["x-forwarded-proto"], "https");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    // The support rule applied: phones masked to their last four digits.
    let phone = v["properties"]["phone"].as_str().unwrap();
    assert!(phone.starts_with('*'), "{phone}");

    // `optional`: without a certificate, the API key identifies (HTTP/1.1).
    let plain = tls_client(&pki, None, false);
    let (status, version, _) = tls_get(&plain, &url, &[("x-api-key", SUPPORT)])
        .await
        .unwrap();
    assert_eq!((status, version), (200, http::Version::HTTP_11));
    let (status, _, body) = tls_get(&plain, &url, &[]).await.unwrap();
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("api-key-missing"), "{body}");

    // A certificate nobody issued ends the handshake.
    let rogue = tls_client(&pki, Some(&pki.rogue), true);
    assert!(tls_get(&rogue, &url, &[]).await.is_err());
    let metrics = gw.gateway.metrics().render();
    assert!(
        metrics.contains("consentry_tls_handshake_failures_total 1"),
        "{metrics}"
    );
    gw.stop().await;

    // `required` (the default with a CA): no certificate, no handshake.
    let gw = tls_gateway(&pki, "required").await;
    let url = format!(
        "https://localhost:{}/crm/v3/objects/contacts/1",
        gw.addr.port()
    );
    let plain = tls_client(&pki, None, false);
    assert!(
        tls_get(&plain, &url, &[("x-api-key", SUPPORT)])
            .await
            .is_err()
    );
    let with_cert = tls_client(&pki, Some(&pki.client), false);
    let (status, _, _) = tls_get(&with_cert, &url, &[]).await.unwrap();
    assert_eq!(status, 200);
    // Plain HTTP on the TLS port gets no answer.
    let plain_http = try_send("GET", &url.replace("https", "http"), &[], b"").await;
    assert!(plain_http.is_none_or(|g| g.status != 200));
    gw.stop().await;
}

#[tokio::test]
async fn tls_files_that_do_not_load_are_named() {
    let pki = pki();
    std::fs::write(pki.dir.path().join("empty.pem"), "").unwrap();
    let t = consentry::config::Tls {
        cert: pki.dir.path().join("empty.pem"),
        key: pki.dir.path().join("gateway.key"),
        client_ca: None,
        client_auth_required: true,
        handshake_timeout: Duration::from_secs(1),
    };
    let e = consentry::tls::server_config(&t).unwrap_err();
    assert!(e.contains("empty.pem"), "{e}");
    let t = consentry::config::Tls {
        cert: pki.dir.path().join("gateway.pem"),
        key: pki.dir.path().join("ca.pem"),
        ..t
    };
    let e = consentry::tls::server_config(&t).unwrap_err();
    assert!(e.contains("ca.pem"), "{e}");
    assert!(!e.contains("BEGIN"), "no file contents in errors: {e}");
}

fn metric(text: &str, line_prefix: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(line_prefix))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum()
}

/// Every sample line of the Prometheus text format: `name{labels} value`.
fn parse_metrics(text: &str) -> Vec<(String, f64)> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').unwrap();
            let name_ok = series
                .split('{')
                .next()
                .unwrap()
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_');
            assert!(name_ok, "{l}");
            if let Some(labels) = series.split_once('{').map(|(_, l)| l) {
                assert!(labels.ends_with('}'), "{l}");
            }
            (series.to_owned(), value.parse::<f64>().unwrap())
        })
        .collect()
}

#[tokio::test]
async fn reload_under_load_loses_no_request_and_a_bad_policy_never_serves() {
    let gw = TestGateway::builder().admin().start().await;
    gw.crm
        .on("/crm/v3/objects/contacts/1", Reply::json(contact(1)));
    let url = gw.url("/crm/v3/objects/contacts/1");
    let policy = gw.dir().join("policies/hubspot-contacts.yaml");
    let original = std::fs::read_to_string(&policy).unwrap();
    let stricter = original.replace(REDACT, STRICTER);
    assert_ne!(original, stricter);

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (sent, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut load = Vec::new();
    for _ in 0..8 {
        let (stop, sent, failed, url) = (
            Arc::clone(&stop),
            Arc::clone(&sent),
            Arc::clone(&failed),
            url.clone(),
        );
        load.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let g = get(&url, SUPPORT).await;
                sent.fetch_add(1, Ordering::Relaxed);
                if g.status != 200 {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for i in 0..6 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let text = if i % 2 == 0 { &stricter } else { &original };
        std::fs::write(&policy, text).unwrap();
        let r = admin(&gw, "POST", "/v1/policies/reload", "", "").await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json()["version"], i + 2);
    }
    // Last reload was `original`; make the stricter one serve, under load.
    std::fs::write(&policy, &stricter).unwrap();
    assert_eq!(
        admin(&gw, "POST", "/v1/policies/reload", "", "")
            .await
            .status,
        200
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.store(true, Ordering::Relaxed);
    for t in load {
        t.await.unwrap();
    }
    let (sent, failed) = (sent.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    assert!(sent > 50, "the load ran: {sent} requests");
    assert_eq!(
        failed, 0,
        "{failed} of {sent} requests failed during reloads"
    );
    let v = get(&url, SUPPORT).await.json();
    assert_eq!(
        v["properties"]["firstname"], "[REDACTED]",
        "the new policy serves"
    );

    // A broken policy is refused with file and line, and the old one serves.
    std::fs::write(
        &policy,
        stricter.replace("user.contact.email", "user.contact.emali"),
    )
    .unwrap();
    let r = admin(&gw, "POST", "/v1/policies/reload", "", "").await;
    assert_eq!(r.status, 422, "{}", r.text());
    let detail = r.json()["detail"].as_str().unwrap().to_owned();
    assert!(detail.contains("hubspot-contacts.yaml:"), "{detail}");
    assert!(
        detail.contains("did you mean `user.contact.email`"),
        "{detail}"
    );
    let v = get(&url, SUPPORT).await.json();
    assert_eq!(v["properties"]["firstname"], "[REDACTED]");
    assert!(v["properties"]["email"].as_str().unwrap().contains('@'));

    // Sections bound at start are named, not applied; keys refuse.
    std::fs::write(&policy, &stricter).unwrap();
    let config = gw.dir().join("consentry.yaml");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, text.replace("response: 5s", "response: 6s")).unwrap();
    let r = admin(&gw, "POST", "/v1/policies/reload", "", "").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json()["restart_required"],
        serde_json::json!(["upstream"])
    );
    std::fs::write(
        &config,
        text.replace(
            "test-hash-key-0123456789abcdef",
            "another-hash-key-0123456789",
        ),
    )
    .unwrap();
    let r = admin(&gw, "POST", "/v1/policies/reload", "", "").await;
    assert_eq!(r.status, 422, "{}", r.text());
    assert!(r.text().contains("`keys` section"), "{}", r.text());
    std::fs::write(&config, &text).unwrap();

    // Every reload is in the audit trail, and each request names the
    // policy version that decided it.
    let ev = admin(&gw, "GET", "/v1/audit/events?kind=reload&limit=100", "", "").await;
    let ev = ev.json();
    let ev = ev["events"].as_array().unwrap();
    let applied: Vec<u64> = ev
        .iter()
        .filter(|e| e["decision"] == "applied")
        .map(|e| e["counts"]["version"].as_u64().unwrap())
        .collect();
    assert_eq!(applied, (2..=9).collect::<Vec<u64>>());
    assert_eq!(ev.iter().filter(|e| e["decision"] == "refused").count(), 2);
    let last = admin(
        &gw,
        "GET",
        "/v1/audit/events?kind=request&limit=1000",
        "",
        "",
    )
    .await;
    let last = last.json();
    let versions: Vec<u64> = last["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["policy_version"].as_u64().unwrap())
        .collect();
    assert!(
        versions.contains(&1) && versions.contains(&8),
        "{versions:?}"
    );

    // Metrics: parsed, and they agree with what happened.
    let m = admin(&gw, "GET", "/metrics", "", "").await;
    assert_eq!(m.status, 200);
    assert!(
        m.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text"),
    );
    assert!(m.text().ends_with("# EOF\n"));
    let text = m.text();
    let samples = parse_metrics(&text);
    assert!(samples.len() > 10);
    assert_eq!(
        metric(&text, "consentry_reloads_total{kind=\"applied\"}"),
        8.0
    );
    assert_eq!(
        metric(&text, "consentry_reloads_total{kind=\"refused\"}"),
        2.0
    );
    assert_eq!(metric(&text, "consentry_policy_version "), 9.0);
    let served = metric(
        &text,
        "consentry_requests_total{route=\"/crm/v3/objects/contacts/{id}\",decision=\"served\",status=\"200\"}",
    );
    assert_eq!(served as u64, sent + 2);
    assert_eq!(
        metric(
            &text,
            "consentry_request_duration_seconds_count{route=\"/crm/v3/objects/contacts/{id}\"}"
        ) as u64,
        sent + 2
    );
    let masked = metric(
        &text,
        "consentry_fields_total{kind=\"masked\",mode=\"enforce\"}",
    );
    assert!(masked >= served, "{text}");
    // By category: the phones are what the support rule masks.
    assert_eq!(
        metric(
            &text,
            "consentry_category_values_total{category=\"user.contact.phone_number\",action=\"masked\",mode=\"enforce\"}"
        ),
        masked
    );
    assert!(
        metric(
            &text,
            "consentry_category_values_total{category=\"user.name.first\",action=\"redacted\",mode=\"enforce\"}"
        ) >= 2.0,
        "the stricter policy redacted first names: {text}"
    );
    // Without a token, no metrics.
    let anon = send("GET", &gw.admin_url("/metrics"), &[], b"").await;
    assert_eq!(anon.status, 401);
    gw.stop().await;
}

#[tokio::test]
async fn readiness_names_what_is_missing() {
    let gw = TestGateway::builder().admin().start().await;
    let r = send("GET", &gw.admin_url("/readyz"), &[], b"").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["upstream"], "ok");
    assert_eq!(r.json()["store"], "ok");
    gw.stop().await;

    // A CRM that is not there: not ready, and the answer says why.
    let port = free_port();
    let gw = TestGateway::builder()
        .admin()
        .upstream(&format!("http://127.0.0.1:{port}"))
        .start()
        .await;
    let r = send("GET", &gw.admin_url("/readyz"), &[], b"").await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.json()["upstream"]["error"].is_string(), "{}", r.text());
    gw.stop().await;
}

#[tokio::test]
async fn connections_beyond_the_limit_are_closed() {
    let gw = TestGateway::builder()
        .config("limits: { max_connections: 2 }")
        .start()
        .await;
    gw.crm
        .on("/crm/v3/objects/contacts/1", Reply::json(contact(1)));
    let a = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let b = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut c = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
        let _ = c
            .write_all(b"GET /crm/v3/objects/contacts/1 HTTP/1.1\r\nhost: x\r\nx-api-key: test-support-key-000000000001\r\n\r\n")
            .await;
        let mut buf = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut buf)).await;
        assert!(buf.is_empty(), "a third connection gets no answer");
    }
    let text = gw.gateway.metrics().render();
    assert!(
        text.contains("consentry_connections_refused_total 1"),
        "{text}"
    );
    drop((a, b));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        get(&gw.url("/crm/v3/objects/contacts/1"), SUPPORT)
            .await
            .status,
        200
    );
    gw.stop().await;
}

#[tokio::test]
async fn shutdown_lets_requests_in_flight_finish() {
    let gw = TestGateway::start().await;
    let (reply, hold) = Reply::held(contact(1));
    gw.crm.on("/crm/v3/objects/contacts/1", reply);
    let url = gw.url("/crm/v3/objects/contacts/1");
    let addr = gw.addr;
    let in_flight = tokio::spawn(async move { get(&url, SUPPORT).await });
    while gw.crm.count() == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let stopping = tokio::spawn(gw.stop());
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Shutting down: no new connections, the one in flight still runs.
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    assert!(!stopping.is_finished());
    hold.notify_one();
    let got = in_flight.await.unwrap();
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(got.json()["id"], "1");
    tokio::time::timeout(Duration::from_secs(5), stopping)
        .await
        .expect("drained once the last request finished")
        .unwrap();
}

fn contacts(ids: impl IntoIterator<Item = u64>) -> String {
    let recs: Vec<String> = ids.into_iter().map(contact).collect();
    format!(
        r#"{{"results":[{}],"paging":{{"next":{{"after":"x"}}}}}}"#,
        recs.join(",")
    )
}

#[tokio::test]
async fn report_mode_passes_answers_unchanged_and_counts_what_enforcing_would_do() {
    let policy = example_policy().replacen(
        "name: hubspot-contacts\n",
        "name: hubspot-contacts\nmode: report\n",
        1,
    );
    let gw = TestGateway::builder()
        .policy("hubspot-contacts.yaml", &policy)
        .admin()
        .start()
        .await;
    let one = contact(1);
    let list = contacts(1..=5);
    gw.crm
        .on("/crm/v3/objects/contacts/1", Reply::json(one.clone()));
    gw.crm
        .on("/crm/v3/objects/contacts/2", Reply::json(contact(2)));
    gw.crm
        .on("/crm/v3/objects/contacts", Reply::json(list.clone()));

    // Marketing without consent: enforcing would refuse (403) the record
    // and drop the five from the list; reporting passes them as they came.
    let got = get(&gw.url("/crm/v3/objects/contacts/1"), MARKETING).await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(got.text(), one, "the CRM's bytes, unchanged");
    let got = get(&gw.url("/crm/v3/objects/contacts"), MARKETING).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.text(), list);
    // Support: phones would be masked; they pass as stored.
    let got = get(&gw.url("/crm/v3/objects/contacts/1"), SUPPORT).await;
    assert_eq!(got.text(), one);
    // The client's credentials still never reach the CRM.
    assert!(gw.crm.last().headers.get("x-api-key").is_none());

    // What enforcing would have done: in the audit trail and the metrics.
    let events = admin(&gw, "GET", "/v1/audit/events?decision=reported", "", "").await;
    assert_eq!(events.status, 200, "{}", events.text());
    let events = events.json();
    let events = events["events"].as_array().unwrap();
    assert_eq!(events.len(), 3, "{events:?}");
    assert_eq!(events[0]["problem"], "consent-required");
    assert_eq!(events[1]["counts"]["records_dropped"], 5);
    assert_eq!(events[2]["counts"]["masked"], 2, "{:?}", events[2]);
    assert_eq!(events[0]["subjects"][0]["record"], "shown");
    let text = gw.gateway.metrics().render();
    assert_eq!(
        metric(
            &text,
            "consentry_consent_refusals_total{purpose=\"marketing\",kind=\"record_dropped\",mode=\"report\"}"
        ),
        5.0
    );
    assert_eq!(
        metric(
            &text,
            "consentry_consent_refusals_total{purpose=\"marketing\",kind=\"request_refused\",mode=\"report\"}"
        ),
        1.0
    );
    assert_eq!(
        metric(
            &text,
            "consentry_requests_total{route=\"/crm/v3/objects/contacts/{id}\",decision=\"reported\""
        ),
        2.0
    );

    // The serving version explains itself, field by field.
    let e = admin(
        &gw,
        "GET",
        "/v1/policies/explain?method=GET&path=/crm/v3/objects/contacts/7&purpose=marketing",
        "",
        "",
    )
    .await;
    assert_eq!(e.status, 200, "{}", e.text());
    let e = e.json();
    assert_eq!(e["mode"], "report");
    assert_eq!(e["rule"]["purpose"], "marketing");
    let phone = e["fields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["selector"] == "$.properties.phone")
        .unwrap()
        .clone();
    assert_eq!(phone["action"], "remove");
    assert_eq!(
        admin(&gw, "GET", "/v1/policies/explain?method=GET", "", "")
            .await
            .status,
        400
    );

    // An erased customer stays suppressed in report mode too.
    let r = admin(&gw, "POST", "/v1/subjects/2/erase", "", "").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        get(&gw.url("/crm/v3/objects/contacts/2"), SUPPORT)
            .await
            .status,
        410
    );
    let v = get(&gw.url("/crm/v3/objects/contacts"), SUPPORT)
        .await
        .json();
    let ids: Vec<&str> = v["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["1", "3", "4", "5"]);
    gw.stop().await;
}

/// A CRM over TLS that speaks HTTP/2 and HTTP/1.1 (ALPN), requires a client
/// certificate from the test CA, and remembers each request's HTTP version.
async fn mtls_crm(pki: &Pki) -> (u16, Arc<std::sync::Mutex<Vec<http::Version>>>) {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(pki.ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .unwrap();
    let chain = CertificateDer::pem_file_iter(pki.dir.path().join("gateway.pem"))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let key = PrivateKeyDer::from_pem_file(pki.dir.path().join("gateway.key")).unwrap();
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let versions = Arc::clone(&seen);
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let (acceptor, seen) = (acceptor.clone(), Arc::clone(&seen));
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let svc =
                    hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        seen.lock().unwrap().push(req.version());
                        async move {
                            Ok::<_, std::convert::Infallible>(
                                consentry::demo::crm::Crm::default().answer(
                                    req.method(),
                                    req.uri().path(),
                                    req.uri().query(),
                                    b"",
                                ),
                            )
                        }
                    });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    (port, versions)
}

#[tokio::test]
async fn the_crm_over_http2_with_a_client_certificate() {
    let pki = pki();
    // The gateway's own client certificate for the CRM, from the CA.
    let (cert_der, key_der) = &pki.client;
    std::fs::write(
        pki.dir.path().join("to-crm.pem"),
        pem_of("CERTIFICATE", cert_der.as_ref()),
    )
    .unwrap();
    std::fs::write(
        pki.dir.path().join("to-crm.key"),
        pem_of("PRIVATE KEY", key_der.secret_der()),
    )
    .unwrap();
    let (port, versions) = mtls_crm(&pki).await;
    let url = format!("https://localhost:{port}");
    let gw = TestGateway::builder()
        .upstream(&url)
        .upstream_ca(&pki.dir.path().join("ca.pem"))
        .upstream_config(&format!(
            "  client_cert: {}\n  client_key: {}\n",
            pki.path("to-crm.pem"),
            pki.path("to-crm.key")
        ))
        .start()
        .await;
    let got = get(&gw.url("/crm/v3/objects/contacts/7"), SUPPORT).await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(*versions.lock().unwrap(), vec![http::Version::HTTP_2]);
    gw.stop().await;

    // Without the client certificate the CRM refuses the handshake.
    let gw = TestGateway::builder()
        .upstream(&url)
        .upstream_ca(&pki.dir.path().join("ca.pem"))
        .start()
        .await;
    let got = get(&gw.url("/crm/v3/objects/contacts/7"), SUPPORT).await;
    assert_eq!(got.status, 502, "{}", got.text());
    gw.stop().await;
}

fn pem_of(label: &str, der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut s = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        s.push_str(std::str::from_utf8(line).unwrap());
        s.push('\n');
    }
    s.push_str(&format!("-----END {label}-----\n"));
    s
}

#[tokio::test]
async fn http2_in_clear_by_prior_knowledge_gets_the_same_policy_and_limits() {
    let gw = TestGateway::builder()
        .config("limits: { request_body: 1KiB }")
        .start()
        .await;
    gw.crm
        .on("/crm/v3/objects/contacts/1", Reply::json(contact(1)));
    let client = h2c();
    let req = http::Request::get(gw.url("/crm/v3/objects/contacts/1"))
        .header("x-api-key", SUPPORT)
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    let resp = client.request(req).await.unwrap();
    assert_eq!(resp.version(), http::Version::HTTP_2);
    assert_eq!(resp.status(), 200);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert!(v["properties"]["phone"].as_str().unwrap().starts_with('*'));
    // The body limit holds on HTTP/2 too.
    let req = http::Request::post(gw.url("/crm/v3/objects/contacts"))
        .header("x-api-key", SUPPORT)
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(bytes::Bytes::from(vec![
            b' ';
            4096
        ])))
        .unwrap();
    let resp = client.request(req).await.unwrap();
    assert_eq!(resp.status(), 413);
    // Without a key: refused, as on HTTP/1.1.
    let req = http::Request::get(gw.url("/crm/v3/objects/contacts/1"))
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    assert_eq!(client.request(req).await.unwrap().status(), 401);
    gw.stop().await;
}

#[tokio::test]
async fn idle_connections_are_closed_but_not_while_a_request_is_answered() {
    // A response that streams (over 512 bytes) and pauses 700 ms mid-body:
    // longer than the idle timeout, yet the connection is busy.
    let gw = TestGateway::builder()
        .config("limits: { idle_timeout: 300ms, stream_after: 512 }")
        .start()
        .await;
    assert!(contact(1).len() / 2 > 512);
    gw.crm.on(
        "/crm/v3/objects/contacts/1",
        Reply {
            delay: Some(Duration::from_millis(700)),
            ..Reply::halves(contact(1))
        },
    );
    let client = h2c();
    let req = http::Request::get(gw.url("/crm/v3/objects/contacts/1"))
        .header("x-api-key", SUPPORT)
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    let resp = client.request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let got = resp.into_body().collect().await.unwrap().to_bytes();
    let v: serde_json::Value = serde_json::from_slice(&got).expect("the whole body arrived");
    assert_eq!(v["id"], "1");
    let open = || {
        metric(
            &gw.gateway.metrics().render(),
            "consentry_connections_open ",
        )
    };
    assert_eq!(open(), 1.0, "the client keeps its connection");
    // Idle now (the client answers HTTP/2 pings, which do not count).
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert_eq!(open(), 0.0, "the idle HTTP/2 connection was closed");
    gw.stop().await;
}

#[tokio::test]
async fn the_binary_reloads_on_sighup_and_drains_on_sigterm() {
    let crm = FakeCrm::start().await;
    crm.on("/crm/v3/objects/contacts/1", Reply::json(contact(1)));
    let (reply, hold) = Reply::held(contact(2));
    crm.on("/crm/v3/objects/contacts/2", reply);
    let (dir, port, mut child) = spawn_binary(&format!("http://{}", crm.addr));
    let policy = dir.path().join("policies/p.yaml");
    let original = example_policy();
    let pid = child.0.id().to_string();
    let one = format!("http://127.0.0.1:{port}/crm/v3/objects/contacts/1");
    let firstname = || async {
        let g = try_send("GET", &one, &[("x-api-key", SUPPORT)], b"").await?;
        (g.status == 200).then(|| g.json()["properties"]["firstname"].clone())
    };
    let mut up = None;
    for _ in 0..100 {
        up = firstname().await;
        if up.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        up.is_some_and(|f| f != "[REDACTED]"),
        "the gateway did not start"
    );

    // SIGHUP: the stricter policy serves.
    std::fs::write(&policy, original.replace(REDACT, STRICTER)).unwrap();
    let signal = |sig: &str| {
        let ok = std::process::Command::new("kill")
            .args([sig, &pid])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig}");
    };
    signal("-HUP");
    let mut reloaded = false;
    for _ in 0..100 {
        if firstname().await.is_some_and(|f| f == "[REDACTED]") {
            reloaded = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(reloaded, "SIGHUP did not reload");

    // SIGTERM while a request waits for the CRM.
    let two = format!("http://127.0.0.1:{port}/crm/v3/objects/contacts/2");
    let in_flight = tokio::spawn(async move { get(&two, SUPPORT).await });
    while !crm.seen().iter().any(|s| s.path.ends_with("/contacts/2")) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    signal("-TERM");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err(),
        "no new connections while draining"
    );
    hold.notify_one();
    let got = in_flight.await.unwrap();
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(got.json()["properties"]["firstname"], "[REDACTED]");
    let mut exited = None;
    for _ in 0..100 {
        if let Some(s) = child.0.try_wait().unwrap() {
            exited = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(exited.is_some_and(|s| s.success()), "{exited:?}");
}

/// HTTP/2 gets the same body checks: a content-length that disagrees with
/// the DATA frames never reaches the CRM.
#[tokio::test]
async fn http2_content_length_must_agree_with_the_body() {
    let gw = TestGateway::start().await;
    let tcp = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let (mut h2, conn) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let req = http::Request::patch(gw.url("/crm/v3/objects/contacts/1"))
        .header("x-api-key", SUPPORT)
        .header("content-type", "application/json")
        .header("content-length", "100")
        .body(())
        .unwrap();
    let (resp, mut body) = h2.send_request(req, false).unwrap();
    body.send_data(
        bytes::Bytes::from_static(b"{\"properties\":{\"firstname\":\"Ann\"}}"),
        true,
    )
    .unwrap();
    match resp.await {
        Err(e) => assert!(e.is_reset() || e.is_go_away() || e.is_io(), "{e:?}"),
        Ok(r) => assert!(r.status().is_client_error(), "{}", r.status()),
    }
    assert_eq!(gw.crm.count(), 0, "nothing reached the CRM");
    // The same request with a true length goes through.
    let tcp = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let (mut h2, conn) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let data = b"{\"properties\":{\"firstname\":\"Ann\"}}";
    let req = http::Request::patch(gw.url("/crm/v3/objects/contacts/1"))
        .header("x-api-key", SUPPORT)
        .header("content-type", "application/json")
        .header("content-length", data.len().to_string())
        .body(())
        .unwrap();
    let (resp, mut body) = h2.send_request(req, false).unwrap();
    body.send_data(bytes::Bytes::from_static(data), true)
        .unwrap();
    let status = resp.await.map(|r| r.status());
    assert_eq!(
        gw.crm.count(),
        1,
        "a true length reaches the CRM: {status:?}"
    );
    gw.stop().await;
}

#[tokio::test]
async fn a_request_in_flight_keeps_the_policy_it_started_with() {
    let gw = TestGateway::builder().admin().start().await;
    let (reply, hold) = Reply::held(contact(2));
    gw.crm.on("/crm/v3/objects/contacts/2", reply);
    gw.crm
        .on("/crm/v3/objects/contacts/3", Reply::json(contact(3)));
    let url = gw.url("/crm/v3/objects/contacts/2");
    let in_flight = tokio::spawn(async move { get(&url, SUPPORT).await });
    while gw.crm.count() == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // While it waits for the CRM, a stricter policy is loaded.
    let policy = gw.dir().join("policies/hubspot-contacts.yaml");
    let text = std::fs::read_to_string(&policy)
        .unwrap()
        .replace(REDACT, STRICTER);
    std::fs::write(&policy, text).unwrap();
    let r = admin(&gw, "POST", "/v1/policies/reload", "", "").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let now = get(&gw.url("/crm/v3/objects/contacts/3"), SUPPORT)
        .await
        .json();
    assert_eq!(
        now["properties"]["firstname"], "[REDACTED]",
        "new requests: new policy"
    );
    hold.notify_one();
    let old = in_flight.await.unwrap().json();
    assert_ne!(
        old["properties"]["firstname"], "[REDACTED]",
        "the one in flight: its own"
    );
    let ev = admin(&gw, "GET", "/v1/audit/events?kind=request", "", "")
        .await
        .json();
    let versions: Vec<(String, u64)> = ev["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["request_id"].as_str().unwrap().to_owned(),
                e["policy_version"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(versions.iter().map(|(_, v)| *v).collect::<Vec<_>>(), [2, 1]);
    gw.stop().await;
}

#[tokio::test]
async fn a_reload_cannot_add_clients_the_running_listener_cannot_identify() {
    // TLS is bound at start: a gateway started without client certificate
    // verification cannot take clients identified by certificate on reload.
    let pki = pki();
    let gw = TestGateway::builder().admin().start().await;
    let config = gw.dir().join("consentry.yaml");
    let text = std::fs::read_to_string(&config).unwrap();
    let changed = text.replacen(
        "clients:\n",
        "clients:\n  - { name: cert-desk, certificate: desk-cert, purposes: [essential.service] }\n",
        1,
    ) + &format!(
        "tls: {{ cert: {}, key: {}, client_ca: {} }}\n",
        pki.path("gateway.pem"),
        pki.path("gateway.key"),
        pki.path("ca.pem"),
    );
    assert_ne!(text, changed);
    std::fs::write(&config, changed).unwrap();
    let r = admin(&gw, "POST", "/v1/policies/reload", "", "").await;
    assert_eq!(r.status, 422, "{}", r.text());
    assert!(r.text().contains("restart to apply `tls`"), "{}", r.text());
}
