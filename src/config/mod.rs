//! Configuration: one YAML file, compiled (with its policy folder) into the
//! immutable values the gateway runs with.
//!
//! `load` checks everything and reports every problem with file and line,
//! policies included, so that a bad config never starts. Secrets (upstream
//! credentials, the hash key) are expanded from the environment here and
//! never printed: their types redact `Debug`.

pub mod env;
pub mod source;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue, Uri};
use serde_saphyr::{Location, Spanned};
use zeroize::Zeroizing;

use crate::keys::master::MasterKeys;

use crate::diag::{Report, at, parse_yaml};
use crate::policy::{self, PolicySet, taxonomy};
use crate::transform::HashKey;
use source::ConfigFile;

/// Everything the gateway needs, validated.
#[derive(Debug, Clone)]
pub struct Config {
    pub file: PathBuf,
    pub listen: SocketAddr,
    /// Runtime worker threads; 0 means one per core.
    pub workers: usize,
    pub upstream: Upstream,
    pub policies_dir: PathBuf,
    pub clients: Arc<Clients>,
    pub identity: Identity,
    pub unmatched: Unmatched,
    pub limits: Limits,
    pub log: Log,
    pub hash_key: Option<Arc<HashKey>>,
    /// The master key ring (encryption at rest), if configured.
    pub master_keys: Option<Arc<MasterKeys>>,
    /// Where the ring was read from (`keys.master_key_file`); rotation writes it.
    pub master_key_file: Option<PathBuf>,
    /// The SQLite store's file.
    pub sqlite: PathBuf,
    /// The admin API; `None` when the config has no `admin` section.
    pub admin: Option<Admin>,
    /// The audit trail's file; `None` when `storage.audit: off`.
    pub audit: Option<PathBuf>,
    /// Audit events older than this are pruned (`storage.audit_retention`).
    pub audit_retention: Option<Duration>,
    /// Subject requests: the CRM record they read and delete.
    pub subjects: Subjects,
    /// TLS on the data listener (`tls:`); plain HTTP without it.
    pub tls: Option<Tls>,
    /// SHA-256 of each top-level section as written (its YAML value), so a
    /// reload can name what changed since start without keeping the text.
    pub sections: BTreeMap<String, [u8; 32]>,
}

/// TLS on the data listener.
#[derive(Debug, Clone)]
pub struct Tls {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Client certificates must chain to these CAs.
    pub client_ca: Option<PathBuf>,
    /// Without a client certificate, the handshake fails.
    pub client_auth_required: bool,
    pub handshake_timeout: Duration,
}

/// Subject requests' view of the CRM (`subjects:`).
#[derive(Debug, Clone, Default)]
pub struct Subjects {
    /// A customer's record in the CRM, `{id}` in place of the id.
    pub record: Option<String>,
    /// The purpose whose rule renders it in access reports.
    pub access_purpose: Option<Arc<str>>,
    /// Erasure sends `DELETE <record>` to the CRM.
    pub forward_erasure: bool,
}

impl Subjects {
    /// The record's path for `id` (percent-encoded into one segment).
    pub fn record_path(&self, id: &str) -> Option<String> {
        let enc = percent_encoding::utf8_percent_encode(id, percent_encoding::NON_ALPHANUMERIC);
        Some(self.record.as_ref()?.replace("{id}", &enc.to_string()))
    }
}

/// The admin API's listener and credentials.
#[derive(Debug, Clone)]
pub struct Admin {
    pub listen: SocketAddr,
    pub token: AdminToken,
    /// Read-only: audit queries, verification, access reports.
    pub auditor: Option<AdminToken>,
}

/// The admin bearer token. Zeroised on drop; never printed; compared in
/// constant time.
#[derive(Clone)]
pub struct AdminToken(Arc<Zeroizing<Vec<u8>>>);

impl AdminToken {
    /// The shortest token accepted.
    pub const MIN_LEN: usize = 24;

    pub fn new(token: &str) -> Option<AdminToken> {
        (token.len() >= Self::MIN_LEN && token.bytes().all(|b| b.is_ascii_graphic()))
            .then(|| AdminToken(Arc::new(Zeroizing::new(token.as_bytes().to_vec()))))
    }

    /// The token itself, for a client of the admin API (the CLI). Zeroised on drop.
    pub fn expose_for_client(&self) -> Zeroizing<String> {
        Zeroizing::new(String::from_utf8_lossy(self.0.as_slice()).into_owned())
    }

