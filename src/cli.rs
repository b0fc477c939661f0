//! The `consentry` command line.

mod act;
mod admin;
mod consent;
mod keys;
mod subject;

use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};

use crate::clock::SystemClock;
use crate::config::{self, Config, LogFormat};
use crate::consent::Consents;
use crate::keys::service::Keys;
use crate::policy::{self, PolicySet, taxonomy};
use crate::proxy::Gateway;
use crate::storage::sqlite::SqliteStore;
use crate::{demo, server};

#[derive(Debug, Parser)]
#[command(
    name = "consentry",
    version,
    about = "A privacy and consent compliance gateway for CRM HTTP APIs"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// `--config FILE` (or `CONSENTRY_CONFIG`), shared by the commands that
/// read the configuration.
#[derive(Debug, clap::Args)]
struct ConfigArg {
    /// The configuration file.
    #[arg(
        id = "config",
        long = "config",
        short = 'c',
        env = "CONSENTRY_CONFIG",
        default_value = "consentry.yaml",
        global = true
    )]
    path: PathBuf,
}

impl ConfigArg {
    /// The config (outside the demo, so with the real environment).
    fn load(&self) -> anyhow::Result<Config> {
        Ok(load_config(&self.path, false)?.0)
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway.
    Serve {
        /// The configuration file.
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Run the sample CRM and the gateway in front of it, and print curl commands to try.
    Demo {
        /// The configuration the gateway runs with; its upstream must be a loopback address.
        #[arg(long, short, default_value = "consentry.yaml")]
        config: PathBuf,
    },
    /// Validate and test policies.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Manage client API keys.
    Client {
        #[command(subcommand)]
        command: ClientCommand,
    },
    /// Manage the master key (encryption at rest).
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// What the gateway knows about one customer.
    Subject {
        #[command(flatten)]
        config: ConfigArg,
        #[command(subcommand)]
        command: SubjectCommand,
    },
    /// The audit trail.
    Audit {
        #[command(flatten)]
        config: ConfigArg,
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Import and export consent records.
    Consent {
        #[command(flatten)]
        config: ConfigArg,
        #[command(subcommand)]
        command: ConsentCommand,
    },
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Write a new master key ring to FILE (created with permissions 0600; never overwritten).
    Generate {
        #[arg(long)]
        out: PathBuf,
    },
    /// Add a new master key version to `keys.master_key_file` and re-wrap
    /// every data key under it (online when the gateway runs). Tokens in the
    /// CRM stay valid.
    Rotate {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Remove an old master key version from the key file, once no data key
    /// is wrapped under it.
    Retire {
        #[arg(long)]
        version: u32,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Destroy one customer's data key (crypto-shredding): every token of
    /// theirs becomes unreadable for good.
    Shred {
        subject: String,
        #[command(flatten)]
        config: ConfigArg,
    },
}

#[derive(Debug, Subcommand)]
enum SubjectCommand {
    /// A JSON report (GDPR Art. 15/20): consent history, every recorded
    /// access to the customer's data, and their erasure state.
    Access {
        id: String,
        /// Ask the running gateway, which adds the CRM's current record
        /// (`subjects.record`, rendered for `subjects.access_purpose`).
        #[arg(long)]
        record: bool,
    },
    /// Erase a customer (GDPR Art. 17), through the running gateway: their
    /// data key is destroyed, they go on the suppression list (their records
    /// never leave again), the delete is forwarded to the CRM when
    /// `subjects.forward_erasure` is set, and the act is audited. Prints the
    /// receipt. Safe to repeat.
    Erase {
        id: String,
        /// Also unlink the customer's pseudonym from every earlier audit
        /// event (the chain still verifies).
        #[arg(long)]
        unlink: bool,
    },
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Check the hash chain from the first event and the signed
    /// checkpoints; name the first event that is changed, missing or out of
    /// place, or a checkpoint the trail no longer matches, and exit 1.
    Verify {
        /// Checkpoints exported earlier (`audit checkpoints`), kept elsewhere.
        #[arg(long)]
        against: Option<PathBuf>,
        /// The signing key every checkpoint must carry (hex, as exported).
        #[arg(long)]
        public_key: Option<String>,
    },
    /// Print the signed checkpoints as JSON lines, to keep them elsewhere.
    Checkpoints,
    /// Print the events that match every filter given, oldest first.
    Query(Box<AuditQuery>),
}

#[derive(Debug, clap::Args)]
struct AuditQuery {
    /// A customer's id (its pseudonym is computed with the config's key).
    #[arg(long)]
    subject: Option<String>,
    #[arg(long)]
    client: Option<String>,
    #[arg(long)]
    purpose: Option<String>,
    /// A route template, e.g. `/crm/v3/objects/contacts/{id}`.
    #[arg(long)]
    route: Option<String>,
    /// served, passed, refused, streaming, aborted, changed, ...
    #[arg(long)]
    decision: Option<String>,
    /// request, consent, keys.
    #[arg(long)]
    kind: Option<String>,
    /// RFC 3339 time, inclusive.
    #[arg(long)]
    since: Option<String>,
    /// RFC 3339 time, exclusive.
    #[arg(long)]
    until: Option<String>,
    #[arg(long, default_value = "table", value_parser = ["table", "jsonl", "csv"])]
    format: String,
    #[arg(long, default_value_t = 1000)]
    limit: usize,
}

#[derive(Debug, Subcommand)]
enum ConsentCommand {
    /// Import a CSV (*.csv) or JSON (*.json, *.jsonl) file, all or nothing;
    /// re-importing the same file changes nothing. Goes through the admin API
    /// when the gateway is running.
    Import { file: PathBuf },
    /// Print every consent record, oldest first, in the import format.
    Export {
        /// `jsonl` or `csv`.
        #[arg(long, default_value = "jsonl", value_parser = ["jsonl", "csv"])]
        format: String,
    },
}

#[derive(Debug, Subcommand)]
enum PolicyCommand {
    /// Check every policy file in a folder; report all errors with file and line.
    Check { dir: PathBuf },
    /// Run the test cases (*.test.yaml) kept beside the policies.
    Test { dir: PathBuf },
    /// List the fideslang data categories and data uses policies may use.
    Vocabulary,
    /// What the policies in DIR decide for one request, field by field,
    /// and which rule decided it (JSON).
    Explain {
        dir: PathBuf,
        /// The declared purpose (`X-Purpose`).
        #[arg(long)]
        purpose: String,
        /// GET, POST, PATCH, ...
        method: String,
        /// The request path, e.g. /crm/v3/objects/contacts/7
        path: String,
    },
}

#[derive(Debug, Subcommand)]
enum ClientCommand {
    /// Generate a random API key and print it with the hash for the config.
    NewKey,
    /// Read an API key on stdin and print its hash for `clients[].api_key_sha256`.
    HashKey,
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve { config } => {
            let (cfg, set) = load_config(&config.path, false)?;
            init_logging(&cfg);
            serve(cfg, set)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo { config } => {
            demo::ensure_master_key(&config)?;
            let (cfg, set) = load_config(&config, true)?;
            init_logging(&cfg);
            runtime()?.block_on(run_demo(cfg, set))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Policy { command } => policy_command(command),
        Command::Client { command } => client_command(command),
        Command::Keys {
            command: KeysCommand::Generate { out },
        } => {
            crate::keys::master::MasterKeys::generate()
                .and_then(|ring| ring.write_new_file(&out))
                .map_err(anyhow::Error::msg)?;
            println!(
                "wrote a new master key (v1) to {} with permissions 0600; back it up: without it, encrypted values cannot be read",
                out.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Keys {
            command: KeysCommand::Rotate { config },
        } => keys::rotate(&config.load()?),
        Command::Keys {
            command: KeysCommand::Retire { version, config },
        } => keys::retire(&config.load()?, version),
        Command::Keys {
            command: KeysCommand::Shred { subject, config },
        } => keys::shred(&config.load()?, &subject),
        Command::Subject {
            config,
            command: SubjectCommand::Access { id, record },
        } => subject::access(&config.load()?, &id, record),
        Command::Subject {
            config,
            command: SubjectCommand::Erase { id, unlink },
        } => subject::erase(&config.load()?, &id, unlink),
        Command::Audit {
            config,
            command: AuditCommand::Query(q),
        } => audit_query(&config.load()?, &q),
        Command::Audit {
            config,
            command: AuditCommand::Checkpoints,
        } => {
            let cfg = config.load()?;
            let path = audit_path(&cfg)?;
            for cp in crate::audit::store::checkpoints(&path).map_err(anyhow::Error::msg)? {
                println!("{}", serde_json::to_string(&cp)?);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Audit {
            config,
            command:
                AuditCommand::Verify {
                    against,
                    public_key,
                },
        } => {
            let cfg = config.load()?;
            let path = audit_path(&cfg)?;
            let kept: Vec<crate::audit::store::Checkpoint> = match &against {
                None => Vec::new(),
                Some(f) => std::fs::read_to_string(f)
                    .with_context(|| format!("cannot read {}", f.display()))?
                    .lines()
                    .filter(|l| !l.trim().is_empty())
                    .enumerate()
                    .map(|(i, l)| {
                        serde_json::from_str(l).with_context(|| {
                            format!("{} line {}: not a checkpoint", f.display(), i + 1)
                        })
                    })
                    .collect::<anyhow::Result<_>>()?,
            };
            // Without --public-key, the checkpoints must be signed by the
            // trail's own signing key (when this user can read it).
            let own = crate::audit::signing::public_key(&crate::audit::signing_key_path(&path))
                .ok()
                .flatten();
            let trusted = public_key.or(own);
            match crate::audit::store::verify_all(&path, &kept, trusted.as_deref())
                .map_err(anyhow::Error::msg)?
            {
                Ok(v) => {
                    println!(
                        "{}: {} event(s), the chain is intact; {} signed checkpoint(s) check out{}",
                        path.display(),
                        v.events,
                        v.checkpoints,
                        if kept.is_empty() {
                            String::new()
                        } else {
                            format!(", and {} kept one(s)", kept.len())
                        }
                    );
                    Ok(ExitCode::SUCCESS)
                }
                Err(b) => {
                    println!("{}: event {}: {}", path.display(), b.seq, b.why);
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        Command::Consent { config, command } => {
            let (cfg, set) = load_config(&config.path, false)?;
            match command {
                ConsentCommand::Import { file } => consent::import_file(&cfg, &set, &file),
                ConsentCommand::Export { format } => consent::export(&cfg, format == "csv"),
            }
        }
    }
}

/// The audit trail's file, if the config has one and it exists.
fn audit_path(cfg: &Config) -> anyhow::Result<PathBuf> {
    let path = cfg
        .audit
        .clone()
        .context("`storage.audit: off`: there is no audit trail")?;
    if !path.exists() {
        bail!("no audit trail at {} yet", path.display());
    }
    Ok(path)
}

fn audit_query(cfg: &Config, q: &AuditQuery) -> anyhow::Result<ExitCode> {
    use crate::audit::query::{Filter, query};
    let path = audit_path(cfg)?;
    let path = &path;
    let time = |t: &Option<String>, what: &str| -> anyhow::Result<Option<i64>> {
        t.as_deref()
            .map(|s| {
                crate::clock::parse_rfc3339(s).with_context(|| {
                    format!("--{what} `{s}` is not an RFC 3339 time (2026-11-27T08:00:00Z)")
                })
            })
            .transpose()
    };
    let key = crate::audit::config_pseudonym_key(cfg)?;
    let subject = q
        .subject
        .as_deref()
        .map(|s| crate::audit::pseudonym(&key, s));
    let filter = Filter {
        subject: subject.clone(),
        client: q.client.clone(),
        purpose: q.purpose.clone(),
        route: q.route.clone(),
        decision: q.decision.clone(),
        kind: q.kind.clone(),
        since: time(&q.since, "since")?,
        until: time(&q.until, "until")?,
    };
    let found = query(path, &filter, 0, q.limit).map_err(anyhow::Error::msg)?;
    let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    let record = |e: &crate::audit::Event| match &subject {
        Some(s) => e
            .subjects
            .iter()
            .filter(|x| &x.subject == s)
            .map(|x| x.record.clone())
            .collect::<Vec<_>>()
            .join(";"),
        None => e.subjects.len().to_string(),
    };
    let mut out = String::new();
    match q.format.as_str() {
        "jsonl" => {
            for (seq, e) in &found {
                let mut v = serde_json::to_value(e)?;
                v["seq"] = (*seq).into();
                out.push_str(&serde_json::to_string(&v)?);
                out.push('\n');
            }
        }
        "csv" => {
            out.push_str("seq,time,kind,request_id,client,purpose,method,route,status,decision,problem,subjects\n");
            for (seq, e) in &found {
                let cells = [
                    seq.to_string(),
                    crate::clock::rfc3339(e.at),
                    e.kind.clone(),
                    opt(&e.request_id),
                    opt(&e.client),
                    opt(&e.purpose),
                    opt(&e.method),
                    opt(&e.route),
                    e.status.map_or("-".into(), |s| s.to_string()),
                    e.decision.clone(),
                    opt(&e.problem),
                    record(e),
                ];
                let quoted: Vec<String> = cells
                    .iter()
                    .map(|c| {
                        if c.contains([',', '"', '\n']) {
                            format!("\"{}\"", c.replace('"', "\"\""))
                        } else {
                            c.clone()
                        }
                    })
                    .collect();
                out.push_str(&quoted.join(","));
                out.push('\n');
            }
        }
        _ => {
            let what = if subject.is_some() {
                "record"
            } else {
                "subjects"
            };
            out.push_str(&format!(
                "{:>6}  {:<24}  {:<8}  {:<16}  {:<20}  {:<6}  {:<34}  {:>6}  {:<9}  {}\n",
                "seq",
                "time",
                "kind",
                "client",
                "purpose",
                "method",
                "route",
                "status",
                "decision",
                what
            ));
            for (seq, e) in &found {
                out.push_str(&format!(
                    "{:>6}  {:<24}  {:<8}  {:<16}  {:<20}  {:<6}  {:<34}  {:>6}  {:<9}  {}\n",
                    seq,
                    crate::clock::rfc3339(e.at),
                    e.kind,
                    opt(&e.client),
                    opt(&e.purpose),
                    opt(&e.method),
                    opt(&e.route),
                    e.status.map_or("-".into(), |s| s.to_string()),
                    e.decision,
                    record(e)
                ));
            }
        }
    }
    use std::io::Write as _;
    std::io::stdout()
        .write_all(out.as_bytes())
        .context("cannot write the events")?;
    Ok(ExitCode::SUCCESS)
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// Loads the config; prints warnings; fails with every error. The demo
/// supplies its published secrets where the environment has none.
fn load_config(path: &Path, demo: bool) -> anyhow::Result<(Config, PolicySet)> {
    let loaded = if demo {
        config::load_with_env(path, demo::env)
    } else {
        config::load(path)
    };
    match loaded {
        Ok((cfg, set, warnings)) => {
            for w in warnings.warnings() {
                eprintln!("{w}");
            }
            Ok((cfg, set))
        }
        Err(report) => {
            eprintln!("{report}");
            bail!(
                "{} error(s) in the configuration; nothing was started",
                report.errors()
            )
        }
    }
}

fn init_logging(cfg: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&cfg.log.level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match cfg.log.format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// SIGHUP reloads the config and policies (`reload`).
fn reload_on_hangup(gw: &Arc<Gateway>) {
    #[cfg(unix)]
    {
        let gw = Arc::clone(gw);
        tokio::spawn(async move {
            use tokio::signal::unix::{SignalKind, signal};
            let Ok(mut hup) = signal(SignalKind::hangup()) else {
                tracing::warn!("SIGHUP cannot be watched; reload through the admin API");
                return;
            };
            while hup.recv().await.is_some() {
                // The outcome is logged, counted and audited by `reload`.
                let _ = crate::reload::reload(&gw, "sighup").await;
            }
        });
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutting down: draining requests in flight");
}

/// Opens (or creates) the store: consent, and the data keys when a master
/// key is configured. A store that cannot be opened stops start-up.
fn open_stores(cfg: &Config) -> anyhow::Result<(Arc<Consents>, Option<Arc<Keys>>)> {
    let store = Arc::new(SqliteStore::open(&cfg.sqlite).with_context(|| {
        format!(
            "cannot open the store {} (storage.sqlite); nothing was started",
            cfg.sqlite.display()
        )
    })?);
    let keys = match cfg.master_keys.as_ref() {
        Some(ring) => {
            let keys = Keys::new(
                (**ring).clone(),
                Arc::clone(&store) as Arc<dyn crate::keys::store::KeyStore>,
                Arc::new(SystemClock),
            );
            // Finishes a rotation made while the gateway was stopped: data
            // keys still under an older version are re-wrapped now.
            let done = keys.adopt((**ring).clone()).context(
                "the data keys do not open with the master key file; nothing was started",
            )?;
            if done.rewrapped > 0 {
                tracing::info!(
                    rewrapped = done.rewrapped,
                    current = done.current,
                    "data keys re-wrapped under the current master key"
                );
            }
            Some(Arc::new(keys))
        }
        None => None,
    };
    Ok((Arc::new(Consents::new(store, Arc::new(SystemClock))), keys))
}

/// Opens the audit trail and starts its writer, unless `storage.audit: off`.
fn start_audit(cfg: &Config) -> anyhow::Result<Option<Arc<crate::audit::writer::Audit>>> {
    let Some(path) = &cfg.audit else {
        tracing::warn!("`storage.audit: off`: requests are not recorded in an audit trail");
        return Ok(None);
    };
    let store = crate::audit::open_signed(path).with_context(|| {
        format!(
            "cannot open the audit trail {} (storage.audit); nothing was started",
            path.display()
        )
    })?;
    let key = crate::audit::config_pseudonym_key(cfg)?;
    Ok(Some(crate::audit::writer::Audit::start_with(
        store,
        key,
        cfg.audit_retention,
    )?))
}

/// The gateway, recording in the audit trail when there is one.
fn gateway(
    cfg: Config,
    set: PolicySet,
    consents: Arc<Consents>,
    keys: Option<Arc<Keys>>,
) -> anyhow::Result<Gateway> {
    let audit = start_audit(&cfg)?;
    let gw = Gateway::new(cfg, set, consents, keys).map_err(anyhow::Error::msg)?;
    Ok(match audit {
        Some(a) => gw.with_audit(a),
        None => gw,
    })
}

/// Binds and starts the admin API when the config has one.
async fn start_admin(
    admin: Option<config::Admin>,
    gw: &Arc<Gateway>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<Option<tokio::task::JoinHandle<()>>> {
    let Some(admin) = admin else {
        tracing::info!("no `admin:` section: the admin API is off");
        return Ok(None);
    };
    let listener = bind(admin.listen, "admin API").await?;
    tracing::info!(addr = %admin.listen, "admin API listening");
    let state =
        Arc::new(crate::admin::Admin::new(Arc::clone(gw), admin.token).with_auditor(admin.auditor));
    Ok(Some(tokio::spawn(crate::admin::serve(
        listener,
        state,
        async move {
            let _ = stop.changed().await;
        },
    ))))
}

async fn bind(addr: SocketAddr, what: &str) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} ({what})"))
}

fn serve(cfg: Config, set: PolicySet) -> anyhow::Result<()> {
    let workers = match cfg.workers {
        0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
        n => n,
    };
    // One work-stealing runtime: measured against one single-threaded runtime
    // per core (SO_REUSEPORT), it balances better when the cores are shared
    // (see BENCHMARKS.md).
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    // Certificate and key problems stop start-up, before anything listens.
    let tls = server::tls_acceptor(&cfg)
        .map_err(|e| anyhow::anyhow!("{e} (tls:); nothing was started"))?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    let served = rt.block_on(async move {
        let listener = bind(cfg.listen, "listen").await?;
        let addr = listener.local_addr()?;
        let resources = set.resources().len();
        let (consents, keys) = open_stores(&cfg)?;
        let admin_cfg = cfg.admin.clone();
        let gw = Arc::new(gateway(cfg, set, consents, keys)?);
        gw.record_start().await.map_err(anyhow::Error::msg)?;
        let (tx, rx) = tokio::sync::watch::channel(false);
        let admin_task = start_admin(admin_cfg, &gw, rx.clone()).await?;
        reload_on_hangup(&gw);
        tracing::info!(%addr, resources, workers, scheme, "consentry listening");
        let mut rx = rx;
        let gw_task = tokio::spawn(server::serve(listener, gw, tls, async move {
            let _ = rx.changed().await;
        }));
        shutdown_signal().await;
        let _ = tx.send(true);
        let _ = gw_task.await;
        if let Some(t) = admin_task {
            let _ = t.await;
        }
        Ok(())
    });
    // Connections still open after the drain deadline are closed here,
    // and blocking work gets a moment, not for ever.
    rt.shutdown_timeout(std::time::Duration::from_secs(2));
    served
}

/// The demo's sample CRM, keeping what is created through it beside the
/// store (`demo-crm.jsonl`), so that a second run does not reuse ids whose
/// keys the store still holds.
fn demo_crm(cfg: &Config) -> std::sync::Arc<demo::crm::Crm> {
    let dir = cfg
        .sqlite
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    demo::crm::Crm::persistent(dir.join("demo-crm.jsonl"))
}

async fn run_demo(cfg: Config, set: PolicySet) -> anyhow::Result<()> {
    let crm: SocketAddr = cfg
        .upstream
        .authority
        .as_str()
        .parse()
        .ok()
        .filter(|a: &SocketAddr| a.ip().is_loopback())
        .context("for the demo, upstream.url must be http://127.0.0.1:PORT (the sample CRM listens there)")?;
    let crm_listener = bind(crm, "sample CRM").await?;
    let crm_state = demo_crm(&cfg);
    let listener = bind(cfg.listen, "gateway").await?;
    let gw_addr = listener.local_addr()?;
    let (consents, keys) = open_stores(&cfg)?;
    demo::seed_consents(&consents, &set).map_err(anyhow::Error::msg)?;
    let admin_cfg = cfg.admin.clone();
    let gw = Arc::new(
        gateway(cfg, set, consents, keys)?.with_loader(crate::reload::Loader::new(|p| {
            config::load_with_env(p, demo::env)
        })),
    );
    gw.record_start().await.map_err(anyhow::Error::msg)?;
    reload_on_hangup(&gw);
    let (tx, rx) = tokio::sync::watch::channel(false);
    let admin_addr = admin_cfg.as_ref().map(|a| a.listen);
    let admin_task = start_admin(admin_cfg, &gw, rx.clone()).await?;
    let mut rx2 = rx.clone();
    let crm_task = tokio::spawn(demo::crm::serve(crm_state, crm_listener, async move {
        let _ = rx2.changed().await;
    }));
    println!("{}", demo::instructions(gw_addr, crm, admin_addr));
    let mut rx3 = rx;
    let tls = server::tls_acceptor(gw.config())
        .map_err(|e| anyhow::anyhow!("{e} (tls:); nothing was started"))?;
    let gw_task = tokio::spawn(server::serve(listener, gw, tls, async move {
        let _ = rx3.changed().await;
    }));
    shutdown_signal().await;
    let _ = tx.send(true);
    let _ = gw_task.await;
    let _ = crm_task.await;
    if let Some(t) = admin_task {
        let _ = t.await;
    }
    Ok(())
}

fn policy_command(cmd: PolicyCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        PolicyCommand::Explain {
            dir,
            purpose,
            method,
            path,
        } => {
            let set = match policy::load_dir(&dir, &policy::Options::default()) {
                Ok((set, _)) => set,
                Err(report) => {
                    println!("{report}");
                    return Ok(ExitCode::FAILURE);
                }
            };
            let v = policy::explain::request(&set, &method, &path, &purpose)
                .map_err(anyhow::Error::msg)?;
            println!("{}", serde_json::to_string_pretty(&v)?);
            Ok(ExitCode::SUCCESS)
        }
        PolicyCommand::Check { dir } => {
            let opts = policy::Options::default();
            match policy::load_dir(&dir, &opts) {
                Ok((set, warnings)) => {
                    for w in warnings.warnings() {
                        println!("{w}");
                    }
                    println!(
                        "ok: {} resource(s) in {}, {} warning(s)",
                        set.resources().len(),
                        dir.display(),
                        warnings.warnings().count()
                    );
                    Ok(ExitCode::SUCCESS)
                }
                Err(report) => {
                    println!("{report}");
                    println!("{} error(s)", report.errors());
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        PolicyCommand::Test { dir } => {
            let opts = policy::Options {
                hash_key: crate::transform::HashKey::new(policy::testing::TEST_HASH_KEY)
                    .map(Arc::new),
                require_hash_key: false,
                has_master_key: false,
                require_master_key: false,
            };
            let set = match policy::load_dir(&dir, &opts) {
                Ok((set, _)) => set,
                Err(report) => {
                    println!("{report}");
                    println!("{} error(s): the policies do not compile", report.errors());
                    return Ok(ExitCode::FAILURE);
                }
            };
            let results = match policy::testing::run_dir(&dir, &set) {
                Ok(r) => r,
                Err(report) => {
                    println!("{report}");
                    return Ok(ExitCode::FAILURE);
                }
            };
            let failed = results.iter().filter(|r| r.failure.is_some()).count();
            for r in &results {
                match &r.failure {
                    None => println!("ok    {}:{}  {}", r.file.display(), r.line, r.name),
                    Some(why) => println!(
                        "FAIL  {}:{}  {}\n      {}",
                        r.file.display(),
                        r.line,
                        r.name,
                        why.replace('\n', "\n      ")
                    ),
                }
            }
            println!(
                "{} case(s), {} passed, {} failed",
                results.len(),
                results.len() - failed,
                failed
            );
            if results.is_empty() {
                println!("no test cases found (*.test.yaml)");
            }
            Ok(if failed == 0 && !results.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        PolicyCommand::Vocabulary => {
            println!("# data categories (fideslang)");
            taxonomy::defaults(taxonomy::Kind::Category).for_each(|c| println!("{c}"));
            println!("\n# data uses / purposes (fideslang)");
            taxonomy::defaults(taxonomy::Kind::Use).for_each(|u| println!("{u}"));
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn client_command(cmd: ClientCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        ClientCommand::NewKey => {
            let mut raw = [0u8; 24];
            getrandom::fill(&mut raw).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
            let key = format!("csk_{}", config::hex(&raw));
            println!("api key (give it to the client, store it nowhere else): {key}");
            println!(
                "api_key_sha256 (put this in the config):                 {}",
                config::api_key_hash(&key)
            );
            Ok(ExitCode::SUCCESS)
        }
        ClientCommand::HashKey => {
            let mut key = String::new();
            std::io::stdin()
                .read_to_string(&mut key)
                .context("cannot read stdin")?;
            let key = key.trim_end_matches(['\r', '\n']);
            if key.len() < 16 {
                bail!(
                    "API keys must be at least 16 characters; `consentry client new-key` makes a good one"
                );
            }
            println!("{}", config::api_key_hash(key));
            Ok(ExitCode::SUCCESS)
        }
    }
}
