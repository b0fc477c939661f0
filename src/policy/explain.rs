//! `consentry policy explain`: what the policies decide for one request,
//! field by field, and which rule decided it. Read from the compiled
//! policies, so it is exactly what the gateway would do (consent and the
//! values themselves aside).

use http::Method;

use super::{Decision, Denial, PolicySet};
use crate::transform::{Action, Detector, Seal};

fn action(a: Action) -> String {
    match a {
        Action::Mask(m) => format!("mask ({m})"),
        a => a.name().into(),
    }
}

/// `explain` for a request as given (the CLI's arguments, the admin API's
/// query): the method in any case, the path normalised as the gateway
/// normalises it. Why not, if either cannot be served.
pub fn request(
    set: &PolicySet,
    method: &str,
    path: &str,
    purpose: &str,
) -> Result<serde_json::Value, String> {
    let m = Method::from_bytes(method.to_ascii_uppercase().as_bytes())
        .map_err(|_| format!("`{method}` is not an HTTP method"))?;
    let path =
        crate::path::normalise(path).map_err(|e| format!("the path cannot be served: {e}"))?;
    Ok(explain(set, &m, &path, purpose))
}

/// The decision for `method path` under `purpose`, as JSON.
pub fn explain(set: &PolicySet, method: &Method, path: &str, purpose: &str) -> serde_json::Value {
    let decision = set.decide(method, path, purpose);
    if let Decision::Deny(Denial::PurposeNotCovered(r)) = &decision
        && r.mode == super::Mode::Report
    {
        return serde_json::json!({
            "decision": "pass (report mode)",
            "policy": &*r.policy,
            "resource": &*r.name,
            "route": &*r.template,
            "mode": "report",
            "would": "refuse: this policy has no rule for this purpose",
        });
    }
    match decision {
        Decision::Deny(d) => serde_json::json!({
            "decision": "refuse",
            "reason": match d {
                Denial::Unmatched => "no policy declares this route (`routes.unmatched` decides: deny by default)".to_owned(),
                Denial::WrongMethod => "the route is declared, but not for this method".to_owned(),
                Denial::CaseVariant => "the path differs from a declared route only in letter case".to_owned(),
                Denial::PurposeNotCovered(r) => format!(
                    "policy `{}` has no rule for this purpose (resource `{}`)",
                    r.policy, r.name
                ),
            },
        }),
        Decision::Pass { resource } => serde_json::json!({
            "decision": "pass",
            "policy": &*resource.policy,
            "resource": &*resource.name,
            "route": &*resource.template,
            "reason": "a passthrough resource: forwarded without reading the body",
        }),
        Decision::Inspect { resource, rule } => {
            let p = &resource.program;
            let fields: Vec<serde_json::Value> = p
                .fields
                .iter()
                .zip(&rule.table.fields)
                .map(|(f, a)| {
                    let mut v = serde_json::json!({
                        "selector": f.selector,
                        "category": p.categories.get(f.category as usize),
                        "action": action(*a),
                    });
                    if f.seal != Seal::No {
                        v["stored"] = format!("{:?} tokens", f.seal).to_lowercase().into();
                    }
                    let scan: Vec<&str> = f.scan.iter().map(Detector::name).collect();
                    if !scan.is_empty() {
                        v["detectors"] = scan.into();
                    }
                    v
                })
                .collect();
            let detectors: serde_json::Map<String, serde_json::Value> = Detector::ALL
                .into_iter()
                .map(|d| {
                    (
                        d.name().to_owned(),
                        action(rule.table.detectors[d as usize]).into(),
                    )
                })
                .collect();
            serde_json::json!({
                "decision": "inspect",
                "policy": &*resource.policy,
                "resource": &*resource.name,
                "route": &*resource.template,
                "mode": format!("{:?}", resource.mode).to_lowercase(),
                "rule": {
                    "purpose": &*rule.purpose,
                    "basis": rule.basis.map(|b| format!("{b:?}")),
                    "consent": rule.consent.map(|c| format!("{:?}, on missing: {:?}", c.basis, c.on_missing)),
                },
                "fields": fields,
                "unlisted_fields": action(rule.table.unlisted),
                "detected_values": detectors,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_rule_and_each_fields_action() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/policies");
        let (set, _) = crate::policy::load_dir(std::path::Path::new(dir), &Default::default())
            .unwrap_or_else(|r| panic!("{r}"));
        let v = explain(
            &set,
            &Method::GET,
            "/crm/v3/objects/contacts/7",
            "marketing.advertising",
        );
        assert_eq!(v["decision"], "inspect");
        assert_eq!(v["rule"]["purpose"], "marketing");
        let field = |sel: &str| {
            v["fields"]
                .as_array()
                .unwrap()
                .iter()
                .find(|f| f["selector"] == sel)
                .cloned()
                .unwrap()
        };
        assert_eq!(field("$.properties.email")["action"], "allow");
        assert_eq!(field("$.properties.phone")["action"], "remove");
        let v = explain(
            &set,
            &Method::GET,
            "/crm/v3/objects/contacts/7",
            "essential.service",
        );
        assert_eq!(v["rule"]["purpose"], "essential.service");
        assert_eq!(
            v["fields"]
                .as_array()
                .unwrap()
                .iter()
                .find(|f| f["selector"] == "$.properties.phone")
                .unwrap()["action"],
            "mask (last4)"
        );
        let v = explain(&set, &Method::GET, "/nowhere", "marketing");
        assert_eq!(v["decision"], "refuse");
    }
}
