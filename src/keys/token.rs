//! Tokens: what the CRM stores instead of a sensitive value.
//!
//! ```text
//! ctk1.<key id>.<base64url(nonce | ciphertext | tag)>   randomised: AES-256-GCM under the subject's data key
//! ctd1.<key id>.<base64url(ciphertext | tag)>           deterministic: AES-256-GCM-SIV under the category's data key
//! ```
//!
//! `ctk`/`ctd` and `1` are the prefix and format version; the key id is 16
//! hex digits. The associated data holds the format, the key id and the
//! category, so a token moved to another field does not decrypt. A
//! randomised token is bound to its subject through its key: every data key
//! belongs to exactly one subject, and the gateway opens a record's tokens
//! only with the key of that record's subject, so a token copied to another
//! customer does not decrypt either. (Binding through the key rather than a
//! subject id in the associated data is what lets a create encrypt before
//! the CRM has assigned the id: the key is bound to the id afterwards.)
//! Equal plaintexts give equal deterministic tokens, so the CRM can search
//! and de-duplicate on them; that is all they reveal.
//!
//! Parsing is strict: one spelling per token (canonical base64url, lowercase
//! hex), so a token that parses and decrypts is byte for byte the one that
//! was written.

use aes_gcm::Nonce;
use aes_gcm::aead::AeadInOut;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use zeroize::Zeroizing;

use super::wrap::{DataKey, KeyId};
use super::{KeyError, random};

const NONCE: usize = 12;
const TAG: usize = 16;
/// The largest value sealed into one token (beyond every default body
/// limit), and the longest token accepted: such a value, encoded.
pub const MAX_PLAIN: usize = 32 << 20;
pub const MAX_TOKEN: usize = MAX_PLAIN / 3 * 4 + 1024;

/// Which kind of token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Randomised,
    Deterministic,
}

impl Kind {
    fn prefix(self) -> &'static str {
        match self {
            Kind::Randomised => "ctk1",
            Kind::Deterministic => "ctd1",
        }
    }
}

/// A parsed token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    pub kind: Kind,
    pub key_id: KeyId,
    payload: Vec<u8>,
}

/// Whether `s` starts like a token (cheap; `parse` decides). In an
/// encrypted field, anything that does is handled as a token: if it does
/// not parse and decrypt, it is withheld, never shown as a value.
#[inline]
pub fn looks_like_token(s: &[u8]) -> bool {
    s.starts_with(b"ctk1.") || s.starts_with(b"ctd1.")
}

/// Parses a token, accepting exactly one spelling of each.
pub fn parse(s: &str) -> Option<Token> {
    if s.len() > MAX_TOKEN {
        return None;
    }
    let (prefix, rest) = s.split_at_checked(4)?;
    let rest = rest.strip_prefix('.')?;
    let dot = memchr::memchr(b'.', rest.as_bytes())?;
    let (kid, b64) = (&rest[..dot], &rest[dot + 1..]);
    if memchr::memchr(b'.', b64.as_bytes()).is_some() {
        return None;
    }
    let kind = match prefix {
        "ctk1" => Kind::Randomised,
        "ctd1" => Kind::Deterministic,
        _ => return None,
    };
    let key_id = KeyId::parse_hex(kid)?;
    // base64 can spell the same bytes two ways (unused trailing bits,
    // padding): this engine refuses both, so there is one spelling.
    let payload = URL_SAFE_NO_PAD.decode(b64).ok()?;
    let min = match kind {
        Kind::Randomised => NONCE + TAG,
        Kind::Deterministic => TAG,
    };
    (payload.len() >= min).then_some(Token {
        kind,
        key_id,
        payload,
    })
}

fn put(a: &mut Vec<u8>, s: &str) {
    a.extend_from_slice(&(s.len() as u32).to_be_bytes());
    a.extend_from_slice(s.as_bytes());
}

