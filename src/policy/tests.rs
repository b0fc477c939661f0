use std::path::PathBuf;
use std::sync::Arc;

use http::Method;

use super::compile::{Options, compile};
use super::testing::respond;
use super::*;
use crate::transform::HashKey;

fn set(yaml: &str) -> Result<PolicySet, crate::diag::Report> {
    compile(
        &[(PathBuf::from("p.yaml"), yaml.to_owned())],
        &Options::default(),
    )
    .map(|(s, _)| s)
}

const CONTACTS: &str = r#"
name: contacts
placeholder: "[REDACTED]"
resources:
  - name: contact
    match: { methods: [GET], path: "/crm/v3/objects/contacts/{id}" }
    subject: $.id
    fields:
      $.id: user.unique_id
      $.properties.email: user.contact.email
      $.properties.phone: user.contact.phone_number
      $.properties.notes: { category: user.content, scan: [email, phone, payment_card] }
    unlisted: allow
  - name: contact-list
    match: { methods: [GET], path: "/crm/v3/objects/contacts" }
    records: $.results[*]
    subject: $.id
    fields:
      $.properties.email: user.contact.email
    envelope:
      $.paging: system.operations
  - name: properties
    match: { methods: [GET], path: "/crm/v3/properties/contacts" }
    passthrough: true
rules:
  - purpose: essential.service
    allow: [user, system]
    mask: { user.contact.phone_number: last4 }
  - purpose: marketing
    allow: [user.contact.email, user.unique_id, system]
    redact: [user]
"#;

/// Subjects 1 to 20 consented to marketing.
fn consented() -> super::testing::ConsentFixture {
    use crate::consent::model::{Current, Status, SubjectConsents};
    (1..=20)
        .map(|i: u32| {
            let c = Current {
                purpose: "marketing".into(),
                status: Status::Granted,
                expires: None,
                at: 0,
            };
            (
                i.to_string(),
                Arc::new(SubjectConsents { entries: vec![c] }),
            )
        })
        .collect()
}

fn get(s: &PolicySet, path: &str, purpose: &str, body: &str) -> (u16, String) {
    let (st, b) = respond(
        s,
        &Method::GET,
        path,
        purpose,
        200,
        body.as_bytes(),
        &consented(),
    )
    .unwrap();
    (st, String::from_utf8(b).unwrap())
}

#[test]
fn purposes_see_different_views() {
    let s = set(CONTACTS).unwrap();
    let body = r#"{"id":"1","properties":{"email":"a@x.example","phone":"+1 555 234 5678","notes":"call +1 555 234 5678 or a@x.example","city":"Paris"}}"#;
    assert_eq!(
        get(&s, "/crm/v3/objects/contacts/1", "essential.service", body).1,
        r#"{"id":"1","properties":{"email":"a@x.example","phone":"***5678","notes":"call ***5678 or a@x.example","city":"Paris"}}"#,
        "the notes' phone number gets the same mask as the phone field"
    );
    // `marketing.advertising` uses the `marketing` rule; its notes are redacted whole.
    assert_eq!(
        get(
            &s,
            "/crm/v3/objects/contacts/1",
            "marketing.advertising",
            body
        )
        .1,
        r#"{"id":"1","properties":{"email":"a@x.example","phone":"[REDACTED]","notes":"[REDACTED]","city":"Paris"}}"#
    );
    // A purpose no rule covers is refused.
    assert_eq!(
        get(&s, "/crm/v3/objects/contacts/1", "analytics", body).0,
        403
    );
}

#[test]
fn lists_envelopes_and_unlisted_default() {
    let s = set(CONTACTS).unwrap();
    let body = r#"{"results":[{"id":"1","properties":{"email":"a@x.example","city":"Paris"}}],"paging":{"next":{"after":"1"}}}"#;
    // `unlisted` defaults to redact: city and id are not listed for the list route.
    assert_eq!(
        get(&s, "/crm/v3/objects/contacts?limit=1", "marketing", body).1,
        r#"{"results":[{"id":"[REDACTED]","properties":{"email":"a@x.example","city":"[REDACTED]"}}],"paging":{"next":{"after":"1"}}}"#
    );
}