    /// Whether `presented` is the token, in time independent of where they differ.
    pub fn matches(&self, presented: &[u8]) -> bool {
        use sha2::Digest;
        use subtle::ConstantTimeEq;
        // Hash both sides first, so that the length of the token is not
        // revealed by how long the comparison takes either.
        let a = sha2::Sha256::digest(presented);
        let b = sha2::Sha256::digest(self.0.as_slice());
        bool::from(a.ct_eq(&b))
    }
}

impl fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AdminToken(<redacted>)")
    }
}

#[derive(Debug, Clone)]
pub struct Upstream {
    /// Scheme and authority of the CRM, plus an optional path prefix.
    pub scheme: http::uri::Scheme,
    pub authority: http::uri::Authority,
    pub prefix: String,
    pub ca_file: Option<PathBuf>,
    /// Certificate and key presented to the CRM (mutual TLS).
    pub client_cert: Option<(PathBuf, PathBuf)>,
    /// Credentials and other headers set on every upstream request (marked sensitive).
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub forwarded_headers: bool,
    pub connect_timeout: Duration,
    pub response_timeout: Duration,
    pub body_idle_timeout: Duration,
}

/// A caller of the gateway.
pub struct Client {
    pub name: Arc<str>,
    key_sha256: Option<[u8; 32]>,
    /// The name in its TLS client certificate that identifies it.
    pub certificate: Option<Arc<str>>,
    pub purposes: Vec<Arc<str>>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("name", &self.name)
            .field("purposes", &self.purposes)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Default)]
pub struct Clients {
    list: Vec<Client>,
}

impl Clients {
    /// The client whose key hashes to the presented key's hash. Compares
    /// against every client in constant time, whatever matches.
    pub fn identify(&self, presented: &[u8]) -> Option<&Client> {
        use sha2::Digest;
        use subtle::ConstantTimeEq;
        let digest: [u8; 32] = sha2::Sha256::digest(presented).into();
        let mut found = None;
        for c in &self.list {
            if let Some(k) = &c.key_sha256
                && bool::from(k.ct_eq(&digest))
            {
                found = Some(c);
            }
        }
        found
    }

    /// The client whose `certificate` is one of `names` (a verified client
    /// certificate's subject CN and alternative names).
    /// A certificate whose names match more than one client names none.
    pub fn by_certificate(&self, names: &[String]) -> Option<&Client> {
        let mut found = self.list.iter().filter(|c| {
            c.certificate
                .as_deref()
                .is_some_and(|want| names.iter().any(|n| n == want))
        });
        let first = found.next()?;
        if found.next().is_some() {
            tracing::warn!("a client certificate names more than one client: it identifies none");
            return None;
        }
        Some(first)
    }

    /// Whether any client is identified by its TLS client certificate.
    pub fn by_certificates(&self) -> bool {
        self.list.iter().any(|c| c.certificate.is_some())
    }

    pub fn len(&self) -> usize {
        self.list.len()
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }
}

/// The hex SHA-256 of an API key, as written in `clients[].api_key_sha256`.
pub fn api_key_hash(key: &str) -> String {
    use sha2::Digest;
    hex(&sha2::Sha256::digest(key.as_bytes()))
}

/// Bytes from lower- or upper-case hex; `None` if it is not hex.
pub fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

pub fn hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    bytes
        .iter()
        .flat_map(|b| {
            [
                HEX[(b >> 4) as usize] as char,
                HEX[(b & 15) as usize] as char,
            ]
        })
        .collect()
}

#[derive(Debug, Clone)]
pub struct Identity {
    pub api_key_header: HeaderName,
    pub purpose_header: HeaderName,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unmatched {
    Deny,
    Passthrough,
}

#[derive(Debug, Clone)]
pub struct Limits {
    pub request_body: u64,
    pub response_body: u64,
    pub decompressed_body: u64,
    pub record: usize,
    /// Responses up to this size are checked whole before the first byte is
    /// sent (so any problem becomes a clean 502); larger ones stream.
    pub stream_after: usize,
    pub header_bytes: usize,
    pub max_headers: usize,
    pub header_read_timeout: Duration,
    pub json_depth: usize,
    pub max_connections: usize,
    pub max_streams: u32,
    pub idle_timeout: Duration,
    pub shutdown_drain: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            request_body: 10 << 20,
            response_body: 256 << 20,
            decompressed_body: 256 << 20,
            record: 8 << 20,
            stream_after: 256 << 10,
            header_bytes: 32 << 10,
            max_headers: 100,
            header_read_timeout: Duration::from_secs(10),
            json_depth: 64,
            max_connections: 10_000,
            max_streams: 256,
            idle_timeout: Duration::from_secs(60),
            shutdown_drain: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone)]