fn aad(kind: Kind, id: &KeyId, category: &str) -> Vec<u8> {
    let mut a = Vec::with_capacity(64);
    a.extend_from_slice(kind.prefix().as_bytes());
    a.extend_from_slice(&id.0);
    put(&mut a, category);
    a
}

fn too_large(plaintext: &[u8]) -> Result<(), KeyError> {
    if plaintext.len() > MAX_PLAIN {
        return Err(KeyError::Invalid(
            "the value is too large for one token".into(),
        ));
    }
    Ok(())
}

fn render(kind: Kind, id: &KeyId, payload: &[u8]) -> String {
    let mut s = String::with_capacity(24 + payload.len().div_ceil(3) * 4);
    s.push_str(kind.prefix());
    s.push('.');
    s.push_str(&id.hex());
    s.push('.');
    URL_SAFE_NO_PAD.encode_string(payload, &mut s);
    s
}

/// A randomised token of `plaintext` in `category`, under a subject's key.
pub fn encrypt(dk: &DataKey, category: &str, plaintext: &[u8]) -> Result<String, KeyError> {
    too_large(plaintext)?;
    let nonce: [u8; NONCE] = random()?;
    // Room for the tag up front: no reallocation leaves plaintext behind.
    let mut buf = Zeroizing::new(Vec::with_capacity(plaintext.len() + TAG));
    buf.extend_from_slice(plaintext);
    dk.gcm
        .encrypt_in_place(
            &Nonce::from(nonce),
            &aad(Kind::Randomised, &dk.id, category),
            &mut *buf,
        )
        .map_err(|_| KeyError::Invalid("cannot encrypt".into()))?;
    let mut payload = nonce.to_vec();
    payload.extend_from_slice(&buf);
    Ok(render(Kind::Randomised, &dk.id, &payload))
}

/// A deterministic token of `plaintext` for `category` (the same for equal
/// plaintexts). AES-GCM-SIV with a fixed nonce: a repeated nonce reveals
/// only that two plaintexts are equal, which is the point.
pub fn encrypt_deterministic(
    dk: &DataKey,
    category: &str,
    plaintext: &[u8],
) -> Result<String, KeyError> {
    too_large(plaintext)?;
    // Room for the tag up front: no reallocation leaves plaintext behind.
    let mut buf = Zeroizing::new(Vec::with_capacity(plaintext.len() + TAG));
    buf.extend_from_slice(plaintext);
    dk.siv
        .encrypt_in_place(
            &aes_gcm_siv::Nonce::default(),
            &aad(Kind::Deterministic, &dk.id, category),
            &mut *buf,
        )
        .map_err(|_| KeyError::Invalid("cannot encrypt".into()))?;
    Ok(render(Kind::Deterministic, &dk.id, &buf))
}

/// Decrypts a token with its data key. Fails for any token not written
/// for exactly this key and category.
pub fn decrypt(dk: &DataKey, t: &Token, category: &str) -> Result<Zeroizing<Vec<u8>>, KeyError> {
    decrypt_owned(dk, t.clone(), category)
}

