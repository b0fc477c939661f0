//! `consentry demo`: the sample CRM (`crm`) with invented contacts (`data`),
//! and the gateway in front of it running the example config and policies.

pub mod crm;
pub mod data;

use std::net::SocketAddr;

use crate::consent::Consents;
use crate::consent::model::{ConsentEvent, Status};
use crate::policy::PolicySet;

/// The demo's admin token and hash key, used by `consentry demo` only, when
/// `CONSENTRY_ADMIN_TOKEN` or `CONSENTRY_HASH_KEY` is not set. They are
/// published, so `consentry serve` never falls back to them: the example
/// config names the variables without defaults.
pub const DEMO_ADMIN_TOKEN: &str = "demo-admin-token-change-me-0123456789";
pub const DEMO_HASH_KEY: &str = "demo-only-hash-key-0123456789abcdef";
pub const DEMO_AUDITOR_TOKEN: &str = "demo-auditor-token-change-me-0123456789";

/// How the demo's curl commands spell the admin and auditor tokens.
pub const ADMIN_TOKEN_HINT: &str =
    "${CONSENTRY_ADMIN_TOKEN:-demo-admin-token-change-me-0123456789}";
pub const AUDITOR_TOKEN_HINT: &str =
    "${CONSENTRY_AUDITOR_TOKEN:-demo-auditor-token-change-me-0123456789}";

/// The environment as `consentry demo` sees it: the process environment,
/// with the demo's published secrets where it has none.
pub fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().or_else(|| match name {
        "CONSENTRY_ADMIN_TOKEN" => Some(DEMO_ADMIN_TOKEN.into()),
        "CONSENTRY_HASH_KEY" => Some(DEMO_HASH_KEY.into()),
        "CONSENTRY_AUDITOR_TOKEN" => Some(DEMO_AUDITOR_TOKEN.into()),
        _ => None,
    })
}

/// Makes the master key file the config names, if it does not exist yet:
/// the demo encrypts from its first run. (`consentry serve` never makes
/// one: a missing key file stops it.)
pub fn ensure_master_key(config: &std::path::Path) -> anyhow::Result<()> {
    let Some(file) = crate::config::master_key_file(config) else {
        return Ok(());
    };
    if file.exists() {
        return Ok(());
    }
    if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    crate::keys::master::MasterKeys::generate()
        .and_then(|ring| ring.write_new_file(&file))
        .map_err(anyhow::Error::msg)?;
    eprintln!(
        "demo: made a master key at {} (0600); back it up to keep reading what the demo encrypted",
        file.display()
    );
    Ok(())
}

/// Seeds marketing opt-ins for the sample contacts, except every tenth one,
/// who never opted in. Idempotent: the grants carry a fixed time and source,
/// so a later withdrawal stays in force across restarts.
pub fn seed_consents(consents: &Consents, set: &PolicySet) -> Result<(), String> {
    const SIGNUP: crate::clock::Millis = 1_767_225_600_000; // 2026-01-01T00:00:00Z
    let events: Vec<ConsentEvent> = (1..=crm::CONTACTS)
        .filter(|id| id % 10 != 0)
        .map(|id| ConsentEvent {
            subject: id.to_string(),
            purpose: "marketing".into(),
            status: Status::Granted,
            at: SIGNUP,
            source: "demo-signup-form".into(),
            expires: None,
            proof: Some(format!("signup-{id}")),
        })
        .collect();
    consents
        .record(&events, &|p| set.knows_purpose(p))
        .map(|_| ())
        .map_err(|e| format!("cannot seed the demo's consent records: {e}"))
}

/// The demo clients' API keys. They are published: use them for the demo only.
pub const SUPPORT_KEY: &str = "demo-support-key-5f1c8a02e7";
pub const MARKETING_KEY: &str = "demo-marketing-key-93b4d6e1a0";
pub const ANALYTICS_KEY: &str = "demo-analytics-key-2c7e90b4f1";

