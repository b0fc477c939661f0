//! What a consent record is, and how a subject's records decide a purpose.
//!
//! Pure: no storage, no I/O. Subject ids and purposes are checked here so
//! that the admin API, imports and the CLI refuse the same things.

use std::fmt;

use crate::clock::Millis;
use crate::policy::taxonomy;

/// A subject's statement about one purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    /// Consent given.
    Granted,
    /// Consent taken back.
    Withdrawn,
    /// An objection to processing on legitimate interest (GDPR Art. 21).
    Objected,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Granted => "granted",
            Status::Withdrawn => "withdrawn",
            Status::Objected => "objected",
        }
    }

    pub fn parse(s: &str) -> Option<Status> {
        match s.trim().to_ascii_lowercase().as_str() {
            "granted" | "grant" | "opt-in" | "opt_in" => Some(Status::Granted),
            "withdrawn" | "withdraw" | "revoked" | "opt-out" | "opt_out" => Some(Status::Withdrawn),
            "objected" | "object" | "objection" => Some(Status::Objected),
            _ => None,
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One consent change, as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsentEvent {
    pub subject: String,
    pub purpose: String,
    pub status: Status,
    /// When the subject made the statement.
    pub at: Millis,
    /// Where it was collected (a form, a consent platform, the admin API).
    pub source: String,
    /// A grant may lapse.
    pub expires: Option<Millis>,
    /// A reference to the proof, e.g. a form submission id.
    pub proof: Option<String>,
}

/// A subject's latest statement for one purpose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Current {
    pub purpose: Box<str>,
    pub status: Status,
    pub expires: Option<Millis>,
    /// When the subject made the statement.
    pub at: Millis,
}

/// Everything the hot path needs about one subject (cached).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubjectConsents {
    pub entries: Vec<Current>,
}

/// What makes processing for a purpose lawful.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Basis {
    /// An unexpired grant for the purpose or a parent purpose is needed.
    Consent,
    /// Allowed unless the subject objected (or withdrew).
    LegitimateInterest,
}

impl Basis {
    pub fn as_str(self) -> &'static str {
        match self {
            Basis::Consent => "consent",
            Basis::LegitimateInterest => "legitimate_interest",
        }
    }
}

impl SubjectConsents {
    /// Whether processing for `purpose` on `basis` is allowed at `now`.
    ///
    /// Of the statements at or above the purpose, the latest decides: a
    /// withdrawal of `marketing` after a grant of
    /// `marketing.communications.email` stops e-mail marketing too, and a
    /// withdrawal of `marketing.communications.email` after a grant of
    /// `marketing` stops just that. At equal times the more specific one
    /// decides. A grant that has expired still decides, as "no consent": the
    /// customer's latest word was time-limited, and an older, broader grant
    /// does not come back when it lapses. (Under legitimate interest a lapsed
    /// grant is no objection.)
    pub fn allows(&self, purpose: &str, basis: Basis, now: Millis) -> bool {
        // Per purpose there is one current statement, so there are no ties.
        let decisive = self
            .entries
            .iter()
            .filter(|c| taxonomy::is_within(purpose, &c.purpose))
            .max_by_key(|c| (c.at, c.purpose.len()));
        match decisive {
            Some(c) if c.status == Status::Granted && c.expires.is_some_and(|e| e <= now) => {
                basis == Basis::LegitimateInterest
            }
            Some(c) => c.status == Status::Granted,
            None => basis == Basis::LegitimateInterest,
        }
    }
}