pub struct Log {
    pub format: LogFormat,
    pub level: String,
    pub access: bool,
}

/// Parses `512`, `64KiB`, `10MiB`, `1GiB` (also KB/MB/GB as powers of 1000).
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().ok()?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" | "k" | "K" => 1 << 10,
        "MiB" | "M" => 1 << 20,
        "GiB" | "G" => 1 << 30,
        "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        _ => return None,
    };
    n.checked_mul(mult)
}

/// Parses `250ms`, `5s`, `2m`, `12h`, `400d`.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().ok()?;
    match unit.trim() {
        "ms" => Some(Duration::from_millis(n)),
        "s" => Some(Duration::from_secs(n)),
        "m" => Some(Duration::from_secs(n.checked_mul(60)?)),
        "h" => Some(Duration::from_secs(n.checked_mul(3600)?)),
        "d" => Some(Duration::from_secs(n.checked_mul(86_400)?)),
        _ => None,
    }
}

/// Loads the config file and its policies. Returns the warnings too.
pub fn load(path: &Path) -> Result<(Config, PolicySet, Report), Report> {
    load_with_env(path, |n| std::env::var(n).ok())
}

/// `load`, with `${VAR}` looked up through `env`.
pub fn load_with_env(
    path: &Path,
    env: impl Fn(&str) -> Option<String>,
) -> Result<(Config, PolicySet, Report), Report> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        let mut r = Report::default();
        r.error(
            path,
            Location::UNKNOWN,
            format!("cannot read the config file: {e}"),
            None,
        );
        r
    })?;
    load_str(path, &text, env)
}

/// SHA-256 of each top-level section's value (as JSON) in `text`.
pub(crate) fn section_digests(text: &str) -> BTreeMap<String, [u8; 32]> {
    use sha2::Digest;
    match serde_saphyr::from_str::<serde_json::Value>(text) {
        Ok(serde_json::Value::Object(m)) => m
            .into_iter()
            .map(|(k, v)| (k, sha2::Sha256::digest(v.to_string()).into()))
            .collect(),
        _ => BTreeMap::new(),
    }
}

/// The master key file the config at `path` names, if it names one and
/// can be read (for `consentry demo`, which makes the file on first run,
/// and `consentry keys rotate`).
pub fn master_key_file(path: &Path) -> Option<PathBuf> {
    let text = std::fs::read_to_string(path).ok()?;
    let src: ConfigFile = parse_yaml(path, &text).ok()?;
    let f = src.keys?.master_key_file?;
    let p = Path::new(&f.value);
    Some(if p.is_absolute() {
        p.to_path_buf()
    } else {
        path.parent().map_or_else(|| p.to_path_buf(), |d| d.join(p))
    })
}

/// `load` from text, with an injectable environment (for tests).
pub fn load_str(
    path: &Path,
    text: &str,
    env: impl Fn(&str) -> Option<String>,
) -> Result<(Config, PolicySet, Report), Report> {
    let src: ConfigFile = parse_yaml(path, text).map_err(|d| Report { items: vec![d] })?;
    let mut b = Builder {
        file: path,
        r: Report::default(),
        env: &env,
    };
    let config = b.build(&src);
    let Builder { mut r, .. } = b;
    let Some(mut config) = config else {
        r.sort();
        return Err(r);
    };
    config.sections = section_digests(text);
    let opts = policy::Options {
        hash_key: config.hash_key.clone(),
        require_hash_key: true,
        has_master_key: config.master_keys.is_some(),
        require_master_key: true,
    };
    match policy::load_dir(&config.policies_dir, &opts) {
        Ok((set, warnings)) => {
            // Client purposes must exist in the vocabulary the policies use.
            for (client, cs) in config.clients.list.iter().zip(&src.clients) {
                for (p, ps) in client.purposes.iter().zip(&cs.purposes) {
                    if !set.knows_purpose(p) {
                        let hint = taxonomy::suggest(taxonomy::Kind::Use, p)
                            .map(|s| format!("did you mean `{s}`?"))
                            .or(Some("use a fideslang data use, or one a policy declares under `purposes:`".into()));
                        r.error(
                            path,
                            at(ps),
                            format!("client `{}`: unknown purpose `{p}`", client.name),
                            hint,
                        );
                    }
                }
            }
            r.extend(warnings);
            r.sort();
            if r.has_errors() {
                return Err(r);
            }
            Ok((config, set, r))
        }
        Err(policy_report) => {
            r.extend(policy_report);
            r.sort();
            Err(r)
        }
    }
}

