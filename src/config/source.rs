//! The configuration file as written (`consentry.yaml`). Every field is
//! documented in README.md, "Configuration reference".

use serde::Deserialize;
use serde_saphyr::Spanned;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// Data-plane listen address, e.g. `127.0.0.1:8080`.
    pub listen: Spanned<String>,
    /// Runtime worker threads (0: one per core).
    #[serde(default)]
    pub workers: Option<u32>,
    pub upstream: UpstreamSource,
    /// Policy folder, relative to this file.
    pub policies: Spanned<String>,
    #[serde(default)]
    pub keys: Option<KeysSource>,
    #[serde(default)]
    pub clients: Vec<ClientSource>,
    #[serde(default)]
    pub identity: Option<IdentitySource>,
    #[serde(default)]
    pub routes: Option<RoutesSource>,
    #[serde(default)]
    pub limits: Option<LimitsSource>,
    #[serde(default)]
    pub log: Option<LogSource>,
    #[serde(default)]
    pub storage: Option<StorageSource>,
    #[serde(default)]
    pub admin: Option<AdminSource>,
    /// Subject requests (access reports, erasure) and the CRM record they use.
    #[serde(default)]
    pub subjects: Option<SubjectsSource>,
    /// TLS on the data listener, and client certificates.
    #[serde(default)]
    pub tls: Option<TlsSource>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSource {
    /// Certificate chain (PEM), leaf first.
    pub cert: Spanned<String>,
    /// Private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: Spanned<String>,
    /// CA certificate(s) (PEM) that client certificates must chain to.
    #[serde(default)]
    pub client_ca: Option<Spanned<String>>,
    /// `required` (default with `client_ca`) or `optional` (clients without
    /// a certificate identify with an API key).
    #[serde(default)]
    pub client_auth: Option<Spanned<String>>,
    /// How long a TLS handshake may take (default 10s).
    #[serde(default)]
    pub handshake_timeout: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageSource {
    /// The SQLite file (consent, later audit and keys), relative to this file;
    /// default `consentry.db` beside it. Created on first start.
    #[serde(default)]
    pub sqlite: Option<Spanned<String>>,
    /// The audit trail's SQLite file, relative to this file (default
    /// `audit.db` beside `sqlite`), or `off`.
    #[serde(default)]
    pub audit: Option<Spanned<String>>,
    /// How long audit events are kept (`400d`); older ones are pruned
    /// behind a signed checkpoint. Default: kept for ever.
    #[serde(default)]
    pub audit_retention: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubjectsSource {
    /// The CRM path of one customer's record, with `{id}`
    /// (`/crm/v3/objects/contacts/{id}`).
    #[serde(default)]
    pub record: Option<Spanned<String>>,
    /// The purpose whose rule renders that record in access reports.
    #[serde(default)]
    pub access_purpose: Option<Spanned<String>>,
    /// Send `DELETE <record>` to the CRM on erasure.
    #[serde(default)]
    pub forward_erasure: Option<Spanned<bool>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSource {
    /// Admin API address (default `127.0.0.1:8081`); `${VAR}` allowed.
    #[serde(default)]
    pub listen: Option<Spanned<String>>,
    /// Bearer token of the admin API (at least 24 characters); `${VAR}` allowed.
    pub token: Spanned<String>,
    /// A read-only token for auditors (audit queries, verification, access
    /// reports); `${VAR}` allowed.
    #[serde(default)]
    pub auditor_token: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamSource {
    /// `http://host:port[/prefix]` or `https://...`; `${VAR}` allowed.
    pub url: Spanned<String>,
    /// Extra CA certificate(s) (PEM) to trust besides the system roots.
    #[serde(default)]
    pub ca_file: Option<Spanned<String>>,
    /// Client certificate (PEM) presented to the CRM (mutual TLS).
    #[serde(default)]
    pub client_cert: Option<Spanned<String>>,
    /// Its private key (PEM).
    #[serde(default)]
    pub client_key: Option<Spanned<String>>,
    /// Headers added to every upstream request (credentials); `${VAR}` allowed.
    #[serde(default)]
    pub headers: Vec<HeaderSource>,
    /// Send `X-Forwarded-For` and `X-Forwarded-Proto` (default true).
    #[serde(default)]
    pub forwarded_headers: Option<bool>,
    #[serde(default)]
    pub timeouts: Option<TimeoutsSource>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderSource {
    pub name: Spanned<String>,
    pub value: Spanned<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeoutsSource {
    /// TCP + TLS connect (default 5s).
    #[serde(default)]
    pub connect: Option<Spanned<String>>,
    /// Until the upstream's response head arrives (default 30s).
    #[serde(default)]
    pub response: Option<Spanned<String>>,
    /// Longest pause between two body chunks (default 30s).
    #[serde(default)]
    pub body_idle: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeysSource {
    /// Key of the `hash` action (at least 16 bytes); `${VAR}` allowed.
    #[serde(default)]
    pub hash_key: Option<Spanned<String>>,
    /// A file holding that key (alternative to `hash_key`).
    #[serde(default)]
    pub hash_key_file: Option<Spanned<String>>,
    /// The master key ring file (0600), for encryption at rest.
    #[serde(default)]
    pub master_key_file: Option<Spanned<String>>,
    /// The master key ring itself (alternative to the file); `${VAR}` allowed.
    #[serde(default)]
    pub master_key: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientSource {
    pub name: Spanned<String>,
    /// SHA-256 of the client's API key, hex (`consentry client new-key` prints one).
    #[serde(default)]
    pub api_key_sha256: Option<Spanned<String>>,
    /// A name in the client's TLS certificate (subject CN, or a DNS, URI or
    /// email subject alternative name): that certificate identifies it.
    #[serde(default)]
    pub certificate: Option<Spanned<String>>,
    /// Data uses this client may declare.
    pub purposes: Vec<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentitySource {
    /// Header carrying the API key (default `X-Api-Key`).
    #[serde(default)]
    pub api_key_header: Option<Spanned<String>>,
    /// Header carrying the purpose (default `X-Purpose`).
    #[serde(default)]
    pub purpose_header: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutesSource {
    /// `deny` (default): 403 for requests no resource matches; `passthrough`: forward unread.
    #[serde(default)]
    pub unmatched: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsSource {
    #[serde(default)]
    pub request_body: Option<Spanned<String>>,
    #[serde(default)]
    pub response_body: Option<Spanned<String>>,
    #[serde(default)]
    pub decompressed_body: Option<Spanned<String>>,
    #[serde(default)]
    pub record: Option<Spanned<String>>,
    #[serde(default)]
    pub stream_after: Option<Spanned<String>>,
    #[serde(default)]
    pub header_bytes: Option<Spanned<String>>,
    #[serde(default)]
    pub max_headers: Option<Spanned<u32>>,
    #[serde(default)]
    pub header_read_timeout: Option<Spanned<String>>,
    #[serde(default)]
    pub json_depth: Option<Spanned<u32>>,
    /// Client connections open at once (default 10000); more are closed.
    #[serde(default)]
    pub max_connections: Option<Spanned<u32>>,
    /// Concurrent HTTP/2 streams per connection (default 256).
    #[serde(default)]
    pub max_streams: Option<Spanned<u32>>,
    /// A connection with no request being answered (response bodies
    /// included; HTTP/2 pings do not count) for this long is closed
    /// (default 60s).
    #[serde(default)]
    pub idle_timeout: Option<Spanned<String>>,
    /// On SIGTERM, requests in flight get this long to finish (default 10s).
    #[serde(default)]
    pub shutdown_drain: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSource {
    /// `text` (default) or `json`.
    #[serde(default)]
    pub format: Option<Spanned<String>>,
    /// A tracing filter, e.g. `info` or `consentry=debug` (default `info`).
    #[serde(default)]
    pub level: Option<Spanned<String>>,
    /// One line per request (default true).
    #[serde(default)]
    pub access: Option<bool>,
}