/// What the demo prints: where things run and what to try.
pub fn instructions(gateway: SocketAddr, crm: SocketAddr, admin: Option<SocketAddr>) -> String {
    let g = format!("http://{gateway}");
    let consent = match admin {
        None => "(the config has no `admin:` section, so the admin API is off)".to_owned(),
        Some(a) => format!(
            r#"Consent: marketing needs each customer's opt-in. The demo recorded opt-ins
for every contact except each tenth one.

  # contact 10 never opted in: 403 consent-required (and left out of lists)
  curl -s -H 'X-Api-Key: {MARKETING_KEY}' {g}/crm/v3/objects/contacts/10

  # contact 2 withdraws marketing consent, through the admin API
  curl -s -X POST http://{a}/v1/consents \
       -H "Authorization: Bearer {ADMIN_TOKEN_HINT}" \
       -H 'Content-Type: application/json' \
       -d '{{"subject": "2", "purpose": "marketing", "status": "withdrawn", "source": "unsubscribe-link"}}'

  # the next marketing list leaves contact 2 out (1 and 3 remain)
  curl -s -H 'X-Api-Key: {MARKETING_KEY}' '{g}/crm/v3/objects/contacts?limit=3'

  # contact 2's consent history
  curl -s -H "Authorization: Bearer {ADMIN_TOKEN_HINT}" http://{a}/v1/subjects/2/consents/history

  # let marketing see contact 1001 (created above), then read it as marketing again
  curl -s -X POST http://{a}/v1/consents -H "Authorization: Bearer {ADMIN_TOKEN_HINT}" \
       -H 'Content-Type: application/json' \
       -d '{{"subject": "1001", "purpose": "marketing", "status": "granted", "source": "demo"}}'

Keys: rotate the master key online (tokens in the CRM stay as they are), or
destroy one customer's data key (crypto-shredding: their tokens are
unreadable for good; the read shows [REDACTED]).

  # a new master key version in consentry-data/master.key, every data key
  # re-wrapped by the running gateway (the CLI reads the config's secrets)
  CONSENTRY_ADMIN_TOKEN={DEMO_ADMIN_TOKEN} CONSENTRY_HASH_KEY={DEMO_HASH_KEY} \
       cargo run --release -- keys rotate
  curl -s -H "Authorization: Bearer {ADMIN_TOKEN_HINT}" http://{a}/v1/keys
  curl -s -X DELETE -H "Authorization: Bearer {ADMIN_TOKEN_HINT}" http://{a}/v1/subjects/1001/key
  curl -s -H 'X-Api-Key: {SUPPORT_KEY}' {g}/crm/v3/objects/contacts/1001

Audit: every request above is in consentry-data/audit.db, chained and
signed, customers as pseudonyms (the CLI reads the config's secrets):

  export CONSENTRY_ADMIN_TOKEN={DEMO_ADMIN_TOKEN} CONSENTRY_HASH_KEY={DEMO_HASH_KEY} \
         CONSENTRY_AUDITOR_TOKEN={DEMO_AUDITOR_TOKEN}
  cargo run --release -- audit query --subject 7       # who saw contact 7, when, why
  cargo run --release -- audit verify                  # chain and signed checkpoints

  # the same through the admin API, with the read-only auditor token (paged)
  curl -s -H "Authorization: Bearer {AUDITOR_TOKEN_HINT}" 'http://{a}/v1/audit/events?subject=7&limit=5'

Subject requests (GDPR Art. 15 and 17):

  # contact 7's access report: consent history, every access with the
  # categories each purpose saw, and (admin token only) the CRM's record
  curl -s -H "Authorization: Bearer {ADMIN_TOKEN_HINT}" http://{a}/v1/subjects/7/access

  # erase contact 8: suppressed (never served again), data key destroyed,
  # DELETE forwarded to the CRM, earlier audit entries unlinked; a receipt
  cargo run --release -- subject erase 8 --unlink
  curl -s -H 'X-Api-Key: {SUPPORT_KEY}' '{g}/crm/v3/objects/contacts?limit=10'   # no contact 8
  cargo run --release -- audit query --subject 8       # only the erasure names them now
  cargo run --release -- audit verify                  # the chain still checks out

Operating it (README, "Running it in production"):

  curl -s http://{a}/readyz                            # store, audit trail, CRM
  curl -s -H "Authorization: Bearer {AUDITOR_TOKEN_HINT}" http://{a}/metrics | grep '^consentry_requests_total'

  # what marketing's rule does to contact 7, field by field
  curl -s -H "Authorization: Bearer {ADMIN_TOKEN_HINT}" 'http://{a}/v1/policies/explain?method=GET&path=/crm/v3/objects/contacts/7&purpose=marketing'

  # edit policies/hubspot-contacts.yaml (say, `mode: report` under `name:`
  # to pass answers unchanged and only count), then reload: a broken file
  # is refused with file and line, and the old version keeps serving
  curl -s -X POST -H "Authorization: Bearer {ADMIN_TOKEN_HINT}" http://{a}/v1/policies/reload
  kill -HUP $(pgrep -f 'consentry demo')                # the same by signal"#
        ),
    };
    format!(
        r#"consentry demo
  sample CRM (HubSpot-shaped, invented contacts): http://{crm}
  consentry in front of it:                       {g}

The same contact as three purposes see it:

  # support (essential.service): everything, phones masked to the last 4 digits,
  # card numbers in the notes redacted
  curl -s -H 'X-Api-Key: {SUPPORT_KEY}' {g}/crm/v3/objects/contacts/7

  # marketing: only the e-mail address (and system fields)
  curl -s -H 'X-Api-Key: {MARKETING_KEY}' {g}/crm/v3/objects/contacts/7

  # analytics: a keyed pseudonym instead of the e-mail, country and city only
  curl -s -H 'X-Api-Key: {ANALYTICS_KEY}' {g}/crm/v3/objects/contacts/7

  # a list, as marketing sees it
  curl -s -H 'X-Api-Key: {MARKETING_KEY}' '{g}/crm/v3/objects/contacts?limit=3'

  # and what the CRM itself holds (no gateway)
  curl -s http://{crm}/crm/v3/objects/contacts/7

Encryption at rest: e-mail, phone, street, postcode, birth date and notes
reach the CRM only as tokens.

  # support creates a contact through consentry: the answer is support's view
  # (the new id is 1001 on a first run; the sample CRM keeps its contacts)
  curl -s -X POST {g}/crm/v3/objects/contacts -H 'X-Api-Key: {SUPPORT_KEY}' \
       -H 'Content-Type: application/json' \
       -d '{{"properties": {{"email": "nia.okafor@example.org", "firstname": "Nia", "phone": "+44 20 7946 0958", "zip": "SW1A 2AA", "notes": "Prefers calls after 6pm"}}}}'

  # what the CRM stored: ctd1./ctk1. tokens, the first name in clear
  curl -s http://{crm}/crm/v3/objects/contacts/1001

  # read back as support: in clear (the phone masked, as its rule says)
  curl -s -H 'X-Api-Key: {SUPPORT_KEY}' {g}/crm/v3/objects/contacts/1001

  # as marketing: refused until the customer opts in (403 consent-required);
  # once they have, the e-mail address only, everything else removed
  curl -s -H 'X-Api-Key: {MARKETING_KEY}' {g}/crm/v3/objects/contacts/1001

  # search still works: the gateway rewrites the e-mail into its token
  curl -s -H 'X-Api-Key: {SUPPORT_KEY}' '{g}/crm/v3/objects/contacts?email=nia.okafor%40example.org'

{consent}

Refusals are problem+json:

  curl -s {g}/crm/v3/objects/contacts/7                                   # 401: no API key
  curl -s -H 'X-Api-Key: {MARKETING_KEY}' -H 'X-Purpose: essential.service' {g}/crm/v3/objects/contacts/7   # 403
  curl -s -H 'X-Api-Key: {SUPPORT_KEY}' {g}/crm/v3/objects/contacts/..%2f7   # 400: ambiguous path
  curl -s -H 'X-Api-Key: {SUPPORT_KEY}' {g}/crm/v3/owners                  # 403: no policy for this route

Ctrl-C stops both."#
    )
}
