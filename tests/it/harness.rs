//! Test harness: a real consentry listener (`TestGateway`) in front of a fake
//! CRM (`FakeCrm`), both on 127.0.0.1 port 0. The fake CRM answers from a
//! table and can misbehave on demand: any status, headers, encodings, bodies
//! sent in chunks, paused or slow. It records every request it receives.

#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, oneshot};

use consentry::clock::{Clock, ManualClock, SystemClock};
use consentry::config;
use consentry::consent::Consents;
use consentry::consent::model::{ConsentEvent, Status};
use consentry::consent::store::ConsentStore;
use consentry::keys::service::Keys;
use consentry::keys::store::KeyStore;
use consentry::proxy::Gateway;
use consentry::storage::sqlite::SqliteStore;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What the fake CRM answers on a path.
#[derive(Clone, Default)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub chunks: Vec<Bytes>,
    /// Wait for this before sending the chunks after the first.
    pub hold: Option<Arc<Notify>>,
    /// Pause between chunks.
    pub delay: Option<Duration>,
    /// Fail the body after the chunks (connection reset mid-body).
    pub break_after: bool,
}

impl Reply {
    pub fn json(body: impl Into<Bytes>) -> Reply {
        Reply {
            status: 200,
            headers: vec![("content-type".into(), "application/json".into())],
            chunks: vec![body.into()],
            ..Reply::default()
        }
    }

    pub fn status(mut self, s: u16) -> Reply {
        self.status = s;
        self
    }

    pub fn header(mut self, k: &str, v: &str) -> Reply {
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(k));
        self.headers.push((k.into(), v.into()));
        self
    }

    /// Adds a second, conflicting `Content-Type`.
    pub fn with_second_content_type(mut self) -> Reply {
        self.headers
            .push(("content-type".into(), "text/html".into()));
        self
    }

    pub fn without_header(mut self, k: &str) -> Reply {
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(k));
        self
    }

    pub fn chunks(mut self, chunks: Vec<Bytes>) -> Reply {
        self.chunks = chunks;
        self
    }

    /// A JSON body sent in two halves (`delay` and `hold` act between them).
    pub fn halves(body: String) -> Reply {
        let (head, tail) = body.split_at(body.len() / 2);
        Reply::json(head.to_owned()).chunks(vec![head.to_owned().into(), tail.to_owned().into()])
    }

    /// `halves`, the second one held until the returned `Notify` fires.
    pub fn held(body: String) -> (Reply, Arc<Notify>) {
        let hold = Arc::new(Notify::new());
        let reply = Reply {
            hold: Some(Arc::clone(&hold)),
            ..Reply::halves(body)
        };
        (reply, hold)
    }
}

/// A request the fake CRM received.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    pub headers: HeaderMap,
    pub body: Bytes,
}

#[derive(Default)]
struct CrmState {
    routes: HashMap<String, Reply>,
    seen: Vec<Seen>,
}

pub struct FakeCrm {
    pub addr: SocketAddr,
    state: Arc<Mutex<CrmState>>,
    _stop: oneshot::Sender<()>,
}