#[test]
fn routing_and_normalisation() {
    let s = set(CONTACTS).unwrap();
    let m = Method::GET;
    assert!(matches!(
        s.route(&m, "/crm/v3/objects/contacts/7"),
        Routed::Found(_)
    ));
    assert!(matches!(
        s.route(&Method::HEAD, "/crm/v3/objects/contacts/7"),
        Routed::Found(_)
    ));
    assert!(matches!(
        s.route(&Method::DELETE, "/crm/v3/objects/contacts/7"),
        Routed::WrongMethod
    ));
    assert!(matches!(
        s.route(&m, "/crm/v3/objects/contacts/7/x"),
        Routed::NotFound
    ));
    assert!(matches!(
        s.route(&m, "/CRM/v3/objects/Contacts/7"),
        Routed::CaseVariant
    ));
    assert_eq!(
        get(
            &s,
            "/crm//v3/objects/%63ontacts/1/",
            "essential.service",
            "{}"
        )
        .0,
        200
    );
    assert_eq!(
        get(
            &s,
            "/crm/v3/objects/contacts/..%2f1",
            "essential.service",
            "{}"
        )
        .0,
        400
    );
    assert_eq!(
        get(
            &s,
            "/crm/v3/objects/contacts/1;x",
            "essential.service",
            "{}"
        )
        .0,
        400
    );
    // Passthrough: the body is not read at all.
    assert_eq!(
        get(&s, "/crm/v3/properties/contacts", "marketing", "not json").1,
        "not json"
    );
}

#[test]
fn every_error_at_once_with_lines_and_hints() {
    let bad = r#"
name: broken
resources:
  - name: a
    match: { methods: [GET, FETCH], path: "crm/x" }
    fields:
      $.email: user.contact.emial
      email: user.contact.email
      $.notes: { category: user.content, scan: [email, ssn] }
    unlisted: hide
  - name: a
    match: { methods: [GET], path: "/crm/y/" }
rules:
  - purpose: marketting
    allow: [user]
    mask: { user.contact.email: middle3 }
  - purpose: essential
    allow: [user.contact]
    redact: [user.contact]
"#;
    let r = set(bad).unwrap_err();
    let text = r.to_string();
    let expect = [
        ("unknown method `FETCH`", 5),
        ("must start with `/`", 5),
        ("unknown data category `user.contact.emial`", 7),
        ("did you mean `user.contact.email`", 7),
        ("selector `email`", 8),
        ("unknown detector `ssn`", 9),
        ("unknown `unlisted` action `hide`", 10),
        ("resource `a` is declared twice", 11),
        ("ends with `/`", 12),
        ("unknown data use (purpose) `marketting`", 14),
        ("unknown mask `middle3`", 16),
        ("has two actions in this rule", 19),
    ];
    for (msg, line) in expect {
        let hit = r.items.iter().find(|d| d.to_string().contains(msg));
        let hit = hit.unwrap_or_else(|| panic!("missing `{msg}` in:\n{text}"));
        assert_eq!(hit.line, line, "{msg}: {hit}");
    }
    assert!(r.errors() >= expect.len() - 1, "{text}");
    assert!(text.starts_with("p.yaml:"), "{text}");
}

#[test]
fn duplicate_routes_and_yaml_errors() {
    let a = (PathBuf::from("a.yaml"), CONTACTS.to_owned());
    let b = (
        PathBuf::from("b.yaml"),
        CONTACTS.replace("name: contacts", "name: other"),
    );
    let c = (
        PathBuf::from("c.yaml"),
        "name: x\nresources: [\n".to_owned(),
    );
    let r = compile(&[a, b, c], &Options::default()).unwrap_err();
    let text = r.to_string();
    assert!(
        text.contains("is already declared by resource `contact` in a.yaml"),
        "{text}"
    );
    assert!(text.contains("c.yaml:"), "{text}");
}