/// `decrypt`, in the token's own buffer.
pub fn decrypt_owned(
    dk: &DataKey,
    t: Token,
    category: &str,
) -> Result<Zeroizing<Vec<u8>>, KeyError> {
    if t.key_id != dk.id {
        return Err(KeyError::Decrypt);
    }
    let aad = aad(t.kind, &dk.id, category);
    let mut buf = Zeroizing::new(t.payload);
    match t.kind {
        Kind::Randomised => {
            let nonce: [u8; NONCE] = buf
                .get(..NONCE)
                .and_then(|n| n.try_into().ok())
                .ok_or(KeyError::Decrypt)?;
            buf.drain(..NONCE);
            dk.gcm
                .decrypt_in_place(&Nonce::from(nonce), &aad, &mut *buf)
                .map_err(|_| KeyError::Decrypt)?;
        }
        Kind::Deterministic => {
            dk.siv
                .decrypt_in_place(&aes_gcm_siv::Nonce::default(), &aad, &mut *buf)
                .map_err(|_| KeyError::Decrypt)?;
        }
    }
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn randomised_tokens_decrypt_only_where_they_were_written() {
        let dk = DataKey::generate().unwrap();
        let t = encrypt(&dk, "user.contact.email", b"carla@globex.example").unwrap();
        assert!(t.starts_with("ctk1.") && looks_like_token(t.as_bytes()));
        assert!(!t.contains("carla"));
        let p = parse(&t).unwrap();
        assert_eq!(
            &*decrypt(&dk, &p, "user.contact.email").unwrap(),
            b"carla@globex.example"
        );
        assert_ne!(
            t,
            encrypt(&dk, "user.contact.email", b"carla@globex.example").unwrap()
        );
        // Moved to another field, or another (subject's) key: refused.
        assert_eq!(
            decrypt(&dk, &p, "user.contact.phone_number").unwrap_err(),
            KeyError::Decrypt
        );
        let other = DataKey::generate().unwrap();
        assert_eq!(
            decrypt(&other, &p, "user.contact.email").unwrap_err(),
            KeyError::Decrypt
        );
        // Every flipped bit of every character is refused.
        for i in 0..t.len() {
            for bit in 0..7 {
                let mut b = t.clone().into_bytes();
                b[i] ^= 1 << bit;
                let Ok(s) = String::from_utf8(b) else {
                    continue;
                };
                if let Some(p) = parse(&s) {
                    assert!(decrypt(&dk, &p, "user.contact.email").is_err(), "{i}:{bit}");
                }
            }
        }
    }

    #[test]
    fn deterministic_tokens_are_equal_for_equal_values_in_a_category() {
        let dk = DataKey::generate().unwrap();
        let a = encrypt_deterministic(&dk, "user.contact.email", b"a@x.example").unwrap();
        assert_eq!(
            a,
            encrypt_deterministic(&dk, "user.contact.email", b"a@x.example").unwrap()
        );
        assert_ne!(
            a,
            encrypt_deterministic(&dk, "user.contact.email", b"b@x.example").unwrap()
        );
        assert_ne!(
            a,
            encrypt_deterministic(&dk, "user.name", b"a@x.example").unwrap()
        );
        let p = parse(&a).unwrap();
        assert_eq!(p.kind, Kind::Deterministic);
        assert_eq!(
            &*decrypt(&dk, &p, "user.contact.email").unwrap(),
            b"a@x.example"
        );
        assert!(decrypt(&dk, &p, "user.name").is_err());
    }

    #[test]
    fn parsing_is_strict() {
        let dk = DataKey::generate().unwrap();
        let t = encrypt(&dk, "c", b"v").unwrap();
        assert!(parse(&t).is_some());
        // Another spelling of the same bytes (unused trailing bits) is refused.
        let alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let (head, last) = t.split_at(t.len() - 1);
        let mut others = 0;
        for c in alphabet.chars().filter(|c| c.to_string() != last) {
            let other = format!("{head}{c}");
            let b64 = |s: &str| URL_SAFE_NO_PAD.decode(s.rsplit('.').next().unwrap()).ok();
            if b64(&other).is_some() && b64(&other) == b64(&t) {
                others += 1;
                assert!(parse(&other).is_none(), "{other}");
            }
        }
        assert_eq!(
            others, 0,
            "the engine itself refuses non-canonical spellings"
        );
        for bad in [
            t.replacen("ctk1", "ctk2", 1),
            t.replacen("ctk1.", "ctk1..", 1),
            format!("{t}."),
            format!("{t}="),
            t.to_uppercase(),
            "ctk1.0011223344556677.AAAA".to_owned(),
            "ctd1.0011223344556677.".to_owned(),
        ] {
            assert!(parse(&bad).is_none(), "{bad}");
        }
    }
}