impl FakeCrm {
    pub async fn start() -> FakeCrm {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(CrmState::default()));
        let (tx, mut rx) = oneshot::channel::<()>();
        let st = Arc::clone(&state);
        tokio::spawn(async move {
            loop {
                let (stream, _) = tokio::select! {
                    a = listener.accept() => a.unwrap(),
                    _ = &mut rx => return,
                };
                let st = Arc::clone(&st);
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let st = Arc::clone(&st);
                        async move { Ok::<_, std::convert::Infallible>(answer(st, req).await) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        FakeCrm {
            addr,
            state,
            _stop: tx,
        }
    }

    pub fn on(&self, path: &str, reply: Reply) {
        self.state.lock().unwrap().routes.insert(path.into(), reply);
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.state.lock().unwrap().seen.clone()
    }

    pub fn last(&self) -> Seen {
        self.seen().pop().expect("the CRM received no request")
    }

    pub fn count(&self) -> usize {
        self.state.lock().unwrap().seen.len()
    }
}

async fn answer(
    st: Arc<Mutex<CrmState>>,
    req: Request<Incoming>,
) -> Response<http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let path = parts.uri.path().to_owned();
    let reply = {
        let mut s = st.lock().unwrap();
        s.seen.push(Seen {
            method: parts.method.to_string(),
            path: path.clone(),
            query: parts.uri.query().map(str::to_owned),
            headers: parts.headers.clone(),
            body,
        });
        s.routes.get(&path).cloned()
    };
    let Some(reply) = reply else {
        let mut r = Response::new(
            Full::new(Bytes::from_static(b"{\"status\":\"error\"}"))
                .map_err(|n| match n {})
                .boxed_unsync(),
        );
        *r.status_mut() = StatusCode::NOT_FOUND;
        r.headers_mut()
            .insert("content-type", "application/json".parse().unwrap());
        return r;
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, BoxError>>(4);
    let chunks = reply.chunks.clone();
    let (hold, delay, breaks) = (reply.hold.clone(), reply.delay, reply.break_after);
    tokio::spawn(async move {
        for (i, c) in chunks.into_iter().enumerate() {
            if i == 1
                && let Some(h) = &hold
            {
                h.notified().await;
            }
            if i > 0
                && let Some(d) = delay
            {
                tokio::time::sleep(d).await;
            }
            if tx.send(Ok(Frame::data(c))).await.is_err() {
                return;
            }
        }
        if breaks {
            let _ = tx.send(Err("broken".into())).await;
        }
    });
    let stream =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|x| (x, rx)) });
    let mut r = Response::new(StreamBody::new(stream).boxed_unsync());
    *r.status_mut() = StatusCode::from_u16(reply.status).unwrap();
    for (k, v) in &reply.headers {
        r.headers_mut().append(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    r
}

/// The demo's published keys, reused by the tests.
pub const SUPPORT: &str = "test-support-key-000000000001";
pub const MARKETING: &str = "test-marketing-key-0000000002";
pub const MULTI: &str = "test-multi-purpose-key-000003";
/// The admin API's bearer token in tests.
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789abcdef";
pub const AUDITOR_TOKEN: &str = "auditor-token-for-tests-0123456789";

/// A running gateway in front of a `FakeCrm`.
pub struct TestGateway {
    pub addr: SocketAddr,
    /// The admin API, when the builder asked for it.
    pub admin: Option<SocketAddr>,
    pub crm: FakeCrm,
    pub gateway: Arc<Gateway>,
    _dir: tempfile::TempDir,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    admin_task: Option<tokio::task::JoinHandle<()>>,
}

/// The example policy of the repository.
pub fn example_policy() -> String {
    std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/policies/hubspot-contacts.yaml"
    ))
    .unwrap()
}

pub struct Builder {
    policies: Vec<(String, String)>,
    extra_config: String,
    upstream: Option<String>,
    ca_file: Option<std::path::PathBuf>,
    upstream_lines: String,
    store: Option<Arc<dyn ConsentStore>>,
    store_file: Option<std::path::PathBuf>,
    clock: Option<Arc<ManualClock>>,
    admin: bool,
    grants: Vec<(String, String)>,
    master_key: Option<String>,
    clients: String,
}

impl TestGateway {
    pub fn builder() -> Builder {
        Builder {
            policies: vec![("hubspot-contacts.yaml".into(), example_policy())],
            extra_config: String::new(),
            upstream: None,
            ca_file: None,
            upstream_lines: String::new(),
            store: None,
            store_file: None,
            clock: None,
            admin: false,
            grants: Vec::new(),
            clients: String::new(),
            // The example policy encrypts: every gateway has a key ring.
            master_key: Some(
                consentry::keys::master::MasterKeys::generate()
                    .unwrap()
                    .to_text()
                    .to_string(),
            ),
        }
    }

    pub async fn start() -> TestGateway {
        TestGateway::builder().start().await
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// An admin API URL.
    pub fn admin_url(&self, path: &str) -> String {
        format!(
            "http://{}{}",
            self.admin.expect("built with .admin()"),
            path
        )
    }

    /// The folder of the gateway's config, policies and key file (`master.key`).
    pub fn dir(&self) -> &std::path::Path {
        self._dir.path()
    }

    pub fn consents(&self) -> &Arc<Consents> {
        self.gateway.consents()
    }

    /// Stops the listeners and waits for them to drain; the store is
    /// released once the returned gateway handle is dropped too.
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
        if let Some(t) = self.admin_task.take() {
            let _ = t.await;
        }
    }
}

impl Builder {
    /// Replaces the policy files.
    pub fn policy(mut self, name: &str, text: &str) -> Builder {
        if self.policies.len() == 1 && self.policies[0].0 == "hubspot-contacts.yaml" {
            self.policies.clear();
        }
        self.policies.push((name.into(), text.into()));
        self
    }

