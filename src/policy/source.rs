//! Policy files as written: serde types, one per YAML shape.
//!
//! Nothing here is used on the request path: `compile` checks these and turns
//! them into immutable runtime types. Every value a user may get wrong is
//! `Spanned`, so that a mistake can be reported with its line.

use std::collections::HashMap;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, MapAccess, Visitor};
use serde_saphyr::Spanned;

/// One policy file (`policies/*.yaml`, except `*.test.yaml`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyFile {
    /// Unique name of the policy; shown in errors, logs and explanations.
    pub name: Spanned<String>,
    /// Free text for humans.
    #[serde(default)]
    pub description: Option<String>,
    /// `enforce` (default) or `report` (decide and count, change nothing).
    #[serde(default)]
    pub mode: Option<Spanned<String>>,
    /// The JSON string a redacted value becomes; absent: `null`.
    #[serde(default)]
    pub placeholder: Option<Spanned<String>>,
    /// Replacement text per detector (`email: "[email]"`).
    #[serde(default)]
    pub detectors: HashMap<Spanned<String>, Spanned<String>>,
    /// Custom data categories, each below an existing one.
    #[serde(default)]
    pub categories: Vec<Spanned<String>>,
    /// Custom data uses (purposes), each below an existing one.
    #[serde(default)]
    pub purposes: Vec<Spanned<String>>,
    /// Categories the CRM stores encrypted: category -> `randomised`
    /// (default choice) or `deterministic` (equal values give equal tokens,
    /// so the CRM can search and de-duplicate on them).
    #[serde(default)]
    pub encrypt: HashMap<Spanned<String>, Spanned<String>>,
    pub resources: Vec<ResourceSource>,
    #[serde(default)]
    pub rules: Vec<RuleSource>,
}

/// One API resource: a route and where its personal data sits.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceSource {
    pub name: Spanned<String>,
    #[serde(rename = "match")]
    pub route: RouteSource,
    /// Forward without inspecting the body (for routes with no personal data).
    #[serde(default)]
    pub passthrough: Option<Spanned<bool>>,
    /// Where the records are: `$` (default) for one object, `$.results[*]` for a list.
    #[serde(default)]
    pub records: Option<Spanned<String>>,
    /// Where the records of a write request's body are (POST/PUT/PATCH);
    /// default `$` (the body is one record).
    #[serde(default)]
    pub request_records: Option<Spanned<String>>,
    /// Where a record's subject id is, relative to the record (`$.id`).
    #[serde(default)]
    pub subject: Option<Spanned<String>>,
    /// A 201 answer to a POST here is the record just created from the
    /// caller's (minimised) body: it comes back without a consent check.
    #[serde(default)]
    pub echo_created: Option<Spanned<bool>>,
    /// The path parameter that names a write's subject (`id` for
    /// `/contacts/{id}`): a write for a customer without the consent its
    /// purpose needs is refused before it reaches the CRM.
    #[serde(default)]
    pub path_subject: Option<Spanned<String>>,
    /// Selector (relative to the record) -> data category.
    #[serde(default)]
    pub fields: HashMap<Spanned<String>, FieldSource>,
    /// Selector (relative to the body) -> data category, for values outside records.
    #[serde(default)]
    pub envelope: HashMap<Spanned<String>, FieldSource>,
    /// What happens to values no selector reaches: `allow`, `redact` (default) or `remove`.
    #[serde(default)]
    pub unlisted: Option<Spanned<String>>,
    /// Response headers that may carry personal data and may pass (e.g. `Location`).
    #[serde(default)]
    pub response_headers: Vec<Spanned<String>>,
    /// Equality searches the gateway rewrites for encrypted categories.
    #[serde(default)]
    pub search: Option<SearchSource>,
}

/// Where a resource's requests search, by name -> data category.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchSource {
    /// Query parameters (`?email=...`).
    #[serde(default)]
    pub params: HashMap<Spanned<String>, Spanned<String>>,
    /// Property names in a HubSpot-style search body
    /// (`filterGroups[].filters[]` with `propertyName`, `operator`, `value`).
    /// The body of a POST to this resource is then a search, not a write.
    #[serde(default)]
    pub hubspot_filters: HashMap<Spanned<String>, Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSource {
    /// HTTP methods; `GET` also covers `HEAD`.
    pub methods: Vec<Spanned<String>>,
    /// Path template: literal segments and `{name}` parameters.
    pub path: Spanned<String>,
}

