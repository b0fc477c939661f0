//! What the rewriter runs: a resource's compiled selectors (`Program`) and,
//! per purpose, what to do with each field (`ActionTable`).
//!
//! Both are built once by `policy::compile` and shared read-only by every
//! request; nothing here is parsed or allocated per request.

use std::fmt;
use std::sync::Arc;

use hmac::{KeyInit, Mac};
use zeroize::Zeroizing;

use super::automaton::{Dfa, Mark};
use super::detect::{Detector, DetectorSet};

/// What happens to a selected value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Pass unchanged (free-text fields are still scanned by their detectors).
    Allow,
    /// Replace by a masked form.
    Mask(Mask),
    /// Replace by a keyed HMAC-SHA256 pseudonym (stable, so joins still work).
    Hash,
    /// Writes only: replace by a token (the field's category is encrypted).
    Seal,
    /// Reads only: pass a stored token as it is, without decrypting it.
    Token,
    /// Replace by the policy's placeholder (`null` by default).
    Redact,
    /// Delete the member (or array element) altogether.
    Remove,
    /// Pass the value exactly as stored: no detectors, no decryption. Only
    /// report mode's output table uses it (policies cannot write it).
    Keep,
}

impl Action {
    /// Larger is more restrictive; used when several rules select one value.
    pub fn rank(self) -> u8 {
        match self {
            Action::Allow | Action::Keep => 0,
            Action::Seal => 1,
            Action::Mask(_) => 2,
            Action::Hash => 3,
            Action::Token => 4,
            Action::Redact => 5,
            Action::Remove => 6,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Action::Allow => "allow",
            Action::Mask(_) => "mask",
            Action::Hash => "hash",
            Action::Seal => "encrypt",
            Action::Token => "token",
            Action::Redact => "redact",
            Action::Remove => "remove",
            Action::Keep => "keep",
        }
    }
}

/// Masks keep a little of a value and replace the rest by `***`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mask {
    /// `***` and the last N letters or digits (`+1 (555) 234-5678` -> `***5678`).
    Last(u8),
    /// The first N characters and `***`.
    First(u8),
    /// The first N and last M characters around `***`.
    FirstLast(u8, u8),
    /// `***@` and the domain of an e-mail address.
    EmailDomain,
}

impl Mask {
    /// Parses `last4`, `first2`, `first1_last2`, `email_domain`.
    pub fn parse(s: &str) -> Option<Mask> {
        fn num(s: &str) -> Option<u8> {
            s.parse::<u8>().ok().filter(|n| (1..=32).contains(n))
        }
        if s == "email_domain" {
            return Some(Mask::EmailDomain);
        }
        if let Some(rest) = s.strip_prefix("first") {
            if let Some((a, b)) = rest.split_once("_last") {
                return Some(Mask::FirstLast(num(a)?, num(b)?));
            }
            return Some(Mask::First(num(rest)?));
        }
        Some(Mask::Last(num(s.strip_prefix("last")?)?))
    }
}

impl fmt::Display for Mask {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Mask::Last(n) => write!(f, "last{n}"),
            Mask::First(n) => write!(f, "first{n}"),
            Mask::FirstLast(a, b) => write!(f, "first{a}_last{b}"),
            Mask::EmailDomain => f.write_str("email_domain"),
        }
    }
}

/// How a field's values are stored in the CRM (the policy's `encrypt`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Seal {
    /// In clear.
    No,
    /// As randomised tokens under the subject's data key.
    Randomised,
    /// As deterministic tokens under the category's key (searchable).
    Deterministic,
}

/// A selected field: which category it holds and which detectors scan it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldSpec {
    /// The selector as written, for explanations and errors.
    pub selector: String,
    /// Index into `Program::categories`.
    pub category: u16,
    /// Detectors run over the text when the field itself is allowed.
    pub scan: DetectorSet,
    /// Whether the CRM stores this field's values as tokens.
    pub seal: Seal,
}

/// What the rewriter does with one value: the action, the detectors to run,
/// and the encrypted field (if any) whose category the value's token is bound to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resolved {
    pub action: Action,
    pub scan: DetectorSet,
    pub sealed: Option<u32>,
    /// The field whose action won (its category is counted); `None` for
    /// values no selector reaches.
    pub field: Option<u32>,
}

/// Values no selector reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unlisted {
    Allow,
    Redact,
    Remove,
}

/// The key used by the `hash` action. Zeroised on drop; never printed.
#[derive(Clone)]
pub struct HashKey {
    mac: hmac::Hmac<sha2::Sha256>,
}

impl HashKey {
    pub fn new(key: &[u8]) -> Option<HashKey> {
        if key.len() < 16 {
            return None;
        }
        let key = Zeroizing::new(key.to_vec());
        let mac = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(&key).ok()?;
        Some(HashKey { mac })
    }

    /// HMAC-SHA256 of `data`, first 16 bytes as 32 lowercase hex digits.
    pub fn pseudonym(&self, data: &[u8], out: &mut Vec<u8>) {
        let mut m = self.mac.clone();
        m.update(data);
        let tag = m.finalize().into_bytes();
        const HEX: &[u8; 16] = b"0123456789abcdef";
        for b in &tag[..16] {
            out.push(HEX[(b >> 4) as usize]);
            out.push(HEX[(b & 15) as usize]);
        }
    }
}

