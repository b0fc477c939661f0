//! The CRM over HTTPS: a configured CA is trusted, and without it the
//! handshake fails closed. Certificates are made in the test (rcgen).

use std::sync::Arc;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::TcpListener;

use crate::harness::*;

/// A CA, and a server certificate for `localhost` signed by it.
fn certificates() -> (String, CertificateDer<'static>, PrivateKeyDer<'static>) {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, &ca_key);
    let server_key = KeyPair::generate().unwrap();
    let server_cert = CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&server_key, &issuer)
        .unwrap();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key.serialize_der()));
    (ca_cert.pem(), server_cert.der().clone(), key)
}

/// The sample CRM, over TLS, on 127.0.0.1 port 0.
async fn tls_crm(cert: CertificateDer<'static>, key: PrivateKeyDer<'static>) -> u16 {
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![cert], key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let svc = service_fn(|req: http::Request<hyper::body::Incoming>| async move {
                    Ok::<_, std::convert::Infallible>(consentry::demo::crm::Crm::default().answer(
                        req.method(),
                        req.uri().path(),
                        req.uri().query(),
                        b"",
                    ))
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    port
}

#[tokio::test]
async fn an_https_crm_with_a_configured_ca() {
    let (ca_pem, cert, key) = certificates();
    let port = tls_crm(cert, key).await;
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, ca_pem).unwrap();
    let url = format!("https://localhost:{port}");

    let gw = TestGateway::builder()
        .grant("7", "marketing")
        .upstream(&url)
        .upstream_ca(&ca)
        .start()
        .await;
    let got = get(&gw.url("/crm/v3/objects/contacts/7"), MARKETING).await;
    assert_eq!(got.status, 200, "{}", got.text());
    let props = got.json()["properties"].as_object().unwrap().clone();
    assert!(
        props.contains_key("email") && !props.contains_key("phone"),
        "{props:?}"
    );

    // Without the CA, the CRM's certificate is not trusted: nothing is served.
    let untrusted = TestGateway::builder().upstream(&url).start().await;
    let got = get(&untrusted.url("/crm/v3/objects/contacts/7"), MARKETING).await;
    assert_eq!(
        (got.status, got.problem().as_str()),
        (502, "upstream-unavailable")
    );
}
