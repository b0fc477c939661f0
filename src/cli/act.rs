//! Administrative acts done from the command line while the gateway is
//! stopped (key rotation, retirement and shredding, consent imports): the
//! CLI records them in the audit trail itself, as the gateway's admin API
//! does for what goes through it. The gateway being stopped, the trail's
//! lock is free.

use anyhow::Context as _;

use crate::audit::{Event, SubjectEntry};
use crate::config::Config;

/// Records `kind`/`decision` about `subjects` (ids, with what happened to
/// each). The act is already done: if the trail cannot be written, the
/// error says so and the command fails.
pub fn record(
    cfg: &Config,
    kind: &str,
    decision: &str,
    subjects: &[(&str, String)],
    counts: Option<serde_json::Value>,
) -> anyhow::Result<()> {
    let Some(path) = &cfg.audit else {
        return Ok(());
    };
    let done = || -> anyhow::Result<()> {
        let key = crate::audit::config_pseudonym_key(cfg)?;
        let entries = subjects
            .iter()
            .map(|(id, what)| SubjectEntry {
                subject: crate::audit::pseudonym(&key, id),
                record: what.clone(),
            })
            .collect();
        let audit = crate::audit::writer::Audit::start(crate::audit::open_signed(path)?, key)?;
        audit.record_blocking(Event::act(kind, "cli", decision, entries, counts))?;
        Ok(())
    };
    done().with_context(|| {
        format!(
            "the change was made, but its audit event could not be stored in {}",
            path.display()
        )
    })
}