#[test]
fn custom_vocabulary_and_hash_keys() {
    let yaml = r#"
name: custom
categories: [user.crm, user.crm.lead_score]
purposes: [sales.outreach]
resources:
  - name: lead
    match: { methods: [GET], path: "/leads/{id}" }
    fields:
      $.score: user.crm.lead_score
      $.email: user.contact.email
    unlisted: allow
rules:
  - purpose: sales.outreach
    allow: [user.crm]
    hash: [user.contact.email]
"#;
    let opts = Options {
        require_hash_key: true,
        ..Options::default()
    };
    let src = [(PathBuf::from("c.yaml"), yaml.to_owned())];
    let e = compile(&src, &opts).unwrap_err();
    assert!(e.to_string().contains("no hash key is configured"), "{e}");
    let opts = Options {
        hash_key: Some(Arc::new(
            HashKey::new(b"0123456789abcdef0123456789").unwrap(),
        )),
        require_hash_key: true,
        ..Default::default()
    };
    let (s, _) = compile(&src, &opts).unwrap();
    assert!(s.knows_purpose("sales.outreach"));
    let (st, body) = get(
        &s,
        "/leads/1",
        "sales.outreach",
        r#"{"score":7,"email":"a@b.example"}"#,
    );
    assert_eq!(st, 200);
    assert!(body.starts_with(r#"{"score":7,"email":""#), "{body}");
    assert!(!body.contains("a@b.example"), "{body}");
}

#[test]
fn deprecated_keys_warn() {
    let yaml = CONTACTS.replace("user.unique_id,", "user.unique_id.pseudonymous,");
    let (_, warnings) = compile(&[(PathBuf::from("p.yaml"), yaml)], &Options::default()).unwrap();
    let w: Vec<String> = warnings.warnings().map(|d| d.to_string()).collect();
    assert!(
        w.iter()
            .any(|d| d.contains("deprecated") && d.contains("use `user.unique_id`")),
        "{w:?}"
    );
}

#[test]
fn templates_must_be_normal_and_envelopes_must_not_hold_records() {
    let yaml = r#"
name: t
resources:
  - name: a
    match: { methods: [GET], path: "/x/%7euser" }
  - name: b
    match: { methods: [GET], path: /data }
    records: $.data.items[*]
    envelope:
      $.data: system.operations
rules:
  - purpose: essential.service
    allow: [system]
"#;
    let r = set(yaml).unwrap_err();
    let text = r.to_string();
    assert!(
        text.contains("not in normal form") && text.contains("write `~user`"),
        "{text}"
    );
    assert!(
        text.contains("envelope selector `$.data` reaches a value that holds records"),
        "{text}"
    );
}

#[test]
fn case_variants_and_wrong_methods() {
    let yaml = r#"
name: t
resources:
  - name: contacts
    match: { methods: [GET], path: "/crm/v3/objects/contacts/{id}" }
  - name: any-object
    match: { methods: [GET], path: "/crm/v3/objects/{type}/{id}" }
    passthrough: true
  - name: suite
    match: { methods: [GET], path: "/Api/V8/module/Contacts/{id}" }
rules:
  - purpose: essential.service
    allow: [user, system]
"#;
    let s = set(yaml).unwrap();
    let m = Method::GET;
    assert!(
        matches!(s.route(&m, "/crm/v3/objects/contacts/7"), Routed::Found(r) if &*r.name == "contacts")
    );
    assert!(
        matches!(s.route(&m, "/crm/v3/objects/deals/7"), Routed::Found(r) if &*r.name == "any-object")
    );
    // Would reach `contacts` on a CRM that ignores case: not `any-object`.
    assert!(matches!(
        s.route(&m, "/crm/v3/objects/CONTACTS/7"),
        Routed::CaseVariant
    ));
    // A lower-case request for a mixed-case template.
    assert!(matches!(
        s.route(&m, "/api/v8/module/contacts/1"),
        Routed::CaseVariant
    ));
    assert!(matches!(
        s.route(&m, "/Api/V8/module/Contacts/1"),
        Routed::Found(_)
    ));
    assert!(matches!(
        s.route(&Method::PATCH, "/crm/v3/objects/contacts/7"),
        Routed::WrongMethod
    ));
    assert!(matches!(
        s.decide(
            &Method::PATCH,
            "/crm/v3/objects/contacts/7",
            "essential.service"
        ),
        Decision::Deny(Denial::WrongMethod)
    ));
}

#[test]
fn consent_and_minimisation_keys_are_checked() {
    let base = |resource_extra: &str, rule: &str| {
        format!(
            "name: c\nresources:\n  - name: r\n    match: {{ methods: [GET, POST], path: /c }}\n{resource_extra}    fields: {{ $.e: user.contact.email }}\nrules:\n{rule}"
        )
    };
    let err = |yaml: String| set(&yaml).unwrap_err().to_string();
    let subject = "    subject: $.id\n";
    // Unknown values, with their lines.
    let e = err(base(
        subject,
        "  - purpose: marketing\n    basis: consnt\n    allow: [user]\n",
    ));
    assert!(
        e.contains("p.yaml:9:") && e.contains("unknown legal basis `consnt`"),
        "{e}"
    );
    let e = err(base(
        subject,
        "  - purpose: marketing\n    on_missing_consent: hide\n    allow: [user]\n",
    ));
    assert!(
        e.contains("unknown `on_missing_consent` action `hide`"),
        "{e}"
    );
    let e = err(base(
        subject,
        "  - purpose: marketing\n    minimise: drop\n    allow: [user]\n",
    ));
    assert!(e.contains("unknown `minimise` behaviour `drop`"), "{e}");
    // `on_missing_consent` without a basis that checks anything.
    let e = err(base(
        subject,
        "  - purpose: essential.service\n    basis: contract\n    on_missing_consent: drop\n    allow: [user]\n",
    ));
    assert!(e.contains("`on_missing_consent` has no effect"), "{e}");
    // Marketing checks consent by default, so the resource needs a subject.
    let e = err(base("", "  - purpose: marketing\n    allow: [user]\n"));
    assert!(
        e.contains("has no `subject:`") && e.contains("`marketing`"),
        "{e}"
    );
    // Redacting a record cannot reach values `unlisted: allow` lets through.
    let e = err(base(
        "    subject: $.id\n    unlisted: allow\n",
        "  - purpose: marketing\n    on_missing_consent: redact\n    allow: [user]\n",
    ));
    assert!(
        e.contains("`unlisted: allow`") && e.contains("use `unlisted: redact`"),
        "{e}"
    );
    let e = err(base(
        "    subject: $.id\n    echo_created: true\n",
        "  - purpose: marketing\n    allow: [user]\n",
    )
    .replace("[GET, POST]", "[GET]"));
    assert!(
        e.contains("`echo_created` is about 201 answers to POST"),
        "{e}"
    );
    let e = err(base(
        "    subject: $.id\n    path_subject: id\n",
        "  - purpose: marketing\n    allow: [user]\n",
    ));
    assert!(
        e.contains("`path_subject: id` names no parameter of this path"),
        "{e}"
    );
    let e = err(base(
        "    passthrough: true\n    path_subject: id\n",
        "  - purpose: essential.service\n    allow: [user]\n",
    )
    .replace("path: /c }", "path: \"/c/{id}\" }"));
    assert!(
        e.contains("`path_subject` has no effect on a passthrough resource"),
        "{e}"
    );
    // A non-consent basis on an opt-in purpose compiles, with a warning.
    let (_, warnings) = compile(
        &[(
            PathBuf::from("p.yaml"),
            base(
                subject,
                "  - purpose: marketing\n    basis: legal_obligation\n    allow: [user]\n",
            ),
        )],
        &Options::default(),
    )
    .unwrap();
    let w: Vec<String> = warnings.warnings().map(|w| w.to_string()).collect();
    assert!(w.iter().any(|w| w.contains("opt-in by default")), "{w:?}");
    // The defaults: marketing needs consent and drops; support needs none.
    let s = set(&base(subject, "  - purpose: marketing\n    allow: [user]\n  - purpose: essential.service\n    allow: [user]\n")).unwrap();
    let r = &s.resources()[0];
    let m = r.rule_for("marketing").unwrap();
    assert_eq!(m.basis, Some(LegalBasis::Consent));
    assert_eq!(m.consent.map(|c| c.on_missing), Some(OnMissing::Drop));
    assert_eq!(m.minimise, Minimise::Remove);
    assert!(r.rule_for("essential.service").unwrap().consent.is_none());
}

#[test]
fn encryption_is_checked_where_it_is_declared() {
    let yaml = |encrypt: &str, extra: &str| {
        format!(
            r#"
name: enc
encrypt:
  {encrypt}
resources:
  - name: contact
    match: {{ methods: [GET, PATCH], path: "/c/{{id}}" }}
    subject: $.id
    {extra}
    fields:
      $.email: user.contact.email
      $.phone: user.contact.phone_number
    search:
      params: {{ email: user.contact.email }}
rules:
  - purpose: essential.service
    allow: [user]
  - purpose: marketing
    token: [user.contact.phone_number]
    allow: [user.contact.email]
"#
        )
    };
    let errors = |y: String, opts: &Options| {
        compile(&[(PathBuf::from("e.yaml"), y)], opts)
            .err()
            .map(|r| r.to_string())
            .unwrap_or_default()
    };
    let good = "user.contact: deterministic";
    let ok = errors(yaml(good, "path_subject: id"), &Options::default());
    assert_eq!(ok, "", "{ok}");
    // Without a master key where one is required: the line of `encrypt`.
    let strict = Options {
        require_master_key: true,
        ..Options::default()
    };
    let e = errors(yaml(good, "path_subject: id"), &strict);
    assert!(
        e.contains("e.yaml:4:3") && e.contains("no master key is configured"),
        "{e}"
    );
    // A write whose customer is unknown cannot be encrypted for.
    let e = errors(yaml(good, ""), &Options::default());
    assert!(e.contains("the customer written to is not known"), "{e}");
    // Searching a randomised category cannot work.
    let e = errors(
        yaml("user.contact: randomised", "path_subject: id"),
        &Options::default(),
    );
    assert!(e.contains("equal values have different tokens"), "{e}");
    assert!(
        errors(
            yaml("user.contact: secret", "path_subject: id"),
            &Options::default()
        )
        .contains("unknown encryption `secret`")
    );
    // `token` on a category that is not encrypted.
    let e = errors(
        yaml("user.contact.email: deterministic", "path_subject: id"),
        &Options::default(),
    );
    assert!(
        e.contains("`user.contact.phone_number` is not encrypted"),
        "{e}"
    );
}

#[test]
fn the_fingerprint_covers_the_policy_files_that_were_compiled() {
    let dir = tempfile::tempdir().unwrap();
    let policies = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    std::fs::copy(
        policies.join("hubspot-contacts.yaml"),
        dir.path().join("hubspot-contacts.yaml"),
    )
    .unwrap();
    let opts = Options {
        hash_key: HashKey::new(b"fingerprint-test-key-0123456789").map(Arc::new),
        has_master_key: true,
        ..Options::default()
    };
    let load = || {
        super::compile::load_dir(dir.path(), &opts)
            .unwrap_or_else(|r| panic!("{r}"))
            .0
    };
    let first = load().fingerprint().cloned().unwrap();
    assert_eq!(first.files, 1);
    // A policy test beside it is not compiled, so not fingerprinted.
    std::fs::write(dir.path().join("hubspot-contacts.test.yaml"), "cases: []\n").unwrap();
    assert_eq!(load().fingerprint(), Some(&first));
    // A changed policy is.
    let path = dir.path().join("hubspot-contacts.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, format!("{text}\n# edited\n")).unwrap();
    assert_ne!(load().fingerprint(), Some(&first));
}