/// A field: a category, or a category with free-text detectors.
#[derive(Debug)]
pub struct FieldSource {
    pub category: Spanned<String>,
    pub scan: Vec<Spanned<String>>,
}

// Written by hand rather than `#[serde(untagged)]`, which would lose the spans:
// the value is read as `Spanned<FieldValue>` (string or mapping), then split.
impl<'de> Deserialize<'de> for FieldSource {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Spanned::<FieldValue>::deserialize(d)?;
        Ok(match v.value {
            FieldValue::Category(c) => FieldSource {
                category: Spanned::new(c, v.referenced, v.defined),
                scan: Vec::new(),
            },
            FieldValue::Detailed(f) => f,
        })
    }
}

enum FieldValue {
    Category(String),
    Detailed(FieldSource),
}

impl<'de> Deserialize<'de> for FieldValue {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = FieldValue;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a data category, or a mapping with `category` and `scan`")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<FieldValue, E> {
                Ok(FieldValue::Category(v.to_owned()))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<FieldValue, A::Error> {
                let mut category: Option<Spanned<String>> = None;
                let mut scan = Vec::new();
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "category" => category = Some(map.next_value()?),
                        "scan" => scan = map.next_value()?,
                        other => {
                            return Err(de::Error::unknown_field(other, &["category", "scan"]));
                        }
                    }
                }
                let category = category.ok_or_else(|| de::Error::missing_field("category"))?;
                Ok(FieldValue::Detailed(FieldSource { category, scan }))
            }
        }
        d.deserialize_any(V)
    }
}

/// What one purpose may see.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSource {
    /// The data use this rule is for; also covers the uses below it.
    pub purpose: Spanned<String>,
    #[serde(default)]
    pub allow: Vec<Spanned<String>>,
    #[serde(default)]
    pub redact: Vec<Spanned<String>>,
    #[serde(default)]
    pub remove: Vec<Spanned<String>>,
    #[serde(default)]
    pub hash: Vec<Spanned<String>>,
    /// Encrypted categories passed as the stored tokens, not decrypted.
    #[serde(default)]
    pub token: Vec<Spanned<String>>,
    /// Category -> mask (`last4`, `first2`, `first1_last2`, `email_domain`).
    #[serde(default)]
    pub mask: HashMap<Spanned<String>, Spanned<String>>,
    /// The lawful basis of the purpose: `consent`, `legitimate_interest`,
    /// `contract`, `legal_obligation`, `vital_interests`, `public_task`.
    #[serde(default)]
    pub basis: Option<Spanned<String>>,
    /// A record whose subject has not consented (or objected): `drop`
    /// (default), `redact` or `block`.
    #[serde(default)]
    pub on_missing_consent: Option<Spanned<String>>,
    /// A write carrying categories this purpose may not collect: `remove`
    /// them (default) or `refuse` the request.
    #[serde(default)]
    pub minimise: Option<Spanned<String>>,
}

/// A policy test file (`*.test.yaml`): cases run by `consentry policy test`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestFile {
    pub cases: Vec<TestCase>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestCase {
    pub name: Spanned<String>,
    /// `GET /crm/v3/objects/contacts/1`
    pub request: Spanned<String>,
    pub purpose: Spanned<String>,
    /// HTTP status of the upstream response (default 200).
    #[serde(default)]
    pub status: Option<u16>,
    /// The upstream body: JSON text (a string keeps it byte for byte).
    #[serde(default)]
    pub response: Option<Spanned<String>>,
    /// The expected body, compared as JSON values.
    #[serde(default)]
    pub expect: Option<Spanned<String>>,
    /// The expected body, compared byte for byte.
    #[serde(default)]
    pub expect_exact: Option<Spanned<String>>,
    /// The expected refusal status (403, 502, ...) instead of a body.
    #[serde(default)]
    pub expect_status: Option<Spanned<u16>>,
    /// The consent state the case runs with (no store needed).
    #[serde(default)]
    pub consent: Vec<ConsentSource>,
    /// For write requests: the request body the client sends.
    #[serde(default)]
    pub body: Option<Spanned<String>>,
    /// For write requests: the body the CRM should receive (JSON values compared).
    #[serde(default)]
    pub expect_upstream: Option<Spanned<String>>,
}

/// One subject's statement in a policy test case.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsentSource {
    pub subject: Spanned<String>,
    pub purpose: Spanned<String>,
    /// `granted`, `withdrawn`, `objected` or `expired` (a grant that has lapsed).
    pub status: Spanned<String>,
}