struct Builder<'a> {
    file: &'a Path,
    r: Report,
    env: &'a dyn Fn(&str) -> Option<String>,
}

impl Builder<'_> {
    fn err(&mut self, s: Location, msg: impl Into<String>, hint: Option<&str>) {
        self.r.error(self.file, s, msg, hint.map(str::to_owned));
    }

    /// Expands `${VAR}` in a spanned string; reports a failure.
    fn expand(&mut self, s: &Spanned<String>) -> Option<String> {
        match env::expand(&s.value, self.env) {
            Ok(v) => Some(v),
            Err(e) => {
                self.err(
                    at(s),
                    e,
                    Some("export the variable before starting, or give a default: ${NAME:-value}"),
                );
                None
            }
        }
    }

    fn size(&mut self, s: &Option<Spanned<String>>, default: u64) -> u64 {
        let Some(s) = s else { return default };
        match parse_size(&s.value) {
            Some(v) if v > 0 => v,
            _ => {
                self.err(
                    at(s),
                    format!("`{}` is not a size", s.value),
                    Some("write bytes or a unit: 512, 64KiB, 10MiB, 1GiB"),
                );
                default
            }
        }
    }

    fn duration(&mut self, s: &Option<Spanned<String>>, default: Duration) -> Duration {
        let Some(s) = s else { return default };
        match parse_duration(&s.value) {
            Some(v) if !v.is_zero() => v,
            _ => {
                self.err(
                    at(s),
                    format!("`{}` is not a duration", s.value),
                    Some("write 250ms, 5s or 2m"),
                );
                default
            }
        }
    }

    fn header_name(&mut self, s: &Spanned<String>) -> Option<HeaderName> {
        match HeaderName::from_bytes(s.value.as_bytes()) {
            Ok(h) => Some(h),
            Err(_) => {
                self.err(at(s), format!("`{}` is not a header name", s.value), None);
                None
            }
        }
    }

    fn relative(&self, p: &str) -> PathBuf {
        let p = Path::new(p);
        if p.is_absolute() {
            return p.to_path_buf();
        }
        self.file
            .parent()
            .map_or_else(|| p.to_path_buf(), |d| d.join(p))
    }

    fn build(&mut self, src: &ConfigFile) -> Option<Config> {
        let listen = self
            .expand(&src.listen)
            .and_then(|l| match l.parse::<SocketAddr>() {
                Ok(a) => Some(a),
                Err(_) => {
                    self.err(
                        at(&src.listen),
                        format!("`{l}` is not an address"),
                        Some("write host:port with an IP, e.g. 127.0.0.1:8080"),
                    );
                    None
                }
            });
        let upstream = self.upstream(&src.upstream);
        let policies_dir = self.relative(&src.policies.value);
        let hash_key = self.hash_key(src.keys.as_ref());
        let master_keys = self.master_keys(src.keys.as_ref());
        let master_key_file = src
            .keys
            .as_ref()
            .and_then(|k| k.master_key_file.as_ref())
            .map(|f| self.relative(&f.value));
        let clients = self.clients(&src.clients);
        let identity = self.identity(src.identity.as_ref());
        let unmatched = match src.routes.as_ref().and_then(|r| r.unmatched.as_ref()) {
            None => Unmatched::Deny,
            Some(s) if s.value == "deny" => Unmatched::Deny,
            Some(s) if s.value == "passthrough" => Unmatched::Passthrough,
            Some(s) => {
                self.err(
                    at(s),
                    format!("unknown `unmatched` behaviour `{}`", s.value),
                    Some("write `deny` or `passthrough`"),
                );
                Unmatched::Deny
            }
        };
        let limits = self.limits(src.limits.as_ref());
        let log = self.log(src.log.as_ref());
        let sqlite = match src.storage.as_ref().and_then(|s| s.sqlite.as_ref()) {
            Some(p) => self.expand(p).map(|p| self.relative(&p)),
            None => Some(self.relative("consentry.db")),
        };
        let admin = src.admin.as_ref().and_then(|a| self.admin(a));
        let audit = match src.storage.as_ref().and_then(|s| s.audit.as_ref()) {
            Some(a) if a.value.trim() == "off" => None,
            Some(a) => self.expand(a).map(|p| self.relative(&p)),
            None => sqlite.as_ref().map(|s| s.with_file_name("audit.db")),
        };
        let retention = src
            .storage
            .as_ref()
            .and_then(|s| s.audit_retention.as_ref());
        let audit_retention = retention.map(|r| self.duration(&Some(r.clone()), Duration::ZERO));
        if let (Some(r), None) = (retention, &audit) {
            self.err(
                at(r),
                "`audit_retention` without an audit trail",
                Some("remove it, or turn the audit trail on"),
            );
        }
        let subjects = src
            .subjects
            .as_ref()
            .map(|s| self.subjects(s))
            .unwrap_or_default();
        if audit.is_some() && hash_key.is_none() {
            let l = src
                .storage
                .as_ref()
                .and_then(|s| s.audit.as_ref())
                .map_or(Location::UNKNOWN, at);
            self.err(
                l,
                "the audit trail records customers as keyed pseudonyms, and no `keys.hash_key` is set",
                Some("set `keys.hash_key` (16+ random bytes, e.g. from an environment variable), or `storage.audit: off`"),
            );
        }
        let tls = src.tls.as_ref().map(|t| self.tls(t));
        if tls.as_ref().is_none_or(|t| t.client_ca.is_none())
            && let Some(c) = src.clients.iter().find_map(|c| c.certificate.as_ref())
        {
            self.err(
                at(c),
                "a client identified by its certificate, but no `tls.client_ca` verifies client certificates",
                Some("set `tls.cert`, `tls.key` and `tls.client_ca`, or give the client an `api_key_sha256`"),
            );
        }
        if self.r.has_errors() {
            return None;
        }
        Some(Config {
            file: self.file.to_path_buf(),
            listen: listen?,
            workers: src.workers.unwrap_or(0).min(256) as usize,
            upstream: upstream?,
            policies_dir,
            clients: Arc::new(clients),
            identity,
            unmatched,
            limits,
            log,
            hash_key,
            master_keys,
            master_key_file,
            sqlite: sqlite?,
            audit_retention,
            subjects,
            admin,
            audit,
            tls,
            sections: BTreeMap::new(),
        })
    }

    /// A path relative to the config file that must name a file.
    fn existing(&mut self, s: &Spanned<String>, what: &str) -> PathBuf {
        let p = self.relative(&s.value);
        if !p.is_file() {
            self.err(
                at(s),
                format!("{what} {} does not exist", p.display()),
                None,
            );
        }
        p
    }

    fn tls(&mut self, t: &source::TlsSource) -> Tls {
        let client_ca = t
            .client_ca
            .as_ref()
            .map(|c| self.existing(c, "client CA file"));
        let client_auth_required = match &t.client_auth {
            None => true,
            Some(s) if s.value == "required" => true,
            Some(s) if s.value == "optional" => false,
            Some(s) => {
                self.err(
                    at(s),
                    format!("unknown `client_auth` `{}`", s.value),
                    Some("write `required` or `optional`"),
                );
                true
            }
        };
        if let (Some(s), None) = (&t.client_auth, &client_ca) {
            self.err(
                at(s),
                "`client_auth` without `client_ca`",
                Some("name the CA that client certificates must chain to"),
            );
        }
        Tls {
            cert: self.existing(&t.cert, "certificate file"),
            key: self.existing(&t.key, "key file"),
            client_ca,
            client_auth_required,
            handshake_timeout: self.duration(&t.handshake_timeout, Duration::from_secs(10)),
        }
    }

    fn subjects(&mut self, s: &source::SubjectsSource) -> Subjects {
        let record = s.record.as_ref().and_then(|r| {
            let v = self.expand(r)?;
            if !v.starts_with('/') || v.matches("{id}").count() != 1 || v.contains('?') {
                self.err(
                    at(r),
                    format!("`{v}` is not a record path"),
                    Some("write the CRM path of one record with `{id}` once, e.g. /crm/v3/objects/contacts/{id}"),
                );
                return None;
            }
            Some(v)
        });
        let needs_record = |x: &Spanned<bool>| x.value && record.is_none();
        if let Some(f) = s.forward_erasure.as_ref().filter(|f| needs_record(f)) {
            self.err(
                at(f),
                "`forward_erasure` needs `record`",
                Some("set `subjects.record` to the CRM path of one record"),
            );
        }
        if let (Some(p), None) = (&s.access_purpose, &record) {
            self.err(
                at(p),
                "`access_purpose` needs `record`",
                Some("set `subjects.record` to the CRM path of one record"),
            );
        }
        Subjects {
            access_purpose: s
                .access_purpose
                .as_ref()
                .map(|p| Arc::from(p.value.as_str())),
            forward_erasure: s.forward_erasure.as_ref().is_some_and(|f| f.value),
            record,
        }
    }

    fn admin(&mut self, a: &source::AdminSource) -> Option<Admin> {
        let listen = match &a.listen {
            None => Some(SocketAddr::from(([127, 0, 0, 1], 8081))),
            Some(l) => self
                .expand(l)
                .and_then(|v| match v.parse::<SocketAddr>() {
                    Ok(addr) => {
                        if !addr.ip().is_loopback() {
                            self.r.warning(self.file, at(l), format!(
                                "the admin API listens on {addr}, beyond this machine"
                            ), Some("keep it on 127.0.0.1 unless a TLS-terminating proxy or a private network protects it".into()));
                        }
                        Some(addr)
                    }
                    Err(_) => {
                        self.err(
                            at(l),
                            format!("`{v}` is not an address"),
                            Some("write host:port with an IP, e.g. 127.0.0.1:8081"),
                        );
                        None
                    }
                }),
        };
        let token = self.expand(&a.token).and_then(|t| {
            let tok = AdminToken::new(&t);
            if tok.is_none() {
                self.err(
                    at(&a.token),
                    format!(
                        "the admin token must be at least {} printable characters without spaces",
                        AdminToken::MIN_LEN
                    ),
                    Some("use a random token from an environment variable, e.g. `token: ${CONSENTRY_ADMIN_TOKEN}` with `openssl rand -hex 32`"),
                );
            }
            tok
        });
        let auditor = a.auditor_token.as_ref().and_then(|t| {
            // Empty (`${CONSENTRY_AUDITOR_TOKEN:-}` unset): no auditor access.
            let v = self.expand(t).filter(|v| !v.is_empty())?;
            let tok = AdminToken::new(&v);
            if tok.is_none() {
                self.err(
                    at(t),
                    format!("the auditor token must be at least {} printable characters without spaces", AdminToken::MIN_LEN),
                    Some("use a random token of its own, e.g. `auditor_token: ${CONSENTRY_AUDITOR_TOKEN}`"),
                );
            } else if token.as_ref().is_some_and(|adm| adm.matches(v.as_bytes())) {
                self.err(
                    at(t),
                    "the auditor token equals the admin token",
                    Some("give auditors a token of their own: theirs only reads"),
                );
                return None;
            }
            tok
        });
        Some(Admin {
            listen: listen?,
            auditor,
            token: token?,
        })
    }

    fn upstream(&mut self, u: &source::UpstreamSource) -> Option<Upstream> {
        let url = self.expand(&u.url).unwrap_or_default();
        let parsed = url.parse::<Uri>().ok();
        let parts = parsed.map(|p| p.into_parts());
        let (scheme, authority, prefix) = match parts {
            Some(http::uri::Parts {
                scheme: Some(s),
                authority: Some(a),
                path_and_query,
                ..
            }) if (s == http::uri::Scheme::HTTP || s == http::uri::Scheme::HTTPS)
                && path_and_query
                    .as_ref()
                    .is_none_or(|pq| pq.query().is_none()) =>
            {
                let prefix = path_and_query
                    .map(|pq| pq.path().trim_end_matches('/').to_owned())
                    .unwrap_or_default();
                (s, a, prefix)
            }
            _ => {
                self.err(
                    at(&u.url),
                    "the upstream URL must be http:// or https:// with a host and no query",
                    Some("e.g. https://api.hubapi.com or http://127.0.0.1:4000"),
                );
                (
                    http::uri::Scheme::HTTP,
                    http::uri::Authority::from_static("invalid"),
                    String::new(),
                )
            }
        };
        let ca_file = u.ca_file.as_ref().map(|c| {
            let p = self.relative(&c.value);
            if !p.is_file() {
                self.err(
                    at(c),
                    format!("CA file {} does not exist", p.display()),
                    None,
                );
            }
            p
        });
        let mut headers = Vec::new();
        for h in &u.headers {
            let Some(name) = self.header_name(&h.name) else {
                continue;
            };
            let Some(value) = self.expand(&h.value) else {
                continue;
            };
            match HeaderValue::from_str(&value) {
                Ok(mut v) => {
                    v.set_sensitive(true);
                    headers.push((name, v));
                }
                Err(_) => self.err(
                    at(&h.value),
                    format!(
                        "the value of header `{}` is not a valid header value",
                        h.name.value
                    ),
                    None,
                ),
            }
        }
        let client_cert = match (&u.client_cert, &u.client_key) {
            (Some(c), Some(k)) => {
                let (c, k) = (
                    self.existing(c, "client certificate"),
                    self.existing(k, "client key"),
                );
                Some((c, k))
            }
            (None, None) => None,
            (Some(c), None) | (None, Some(c)) => {
                self.err(
                    at(c),
                    "`client_cert` and `client_key` go together",
                    Some("give both, or neither"),
                );
                None
            }
        };
        let t = u.timeouts.as_ref();
        Some(Upstream {
            scheme,
            authority,
            prefix,
            ca_file,
            client_cert,
            headers,
            forwarded_headers: u.forwarded_headers.unwrap_or(true),
            connect_timeout: self
                .duration(&t.and_then(|t| t.connect.clone()), Duration::from_secs(5)),
            response_timeout: self
                .duration(&t.and_then(|t| t.response.clone()), Duration::from_secs(30)),
            body_idle_timeout: self.duration(
                &t.and_then(|t| t.body_idle.clone()),
                Duration::from_secs(30),
            ),
        })
    }

    /// The master key ring: from a 0600 file or the environment. A ring that
    /// is configured but unusable is an error (nothing starts); errors never
    /// show key material.
    fn master_keys(&mut self, k: Option<&source::KeysSource>) -> Option<Arc<MasterKeys>> {
        let k = k?;
        let loaded = match (&k.master_key_file, &k.master_key) {
            (Some(_), Some(v)) => {
                self.err(
                    at(v),
                    "give `master_key_file` or `master_key`, not both",
                    None,
                );
                return None;
            }
            (Some(f), None) => (MasterKeys::load_file(&self.relative(&f.value)), at(f)),
            (None, Some(v)) => {
                let text = Zeroizing::new(self.expand(v)?);
                (MasterKeys::parse(&text), at(v))
            }
            (None, None) => return None,
        };
        match loaded {
            (Ok(ring), _) => Some(Arc::new(ring)),
            (Err(e), where_) => {
                self.err(
                    where_,
                    format!("the master key ring cannot be used: {e}"),
                    Some("make one with `consentry keys generate --out FILE` (it writes the file with permissions 0600)"),
                );
                None
            }
        }
    }

    fn hash_key(&mut self, k: Option<&source::KeysSource>) -> Option<Arc<HashKey>> {
        let k = k?;
        let (raw, at_) = match (&k.hash_key, &k.hash_key_file) {
            (Some(_), Some(f)) => {
                self.err(at(f), "give `hash_key` or `hash_key_file`, not both", None);
                return None;
            }
            (Some(v), None) => (Zeroizing::new(self.expand(v)?.into_bytes()), at(v)),
            (None, Some(f)) => {
                let p = self.relative(&f.value);
                match std::fs::read(&p) {
                    Ok(mut b) => {
                        while b.last().is_some_and(|c| c.is_ascii_whitespace()) {
                            b.pop();
                        }
                        (Zeroizing::new(b), at(f))
                    }
                    Err(e) => {
                        self.err(at(f), format!("cannot read {}: {e}", p.display()), None);
                        return None;
                    }
                }
            }
            (None, None) => return None,
        };
        match HashKey::new(&raw) {
            Some(key) => Some(Arc::new(key)),
            None => {
                self.err(
                    at_,
                    "the hash key is shorter than 16 bytes",
                    Some("use 32 random bytes, e.g. `openssl rand -hex 32`"),
                );
                None
            }
        }
    }

    fn clients(&mut self, list: &[source::ClientSource]) -> Clients {
        let mut out = Clients::default();
        let mut names = std::collections::HashSet::new();
        let mut hashes = std::collections::HashSet::new();
        let mut certificates = std::collections::HashSet::new();
        for c in list {
            if !names.insert(c.name.value.clone()) {
                self.err(
                    at(&c.name),
                    format!("client `{}` is declared twice", c.name.value),
                    None,
                );
            }
            if c.purposes.is_empty() {
                self.err(
                    at(&c.name),
                    format!("client `{}` has no purposes", c.name.value),
                    Some("list the data uses it may declare"),
                );
            }
            if let Some(cert) = &c.certificate
                && !certificates.insert(cert.value.trim().to_owned())
            {
                self.err(
                    at(cert),
                    format!("two clients name certificate `{}`", cert.value.trim()),
                    Some("a certificate identifies one client"),
                );
            }
            let certificate = c
                .certificate
                .as_ref()
                .map(|s| Arc::<str>::from(s.value.trim()));
            let key_sha256 = match &c.api_key_sha256 {
                None => {
                    if certificate.is_none() {
                        self.err(
                            at(&c.name),
                            format!("client `{}` has neither `api_key_sha256` nor `certificate`", c.name.value),
                            Some("give it an API key (`consentry client new-key`) or the name in its TLS client certificate"),
                        );
                    }
                    None
                }
                Some(api_key) => {
                    let Some(key) =
                        unhex(api_key.value.trim()).and_then(|b| <[u8; 32]>::try_from(b).ok())
                    else {
                        self.err(at(api_key), "`api_key_sha256` must be 64 hex digits", Some(
                            "store the SHA-256 of the key, never the key: `consentry client new-key` prints both",
                        ));
                        continue;
                    };
                    if !hashes.insert(key) {
                        self.err(at(api_key), "two clients share this API key", None);
                    }
                    Some(key)
                }
            };
            out.list.push(Client {
                name: c.name.value.as_str().into(),
                key_sha256,
                certificate,
                purposes: c.purposes.iter().map(|p| p.value.as_str().into()).collect(),
            });
        }
        out
    }

    fn identity(&mut self, i: Option<&source::IdentitySource>) -> Identity {
        let key = i
            .and_then(|i| i.api_key_header.as_ref())
            .and_then(|h| self.header_name(h));
        let purpose = i
            .and_then(|i| i.purpose_header.as_ref())
            .and_then(|h| self.header_name(h));
        Identity {
            api_key_header: key.unwrap_or(HeaderName::from_static("x-api-key")),
            purpose_header: purpose.unwrap_or(HeaderName::from_static("x-purpose")),
        }
    }

    fn limits(&mut self, l: Option<&source::LimitsSource>) -> Limits {
        let d = Limits::default();
        let Some(l) = l else { return d };
        let as_usize = |v: u64| usize::try_from(v).unwrap_or(usize::MAX);
        Limits {
            request_body: self.size(&l.request_body, d.request_body),
            response_body: self.size(&l.response_body, d.response_body),
            decompressed_body: self.size(&l.decompressed_body, d.decompressed_body),
            record: as_usize(self.size(&l.record, d.record as u64)),
            stream_after: as_usize(self.size(&l.stream_after, d.stream_after as u64)),
            header_bytes: as_usize(self.size(&l.header_bytes, d.header_bytes as u64)),
            max_headers: l
                .max_headers
                .as_ref()
                .map_or(d.max_headers, |m| m.value as usize),
            header_read_timeout: self.duration(&l.header_read_timeout, d.header_read_timeout),
            json_depth: l
                .json_depth
                .as_ref()
                .map_or(d.json_depth, |m| (m.value as usize).clamp(2, 512)),
            max_connections: l
                .max_connections
                .as_ref()
                .map_or(d.max_connections, |m| (m.value as usize).max(1)),
            max_streams: l
                .max_streams
                .as_ref()
                .map_or(d.max_streams, |m| m.value.max(1)),
            idle_timeout: self.duration(&l.idle_timeout, d.idle_timeout),
            shutdown_drain: self.duration(&l.shutdown_drain, d.shutdown_drain),
        }
    }

    fn log(&mut self, l: Option<&source::LogSource>) -> Log {
        let format = match l.and_then(|l| l.format.as_ref()) {
            None => LogFormat::Text,
            Some(f) if f.value == "text" => LogFormat::Text,
            Some(f) if f.value == "json" => LogFormat::Json,
            Some(f) => {
                self.err(
                    at(f),
                    format!("unknown log format `{}`", f.value),
                    Some("write `text` or `json`"),
                );
                LogFormat::Text
            }
        };
        Log {
            format,
            level: l
                .and_then(|l| l.level.as_ref())
                .map_or_else(|| "info".to_owned(), |s| s.value.clone()),
            access: l.and_then(|l| l.access).unwrap_or(true),
        }
    }
}

#[cfg(test)]
mod tests;
