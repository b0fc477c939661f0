//! The fideslang vocabulary: data categories (`user.contact.email`) and data
//! uses, i.e. purposes (`marketing.advertising`).
//!
//! Both are hierarchies by dotted prefix: a rule for `user.contact` covers
//! `user.contact.email`, and a client allowed `marketing` may declare
//! `marketing.advertising`. The default taxonomy is embedded (see the source
//! line at the top of each list); policies may add their own keys below an
//! existing parent.

use std::collections::HashSet;
use std::sync::OnceLock;

const CATEGORIES: &str = include_str!("taxonomy/categories.txt");
const USES: &str = include_str!("taxonomy/uses.txt");

/// Keys fideslang 3.2 deprecated, with their replacements.
const DEPRECATED: &[(&str, &str)] = &[
    ("user.biometric", "user.biometrics"),
    ("user.biometric.fingerprint", "user.biometrics.fingerprint"),
    ("user.biometric.retinal", "user.biometrics.retinal"),
    ("user.biometric.voice", "user.biometrics.voice"),
    ("user.biometric.health", "user.biometrics"),
    ("user.childrens", "user.children"),
    ("user.contact.url", "user.contact.social_url"),
    ("user.contact.organization", "user.contact"),
    ("user.health_and_medical", "user.health"),
    ("user.health_and_medical.genetic", "user.health.genetic"),
    (
        "user.health_and_medical.insurance_beneficiary_id",
        "user.health.insurance_beneficiary_id",
    ),
    ("user.health_and_medical.record_id", "user.health.record_id"),
    ("user.location.imprecise", "user.location.coarse"),
    ("user.job_title", "user.professional_information.job_title"),
    ("user.workplace", "user.professional_information.workplace"),
    ("user.account.settings", "user.settings"),
    ("user.social", "user.social_activity"),
    (
        "user.authorization.biometric",
        "user.authorization.biometrics",
    ),
    ("user.sensor", "user.device.sensor"),
    ("user.telemetry", "user.device.telemetry"),
    ("user.user_sensor", "user.device.sensor"),
    ("user.unique_id.pseudonymous", "user.unique_id"),
    ("personalize.profiling", "personalize.content.profiling"),
];

fn list(text: &'static str) -> impl Iterator<Item = &'static str> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
}

fn sets() -> &'static (HashSet<&'static str>, HashSet<&'static str>) {
    static SETS: OnceLock<(HashSet<&'static str>, HashSet<&'static str>)> = OnceLock::new();
    SETS.get_or_init(|| (list(CATEGORIES).collect(), list(USES).collect()))
}

/// Which vocabulary a key belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Category,
    Use,
}

impl Kind {
    pub fn noun(self) -> &'static str {
        match self {
            Kind::Category => "data category",
            Kind::Use => "data use (purpose)",
        }
    }
}

pub fn is_default(kind: Kind, key: &str) -> bool {
    let (c, u) = sets();
    match kind {
        Kind::Category => c.contains(key),
        Kind::Use => u.contains(key),
    }
}

pub fn defaults(kind: Kind) -> impl Iterator<Item = &'static str> {
    match kind {
        Kind::Category => list(CATEGORIES),
        Kind::Use => list(USES),
    }
}

/// The replacement of a deprecated key.
pub fn replacement(key: &str) -> Option<&'static str> {
    DEPRECATED.iter().find(|(k, _)| *k == key).map(|(_, r)| *r)
}

/// Whether `key` is `ancestor` or below it (`user.contact.email` within `user`).
pub fn is_within(key: &str, ancestor: &str) -> bool {
    key == ancestor
        || (key.len() > ancestor.len()
            && key.starts_with(ancestor)
            && key.as_bytes()[ancestor.len()] == b'.')
}

/// Whether `key` is spelled like a taxonomy key: lowercase dotted segments.
pub fn well_formed(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 200
        && key.split('.').all(|seg| {
            !seg.is_empty()
                && seg
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        })
}

/// The parent of a dotted key (`user.contact` for `user.contact.email`).
pub fn parent(key: &str) -> Option<&str> {
    key.rfind('.').map(|i| &key[..i])
}

/// The closest default key, for "did you mean" hints.
pub fn suggest(kind: Kind, key: &str) -> Option<&'static str> {
    defaults(kind)
        .map(|k| (edit_distance(k, key), k))
        .filter(|(d, k)| *d <= 3.max(key.len() / 6) && *d < k.len())
        .min()
        .map(|(_, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_taxonomy_is_complete() {
        assert_eq!(defaults(Kind::Category).count(), 123);
        assert_eq!(defaults(Kind::Use).count(), 56);
        assert!(is_default(Kind::Category, "user.contact.email"));
        assert!(is_default(
            Kind::Use,
            "essential.service.operations.support"
        ));
        assert!(!is_default(Kind::Category, "marketing"));
        // Every key's parent is a key too: the hierarchy is by prefix.
        for kind in [Kind::Category, Kind::Use] {
            for k in defaults(kind) {
                if let Some(p) = parent(k) {
                    assert!(is_default(kind, p), "{k}");
                }
            }
        }
        for (old, new) in DEPRECATED {
            assert!(
                is_default(Kind::Category, old) || is_default(Kind::Use, old),
                "{old}"
            );
            assert!(
                is_default(Kind::Category, new) || is_default(Kind::Use, new),
                "{new}"
            );
        }
    }

    #[test]
    fn hierarchy_and_hints() {
        assert!(is_within("user.contact.email", "user"));
        assert!(is_within("user", "user"));
        assert!(!is_within("user.contactx", "user.contact"));
        assert!(!is_within("use", "user"));
        assert_eq!(
            suggest(Kind::Category, "user.contact.emial"),
            Some("user.contact.email")
        );
        assert_eq!(suggest(Kind::Use, "marketting"), Some("marketing"));
        assert_eq!(
            suggest(Kind::Category, "completely.different.thing.here"),
            None
        );
        assert!(well_formed("user.custom.loyalty_tier"));
        assert!(!well_formed("User.Contact"));
        assert!(!well_formed("user..x"));
    }
}