    /// Points the gateway somewhere else than its fake CRM.
    pub fn upstream(mut self, url: &str) -> Builder {
        self.upstream = Some(url.into());
        self
    }

    /// Trusts this CA (PEM) for the upstream, besides the system roots.
    pub fn upstream_ca(mut self, path: &std::path::Path) -> Builder {
        self.ca_file = Some(path.to_path_buf());
        self
    }

    /// More keys of the `upstream:` section (YAML, indented by two).
    pub fn upstream_config(mut self, lines: &str) -> Builder {
        self.upstream_lines.push_str(lines);
        self
    }

    /// Uses this consent store instead of a fresh SQLite file.
    pub fn store(mut self, store: Arc<dyn ConsentStore>) -> Builder {
        self.store = Some(store);
        self
    }

    /// Uses the SQLite store at this path (to test restarts).
    pub fn store_file(mut self, path: &std::path::Path) -> Builder {
        self.store_file = Some(path.to_path_buf());
        self
    }

    /// Runs the consent service on this clock.
    pub fn clock(mut self, clock: Arc<ManualClock>) -> Builder {
        self.clock = Some(clock);
        self
    }

    /// Starts the admin API too (token `ADMIN_TOKEN`).
    pub fn admin(mut self) -> Builder {
        self.admin = true;
        self
    }

    /// Records a consent grant before the gateway starts.
    pub fn grant(mut self, subject: &str, purpose: &str) -> Builder {
        self.grants.push((subject.into(), purpose.into()));
        self
    }

    /// Grants `purpose` to subjects `1..=n`.
    pub fn grant_all(mut self, n: u64, purpose: &str) -> Builder {
        for i in 1..=n {
            self.grants.push((i.to_string(), purpose.into()));
        }
        self
    }

    /// Encrypts at rest with this master key ring (its text), from a 0600
    /// key file, with the data keys in the SQLite store.
    pub fn master_key(mut self, ring: &str) -> Builder {
        self.master_key = Some(ring.into());
        self
    }

    /// Appends top-level YAML to the config (e.g. a `limits:` block).
    /// One more entry of `clients:` (YAML of a list item, without the dash).
    pub fn client(mut self, yaml: &str) -> Builder {
        self.clients.push_str("  - ");
        self.clients.push_str(yaml);
        self.clients.push('\n');
        self
    }

    pub fn config(mut self, yaml: &str) -> Builder {
        self.extra_config.push_str(yaml);
        self.extra_config.push('\n');
        self
    }