/// Subject ids: 1 to 256 characters, no control characters, no surrounding spaces.
pub fn check_subject(s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > 256 {
        return Err("a subject id has 1 to 256 characters".into());
    }
    if s.chars().any(char::is_control) || s.trim() != s {
        return Err("a subject id has no control characters or surrounding spaces".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A statement made at time 0.
    fn c(purpose: &str, status: Status, expires: Option<Millis>) -> Current {
        at(purpose, status, expires, 0)
    }

    fn at(purpose: &str, status: Status, expires: Option<Millis>, t: Millis) -> Current {
        Current {
            purpose: purpose.into(),
            status,
            expires,
            at: t,
        }
    }

    #[test]
    fn consent_needs_an_unexpired_grant_at_or_above_the_purpose() {
        use Status::*;
        let s = SubjectConsents {
            entries: vec![c("marketing", Granted, None)],
        };
        assert!(s.allows("marketing", Basis::Consent, 0));
        assert!(s.allows("marketing.communications.email", Basis::Consent, 0));
        assert!(!s.allows("analytics", Basis::Consent, 0));
        assert!(!SubjectConsents::default().allows("marketing", Basis::Consent, 0));
        // At equal times the most specific statement wins.
        let s = SubjectConsents {
            entries: vec![
                c("marketing", Granted, None),
                c("marketing.communications.email", Withdrawn, None),
            ],
        };
        assert!(!s.allows("marketing.communications.email", Basis::Consent, 0));
        assert!(s.allows("marketing.communications.sms", Basis::Consent, 0));
        // Otherwise the latest: a broad withdrawal after a narrow grant stops it,
        let s = SubjectConsents {
            entries: vec![
                at("marketing.communications.email", Granted, None, 1),
                at("marketing", Withdrawn, None, 2),
            ],
        };
        assert!(!s.allows("marketing.communications.email", Basis::Consent, 3));
        // and a narrow grant after a broad withdrawal allows just that.
        let s = SubjectConsents {
            entries: vec![
                at("marketing", Withdrawn, None, 1),
                at("marketing.communications.email", Granted, None, 2),
            ],
        };
        assert!(s.allows("marketing.communications.email", Basis::Consent, 3));
        assert!(!s.allows("marketing.communications.sms", Basis::Consent, 3));
        // Expiry.
        let s = SubjectConsents {
            entries: vec![c("marketing", Granted, Some(100))],
        };
        assert!(s.allows("marketing", Basis::Consent, 99));
        assert!(!s.allows("marketing", Basis::Consent, 100));
        // A lapsed grant decides as "no consent": an older, broader grant
        // does not come back,
        let s = SubjectConsents {
            entries: vec![
                c("marketing", Granted, None),
                at("marketing.advertising", Granted, Some(10), 5),
            ],
        };
        assert!(s.allows("marketing.advertising", Basis::Consent, 9));
        assert!(!s.allows("marketing.advertising", Basis::Consent, 50));
        assert!(s.allows("marketing.communications", Basis::Consent, 50));
        // and neither does one the customer had overridden since.
        let s = SubjectConsents {
            entries: vec![
                at("marketing", Granted, None, 1),
                at("marketing.communications.email", Granted, Some(10), 3),
            ],
        };
        assert!(!s.allows("marketing.communications.email", Basis::Consent, 50));
        // Under legitimate interest a lapsed grant is no objection.
        assert!(s.allows(
            "marketing.communications.email",
            Basis::LegitimateInterest,
            50
        ));
    }

    #[test]
    fn legitimate_interest_holds_unless_objected() {
        use Status::*;
        assert!(SubjectConsents::default().allows("analytics", Basis::LegitimateInterest, 0));
        let s = SubjectConsents {
            entries: vec![c("analytics", Objected, None)],
        };
        assert!(!s.allows("analytics.reporting", Basis::LegitimateInterest, 0));
        let s = SubjectConsents {
            entries: vec![c("analytics", Withdrawn, None)],
        };
        assert!(!s.allows("analytics", Basis::LegitimateInterest, 0));
    }

    #[test]
    fn subjects_and_statuses() {
        assert!(check_subject("contact-7").is_ok());
        assert!(check_subject("").is_err());
        assert!(check_subject(" 7").is_err());
        assert!(check_subject("a\nb").is_err());
        assert!(check_subject(&"x".repeat(257)).is_err());
        assert_eq!(Status::parse("Opt-In"), Some(Status::Granted));
        assert_eq!(Status::parse("maybe"), None);
    }
}
