//! The audit trail under faults: the gateway process killed (-9) under load
//! loses no event of a response a client received; a full or read-only
//! audit disk refuses responses (503, no data) and the gateway recovers
//! when the disk does.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::harness::*;

const ONE: &str = "/crm/v3/objects/contacts/7";

/// Every request id in the trail.
fn recorded_ids(trail: &std::path::Path) -> std::collections::HashSet<String> {
    let conn = rusqlite::Connection::open(trail).unwrap();
    let mut st = conn.prepare("SELECT body FROM audit_events").unwrap();
    st.query_map([], |r| r.get::<_, String>(0))
        .unwrap()
        .filter_map(|b| {
            let v: serde_json::Value = serde_json::from_str(&b.unwrap()).ok()?;
            Some(v["request_id"].as_str()?.to_owned())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_under_load_loses_no_event_of_a_delivered_response() {
    let (_crm, crm) = sample_crm().await;
    let (dir, port, mut child) = spawn_binary(&crm);
    let url = format!("http://127.0.0.1:{port}{ONE}");
    let mut up = false;
    for _ in 0..100 {
        let probe = try_send("GET", &url, &[("x-api-key", SUPPORT)], b"");
        if tokio::time::timeout(Duration::from_millis(500), probe)
            .await
            .is_ok_and(|g| g.is_some_and(|g| g.status == 200))
        {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(up, "the gateway did not start");

    // 16 clients, each as fast as it can, until the process is gone.
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for c in 0..16u64 {
        let stop = Arc::clone(&stop);
        let url = format!("http://127.0.0.1:{port}/crm/v3/objects/contacts/{}", c + 1);
        clients.push(tokio::spawn(async move {
            let mut got = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let r = tokio::time::timeout(
                    Duration::from_secs(2),
                    try_send("GET", &url, &[("x-api-key", SUPPORT)], b""),
                )
                .await;
                match r {
                    Ok(Some(g)) if g.status == 200 => {
                        let id = g.headers["x-request-id"].to_str().unwrap().to_owned();
                        got.push(id);
                    }
                    Ok(Some(g)) => panic!("{}: {}", g.status, g.text()),
                    _ => break,
                }
            }
            got
        }));
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    child.0.kill().unwrap(); // SIGKILL
    child.0.wait().unwrap();
    stop.store(true, Ordering::Relaxed);
    let mut delivered = Vec::new();
    for c in clients {
        delivered.extend(c.await.unwrap());
    }
    assert!(delivered.len() > 50, "too little load: {}", delivered.len());

    let trail = dir.path().join("audit.db");
    let verified = run_cli(&dir.path().join("consentry.yaml"), &["audit", "verify"]);
    assert!(verified.ok, "{}", verified.text());
    let recorded = recorded_ids(&trail);
    // The first event says what started serving: the policies' fingerprint.
    let conn = rusqlite::Connection::open(&trail).unwrap();
    let first: String = conn
        .query_row("SELECT body FROM audit_events WHERE seq = 1", [], |r| {
            r.get(0)
        })
        .unwrap();
    let first: serde_json::Value = serde_json::from_str(&first).unwrap();
    assert_eq!(
        (&first["kind"], &first["decision"]),
        (&"gateway".into(), &"started".into())
    );
    assert_eq!(
        first["counts"]["policies_sha256"].as_str().unwrap().len(),
        64
    );
    let lost: Vec<&String> = delivered
        .iter()
        .filter(|id| !recorded.contains(*id))
        .collect();
    assert!(
        lost.is_empty(),
        "{} of {} delivered responses have no event: {:?}",
        lost.len(),
        delivered.len(),
        &lost[..lost.len().min(5)]
    );
    eprintln!(
        "kill -9 under load: {} responses delivered, {} events recorded, none lost",
        delivered.len(),
        recorded.len()
    );
}

/// A tmpfs of its own for the trail (needs root, as in CI); removed on drop.
struct SmallDisk(std::path::PathBuf);

impl SmallDisk {
    fn mount(dir: &std::path::Path) -> Option<SmallDisk> {
        let at = dir.join("disk");
        std::fs::create_dir(&at).unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=4m", "tmpfs"])
            .arg(&at)
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(SmallDisk(at))
    }

    /// Fills the disk; the filler's path.
    fn fill(&self) -> std::path::PathBuf {
        use std::io::Write as _;
        let f = self.0.join("filler");
        let mut file = std::fs::File::create(&f).unwrap();
        let block = vec![0u8; 64 << 10];
        while file.write_all(&block).is_ok() {}
        let _ = file.sync_all();
        f
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

fn refused(got: Got) {
    assert_eq!(
        (got.status, got.problem().as_str()),
        (503, "audit-unavailable"),
        "{}",
        got.text()
    );
    assert!(!got.text().contains("Doe"), "no data in a refusal");
}

#[tokio::test]
async fn a_full_audit_disk_refuses_and_the_gateway_recovers_when_space_returns() {
    let dir = tempfile::tempdir().unwrap();
    let Some(disk) = SmallDisk::mount(dir.path()) else {
        eprintln!(
            "SKIPPED: cannot mount a tmpfs here (not root); the audit store's failure path is covered by `audit::store` unit tests"
        );
        return;
    };
    let trail = disk.0.join("audit.db");
    let gw = TestGateway::builder()
        .config(&format!("storage: {{ audit: {} }}", trail.display()))
        .start()
        .await;
    gw.crm.on(ONE, Reply::json(contact(7)));
    let ok = get(&gw.url(ONE), SUPPORT).await;
    assert_eq!(ok.status, 200);

    // Disk full.
    let filler = disk.fill();
    let mut full = 0;
    for _ in 0..20 {
        let got = get(&gw.url(ONE), SUPPORT).await;
        if got.status == 503 {
            refused(got);
            full += 1;
        } else {
            // SQLite may still fit a few events in pages it already has.
            assert_eq!(got.status, 200);
        }
    }
    assert!(full >= 10, "only {full} of 20 refused on a full disk");
    std::fs::remove_file(&filler).unwrap();
    assert_eq!(get(&gw.url(ONE), SUPPORT).await.status, 200, "recovers");

    let v = admin_verify(&trail);
    assert!(v.is_ok(), "{v:?}");
    gw.stop().await;
}

/// A store that takes no writes (here: its table taken away under the
/// running writer, as a damaged or foreign-locked file would behave):
/// every response is refused; once it is back, service resumes and the
/// chain is whole. (A read-only remount is refused by Linux while the
/// file is open for writing, so this stands in for it.)
#[tokio::test]
async fn an_unwritable_audit_store_refuses_and_the_gateway_recovers() {
    let gw = TestGateway::builder().start().await;
    gw.crm.on(ONE, Reply::json(contact(7)));
    assert_eq!(get(&gw.url(ONE), SUPPORT).await.status, 200);
    let trail = gw.dir().join("audit.db");
    let conn = rusqlite::Connection::open(&trail).unwrap();
    conn.execute_batch("ALTER TABLE audit_events RENAME TO audit_events_away")
        .unwrap();
    for _ in 0..3 {
        refused(get(&gw.url(ONE), SUPPORT).await);
    }
    conn.execute_batch("ALTER TABLE audit_events_away RENAME TO audit_events")
        .unwrap();
    assert_eq!(get(&gw.url(ONE), SUPPORT).await.status, 200, "recovers");
    assert_eq!(admin_verify(&trail).unwrap().events, 2);
}

fn admin_verify(
    trail: &std::path::Path,
) -> Result<consentry::audit::store::Verified, consentry::audit::store::Broken> {
    consentry::audit::store::verify_all(trail, &[], None).unwrap()
}