    pub async fn start(self) -> TestGateway {
        let crm = FakeCrm::start().await;
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("policies")).unwrap();
        for (name, text) in &self.policies {
            std::fs::write(dir.path().join("policies").join(name), text).unwrap();
        }
        let text = format!(
            r#"
listen: 127.0.0.1:0
upstream:
  url: {crm}
{ca}  headers:
    - name: Authorization
      value: "Bearer upstream-secret-token"
    - name: X-Crm-Account
      value: "acct-42"
  timeouts: {{ connect: 2s, response: 5s, body_idle: 2s }}
policies: policies
keys:
  hash_key: test-hash-key-0123456789abcdef
{master}clients:
  - name: support
    api_key_sha256: {s}
    purposes: [essential.service]
  - name: marketing
    api_key_sha256: {m}
    purposes: [marketing]
  - name: multi
    api_key_sha256: {x}
    purposes: [essential.service, marketing]
{clients}log: {{ access: false }}
{extra}
"#,
            crm = self
                .upstream
                .clone()
                .unwrap_or_else(|| format!("http://{}", crm.addr)),
            s = config::api_key_hash(SUPPORT),
            m = config::api_key_hash(MARKETING),
            x = config::api_key_hash(MULTI),
            extra = self.extra_config,
            clients = self.clients,
            master = match &self.master_key {
                Some(ring) => {
                    use std::os::unix::fs::OpenOptionsExt as _;
                    let f = dir.path().join("master.key");
                    let mut file = std::fs::OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .mode(0o600)
                        .open(&f)
                        .unwrap();
                    std::io::Write::write_all(&mut file, ring.as_bytes()).unwrap();
                    format!("  master_key_file: {}\n", f.display())
                }
                None => String::new(),
            },
            ca = self
                .ca_file
                .as_ref()
                .map(|p| format!("  ca_file: {}\n", p.display()))
                .unwrap_or_default()
                + &self.upstream_lines,
        );
        let path = dir.path().join("consentry.yaml");
        // Written too, for tests that run the CLI against this gateway's files.
        std::fs::write(&path, &text).unwrap();
        let (cfg, set, _) =
            config::load_str(&path, &text, |_| None).unwrap_or_else(|r| panic!("{r}"));
        let sqlite = match &self.store_file {
            Some(f) => f.clone(),
            None => dir.path().join("consentry.db"),
        };
        let clock: Arc<dyn Clock> = match self.clock {
            Some(c) => c,
            None => Arc::new(SystemClock),
        };
        let mut keys = None;
        let store: Arc<dyn ConsentStore> = match self.store {
            Some(s) => {
                if let Some(ring) = &cfg.master_keys {
                    keys = Some(Arc::new(Keys::new(
                        (**ring).clone(),
                        Arc::new(consentry::keys::store::MemoryKeyStore::default()),
                        Arc::clone(&clock),
                    )));
                }
                s
            }
            None => {
                let s = Arc::new(SqliteStore::open(&sqlite).unwrap());
                if let Some(ring) = &cfg.master_keys {
                    keys = Some(Arc::new(Keys::new(
                        (**ring).clone(),
                        Arc::clone(&s) as Arc<dyn KeyStore>,
                        Arc::clone(&clock),
                    )));
                }
                s
            }
        };
        let consents = Arc::new(Consents::new(store, clock));
        if !self.grants.is_empty() {
            let events: Vec<ConsentEvent> = self
                .grants
                .iter()
                .map(|(s, p)| ConsentEvent {
                    subject: s.clone(),
                    purpose: p.clone(),
                    status: Status::Granted,
                    at: consents.now() - 1000,
                    source: "test".into(),
                    expires: None,
                    proof: None,
                })
                .collect();
            consents.record(&events, &|p| set.knows_purpose(p)).unwrap();
        }
        let audit = cfg.audit.as_ref().map(|path| {
            let store = consentry::audit::open_signed(path).unwrap();
            let key = consentry::audit::config_pseudonym_key(&cfg).unwrap();
            consentry::audit::writer::Audit::start_with(store, key, cfg.audit_retention).unwrap()
        });
        let mut gw = Gateway::new(cfg, set, consents, keys).unwrap();
        if let Some(a) = audit {
            gw = gw.with_audit(a);
        }
        let gateway = Arc::new(gw);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let (admin_tx, admin_rx) = tokio::sync::watch::channel(false);
        let gw = Arc::clone(&gateway);
        let tls = consentry::server::tls_acceptor(gw.config()).unwrap_or_else(|e| panic!("{e}"));
        let task = tokio::spawn(async move {
            consentry::server::serve(listener, gw, tls, async move {
                let _ = rx.await;
                let _ = admin_tx.send(true);
            })
            .await;
        });
        let (admin, admin_task) = if self.admin {
            let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let a = l.local_addr().unwrap();
            let state = Arc::new(
                consentry::admin::Admin::new(
                    Arc::clone(&gateway),
                    config::AdminToken::new(ADMIN_TOKEN).unwrap(),
                )
                .with_auditor(config::AdminToken::new(AUDITOR_TOKEN)),
            );
            let mut stop = admin_rx;
            let t = tokio::spawn(consentry::admin::serve(l, state, async move {
                let _ = stop.changed().await;
            }));
            (Some(a), Some(t))
        } else {
            (None, None)
        };
        TestGateway {
            addr,
            admin,
            crm,
            gateway,
            _dir: dir,
            stop: Some(tx),
            task: Some(task),
            admin_task,
        }
    }
}

