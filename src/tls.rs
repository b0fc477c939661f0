//! TLS on the data listener (rustls, TLS 1.2 and 1.3 only, ALPN `h2` and
//! `http/1.1`), with optional client-certificate verification. A verified
//! certificate's names (its DNS, URI and email alternative names; its
//! subject CN only when it has none) reach the data path as a request
//! extension; `clients[].certificate` maps one of them to a client.

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;

use crate::config::Tls;

/// The names of the client certificate a connection presented and rustls
/// verified against `tls.client_ca`.
#[derive(Debug, Clone)]
pub struct ClientCertificate(pub Arc<Vec<String>>);

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn certs(path: &std::path::Path, what: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("cannot read the {what} {}: {e}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("bad certificate in {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("no certificate in {} ({what})", path.display()));
    }
    Ok(certs)
}

fn key(path: &std::path::Path) -> Result<PrivateKeyDer<'static>, String> {
    // The message names the file, never its contents.
    PrivateKeyDer::from_pem_file(path)
        .map_err(|e| format!("cannot read a private key from {}: {e}", path.display()))
}

/// Adds the CA certificates of `path` to `roots`.
pub fn add_roots(
    roots: &mut rustls::RootCertStore,
    path: &std::path::Path,
    what: &str,
) -> Result<(), String> {
    for c in certs(path, what)? {
        roots
            .add(c)
            .map_err(|e| format!("unusable CA certificate in {}: {e}", path.display()))?;
    }
    Ok(())
}

/// The listener's rustls configuration, or what is wrong with the files.
pub fn server_config(tls: &Tls) -> Result<Arc<rustls::ServerConfig>, String> {
    let chain = certs(&tls.cert, "certificate file")?;
    let key = key(&tls.key)?;
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| format!("TLS setup: {e}"))?;
    let builder = match &tls.client_ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            add_roots(&mut roots, ca, "client CA file")?;
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider());
            let verifier = if tls.client_auth_required {
                verifier
            } else {
                verifier.allow_unauthenticated()
            };
            let verifier = verifier
                .build()
                .map_err(|e| format!("client certificate verification: {e}"))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(chain, key).map_err(|e| {
        format!(
            "the key in {} does not fit the certificate in {}: {e}",
            tls.key.display(),
            tls.cert.display()
        )
    })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The client configuration's certificate for the CRM (mutual TLS).
pub fn client_identity(
    cert: &std::path::Path,
    key_file: &std::path::Path,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), String> {
    Ok((certs(cert, "upstream client certificate")?, key(key_file)?))
}

/// The names of a verified end-entity certificate: its DNS, URI and email
/// alternative names; the subject's common name only when it has none (as
/// RFC 6125 has it: a CA that lets holders pick a CN beside vetted
/// alternative names must not let that CN name a client).
pub fn certificate_names(cert: &CertificateDer<'_>) -> Vec<String> {
    use x509_parser::extensions::GeneralName;
    let Ok((_, parsed)) = x509_parser::parse_x509_certificate(cert.as_ref()) else {
        return Vec::new();
    };
    let mut names = Vec::new();
    if let Ok(Some(san)) = parsed.subject_alternative_name() {
        for n in &san.value.general_names {
            match n {
                GeneralName::DNSName(s) | GeneralName::URI(s) | GeneralName::RFC822Name(s) => {
                    names.push((*s).to_owned())
                }
                _ => {}
            }
        }
    }
    if names.is_empty() {
        names = parsed
            .subject()
            .iter_common_name()
            .filter_map(|cn| cn.as_str().ok().map(str::to_owned))
            .collect();
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_come_from_the_subject_and_alternative_names() {
        let mut params =
            rcgen::CertificateParams::new(vec!["desk.example.com".to_owned()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "support-desk");
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        // With alternative names, the CN does not count.
        assert_eq!(certificate_names(cert.der()), vec!["desk.example.com"]);
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "support-desk");
        let cert = params.self_signed(&key).unwrap();
        assert_eq!(certificate_names(cert.der()), vec!["support-desk"]);
        assert!(certificate_names(&CertificateDer::from(vec![1, 2, 3])).is_empty());
    }
}