impl HashKey {
    /// Whether `other` is the same key (their MACs of a fixed probe agree,
    /// compared in constant time); neither key is exposed.
    pub fn same_key(&self, other: &HashKey) -> bool {
        use subtle::ConstantTimeEq;
        let (mut a, mut b) = (Vec::new(), Vec::new());
        self.pseudonym(b"consentry: is this the same key?", &mut a);
        other.pseudonym(b"consentry: is this the same key?", &mut b);
        bool::from(a.ct_eq(&b))
    }
}

impl fmt::Debug for HashKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HashKey(<redacted>)")
    }
}

/// How replacements are spelled (per policy).
#[derive(Debug, Clone)]
pub struct Render {
    /// The JSON written for a redacted value: `null` or a quoted placeholder.
    pub placeholder: Box<[u8]>,
    /// Text that replaces a detector match the rule redacts.
    pub replacements: [Box<str>; Detector::COUNT],
    /// Key for the `hash` action; `None` if no rule hashes.
    pub hash_key: Option<Arc<HashKey>>,
}

impl Default for Render {
    fn default() -> Self {
        Render {
            placeholder: b"null".as_slice().into(),
            replacements: Detector::ALL.map(|d| d.default_replacement().into()),
            hash_key: None,
        }
    }
}

/// A resource's compiled selectors.
#[derive(Debug, Clone)]
pub struct Program {
    /// Finds records (`Mark::Record`) and envelope fields outside records.
    pub envelope: Dfa,
    /// Finds fields and the subject inside one record.
    pub record: Dfa,
    pub fields: Vec<FieldSpec>,
    /// Category names, indexed by `FieldSpec::category`.
    pub categories: Vec<Arc<str>>,
    pub unlisted: Unlisted,
    pub render: Arc<Render>,
    /// The table for records whose outcome is "redact" (derived).
    pub redacted: ActionTable,
    /// Whether any field is encrypted (then the rewriter needs keys).
    pub sealed: bool,
    /// The categories stored as deterministic tokens.
    pub deterministic: Vec<String>,
}

impl Program {
    pub fn new(
        envelope: Dfa,
        record: Dfa,
        fields: Vec<FieldSpec>,
        categories: Vec<Arc<str>>,
        unlisted: Unlisted,
        render: Arc<Render>,
    ) -> Program {
        // Values `unlisted: allow` lets through are never edited, so this
        // table cannot redact them: policies refuse `on_missing_consent:
        // redact` on such resources (policy::compile).
        let redacted = ActionTable {
            fields: vec![Action::Redact; fields.len()],
            detectors: [Action::Redact; Detector::COUNT],
            unlisted: match unlisted {
                Unlisted::Allow => Action::Allow,
                Unlisted::Redact => Action::Redact,
                Unlisted::Remove => Action::Remove,
            },
        };
        let sealed = fields.iter().any(|f| f.seal != Seal::No);
        let mut deterministic: Vec<String> = fields
            .iter()
            .filter(|f| f.seal == Seal::Deterministic)
            .map(|f| categories[f.category as usize].to_string())
            .collect();
        deterministic.sort();
        deterministic.dedup();
        Program {
            sealed,
            deterministic,
            envelope,
            record,
            fields,
            categories,
            unlisted,
            render,
            redacted,
        }
    }

    /// A program that selects nothing: the rewriter only validates.
    pub fn validate_only() -> Program {
        Program::new(
            Dfa::empty(),
            Dfa::empty(),
            Vec::new(),
            Vec::new(),
            Unlisted::Allow,
            Arc::new(Render::default()),
        )
    }
}

/// Per purpose: the action for each field and for each detector's matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActionTable {
    /// Indexed like `Program::fields`.
    pub fields: Vec<Action>,
    /// Indexed by `Detector as usize`.
    pub detectors: [Action; Detector::COUNT],
    pub unlisted: Action,
}

impl ActionTable {
    /// Passes every value exactly as stored: report mode's output.
    pub fn keep_all(program: &Program) -> ActionTable {
        ActionTable {
            fields: vec![Action::Keep; program.fields.len()],
            detectors: [Action::Allow; Detector::COUNT],
            unlisted: Action::Keep,
        }
    }

    /// Allows everything (tests).
    pub fn allow_all(program: &Program) -> ActionTable {
        ActionTable {
            fields: vec![Action::Allow; program.fields.len()],
            detectors: [Action::Allow; Detector::COUNT],
            unlisted: Action::Allow,
        }
    }

    /// The combined action of the fields in `marks` and the detectors to run.
    /// Several selectors on one value: the most restrictive action wins.
    #[inline]
    pub fn resolve(&self, program: &Program, marks: &[Mark]) -> Resolved {
        let mut action = None::<Action>;
        let mut scan = DetectorSet::EMPTY;
        let mut sealed = None;
        let mut field = None;
        for m in marks {
            if let Mark::Field(f) = *m {
                let a = self.fields[f as usize];
                if action.is_none_or(|b| a.rank() > b.rank()) {
                    action = Some(a);
                    field = Some(f);
                }
                let spec = &program.fields[f as usize];
                scan = scan.union(spec.scan);
                if spec.seal != Seal::No && sealed.is_none() {
                    sealed = Some(f);
                }
            }
        }
        let (action, scan) = match action {
            // An encrypted value is scanned before it is sealed.
            Some(a @ (Action::Allow | Action::Seal)) => (a, scan),
            Some(a) => (a, DetectorSet::EMPTY),
            None => (self.unlisted, DetectorSet::EMPTY),
        };
        Resolved {
            action,
            scan,
            sealed,
            field,
        }
    }
}