/// A response as a test sees it.
#[derive(Debug)]
pub struct Got {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Got {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    /// The problem+json `type`'s last part.
    pub fn problem(&self) -> String {
        assert_eq!(
            self.headers["content-type"],
            "application/problem+json",
            "{}",
            self.text()
        );
        let j = self.json();
        j["type"]
            .as_str()
            .unwrap()
            .trim_start_matches("urn:consentry:problem:")
            .to_owned()
    }
}

fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// Sends a request through the gateway with the given headers.
pub async fn send(method: &str, url: &str, headers: &[(&str, &str)], body: &[u8]) -> Got {
    let mut req = Request::builder().method(method).uri(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Full::new(Bytes::copy_from_slice(body))).unwrap();
    let resp = client().request(req).await.unwrap();
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    Got {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body,
    }
}

/// `send`, but `None` when the connection fails (the server is gone).
pub async fn try_send(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Option<Got> {
    let mut req = Request::builder().method(method).uri(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Full::new(Bytes::copy_from_slice(body))).ok()?;
    let resp = client().request(req).await.ok()?;
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.ok()?.to_bytes();
    Some(Got {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body,
    })
}

/// A call to the gateway's admin API with `ADMIN_TOKEN`.
pub async fn admin(gw: &TestGateway, method: &str, path: &str, ct: &str, body: &str) -> Got {
    let auth = format!("Bearer {ADMIN_TOKEN}");
    send(
        method,
        &gw.admin_url(path),
        &[("authorization", &auth), ("content-type", ct)],
        body.as_bytes(),
    )
    .await
}

pub async fn get(url: &str, key: &str) -> Got {
    send("GET", url, &[("x-api-key", key)], b"").await
}

/// Writes raw bytes to `addr` and reads the whole response (the request
/// should carry `Connection: close`). For requests a client library would
/// refuse to build.
pub async fn raw(addr: SocketAddr, request: &[u8]) -> (u16, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, text)
}

/// The real binary, serving the example policy (`policies/p.yaml` in the
/// returned folder) in front of `crm` (a URL) for one client, `support`;
/// the folder, its port and the process (killed when dropped).
pub fn spawn_binary(crm: &str) -> (tempfile::TempDir, u16, Killed) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("policies")).unwrap();
    std::fs::write(dir.path().join("policies/p.yaml"), example_policy()).unwrap();
    write_master_key(dir.path());
    let port = free_port();
    let cfg = dir.path().join("consentry.yaml");
    std::fs::write(
        &cfg,
        format!(
            "listen: 127.0.0.1:{port}\nupstream: {{ url: \"{crm}\" }}\npolicies: policies\n\
             keys: {{ hash_key: test-hash-key-0123456789abcdef, master_key_file: master.key }}\n\
             log: {{ access: false }}\n\
             clients:\n  - {{ name: support, api_key_sha256: {}, purposes: [essential.service] }}\n",
            consentry::config::api_key_hash(SUPPORT)
        ),
    )
    .unwrap();
    let child = Killed(
        std::process::Command::new(env!("CARGO_BIN_EXE_consentry"))
            .args(["serve", "--config"])
            .arg(&cfg)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    (dir, port, child)
}

/// Writes a new master key ring to `dir/master.key` (0600); returns its text.
/// What `consentry ARGS --config CONFIG` did.
pub struct Ran {
    pub ok: bool,
    pub out: String,
    pub err: String,
}

impl Ran {
    /// Stdout and stderr together, for messages wherever they went.
    pub fn text(&self) -> String {
        format!("{}{}", self.out, self.err)
    }
}

/// Runs the CLI with `args` against `config`. Blocking: from an async test
/// whose gateway must keep serving, call it through `spawn_blocking`.
pub fn run_cli(config: &std::path::Path, args: &[&str]) -> Ran {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_consentry"))
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .unwrap();
    Ran {
        ok: out.status.success(),
        out: String::from_utf8_lossy(&out.stdout).into_owned(),
        err: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A free port on 127.0.0.1 (bound, then released for the child process).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Kills the child process when the test ends, also on a failed assertion.
pub struct Killed(pub std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill(); // SIGKILL: no shutdown, no flush
        let _ = self.0.wait();
    }
}

/// consentry's sample CRM (it stores what it receives) on a loopback port.
pub async fn sample_crm() -> (Arc<consentry::demo::crm::Crm>, String) {
    let crm = consentry::demo::crm::Crm::new();
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    tokio::spawn(consentry::demo::crm::serve(
        Arc::clone(&crm),
        l,
        std::future::pending(),
    ));
    (crm, url)
}

pub fn write_master_key(dir: &std::path::Path) -> String {
    let ring = consentry::keys::master::MasterKeys::generate().unwrap();
    ring.write_new_file(&dir.join("master.key")).unwrap();
    ring.to_text().to_string()
}

/// A contact like the sample CRM's, with the given id.
pub fn contact(id: u64) -> String {
    serde_json::to_string(&consentry::demo::data::contact(id)).unwrap()
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}
