//! `consentry demo`: the sample CRM (`crm`) with invented contacts (`data`),
//! and the gateway in front of it running the example config and policies.

pub mod crm;
pub mod data;

use std::net::SocketAddr;

/// The demo clients' API keys. They are published: use them for the demo only.
pub const SUPPORT_KEY: &str = "demo-support-key-5f1c8a02e7";
pub const MARKETING_KEY: &str = "demo-marketing-key-93b4d6e1a0";
pub const ANALYTICS_KEY: &str = "demo-analytics-key-2c7e90b4f1";

/// What the demo prints: where things run and what to try.
pub fn instructions(gateway: SocketAddr, crm: SocketAddr) -> String {
    let g = format!("http://{gateway}");
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

Refusals are problem+json:

  curl -s {g}/crm/v3/objects/contacts/7                                   # 401: no API key
  curl -s -H 'X-Api-Key: {MARKETING_KEY}' -H 'X-Purpose: essential.service' {g}/crm/v3/objects/contacts/7   # 403
  curl -s -H 'X-Api-Key: {SUPPORT_KEY}' {g}/crm/v3/objects/contacts/..%2f7   # 400: ambiguous path
  curl -s -H 'X-Api-Key: {SUPPORT_KEY}' {g}/crm/v3/owners                  # 403: no policy for this route

Ctrl-C stops both."#
    )
}
