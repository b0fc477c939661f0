//! The response body type the gateway serves, and constructors for it.

use bytes::Bytes;
use http::{HeaderMap, header};
use http_body_util::{BodyExt, Empty, Full};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Any response body: a buffered one, a stream, or nothing.
pub type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;

pub fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

pub fn empty() -> Body {
    Empty::<Bytes>::new()
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// Why a request body could not be read whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadError {
    /// Over the limit (by its declared length, or as it arrived).
    TooLarge,
    /// Broken off, or paused for longer than `idle`.
    Unreadable,
}

/// Reads a request body of at most `limit` bytes, waiting at most `idle`
/// for each frame.
pub async fn read_limited(
    mut incoming: hyper::body::Incoming,
    limit: u64,
    idle: std::time::Duration,
) -> Result<Bytes, ReadError> {
    if http_body::Body::size_hint(&incoming)
        .exact()
        .is_some_and(|n| n > limit)
    {
        return Err(ReadError::TooLarge);
    }
    let mut buf: Vec<u8> = Vec::new();
    loop {
        let frame = match tokio::time::timeout(idle, incoming.frame()).await {
            Err(_) | Ok(Some(Err(_))) => return Err(ReadError::Unreadable),
            Ok(None) => break,
            Ok(Some(Ok(f))) => f,
        };
        if let Some(d) = frame.data_ref() {
            if (buf.len() + d.len()) as u64 > limit {
                return Err(ReadError::TooLarge);
            }
            buf.extend_from_slice(d);
        }
    }
    Ok(Bytes::from(buf))
}

/// Whether headers declare a JSON body (UTF-8) that can be inspected.
pub fn is_json(h: &HeaderMap) -> bool {
    let mut all = h.get_all(header::CONTENT_TYPE).iter();
    let (Some(v), None) = (all.next(), all.next()) else {
        return false; // none, or several: ambiguous
    };
    let Ok(ct) = v.to_str() else {
        return false;
    };
    let mut parts = ct.split(';');
    let mime = parts.next().unwrap_or("").trim().to_ascii_lowercase();
    let json =
        mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"));
    // JSON is UTF-8 (RFC 8259); another declared charset cannot be inspected as such.
    let charset_ok = parts.all(|p| {
        let p = p.trim().to_ascii_lowercase();
        !p.starts_with("charset=") || p == "charset=utf-8" || p == "charset=\"utf-8\""
    });
    json && charset_ok
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn json_content_types() {
        let h = |v: &str| {
            let mut m = HeaderMap::new();
            m.insert(header::CONTENT_TYPE, HeaderValue::from_str(v).unwrap());
            m
        };
        assert!(is_json(&h("application/json")));
        assert!(is_json(&h("application/json; charset=utf-8")));
        assert!(is_json(&h("Application/JSON;charset=UTF-8")));
        assert!(is_json(&h("application/problem+json")));
        assert!(is_json(&h("application/vnd.api+json")));
        assert!(!is_json(&h("text/html")));
        assert!(!is_json(&h("application/json; charset=latin1")));
        assert!(!is_json(&h("text/json")));
        assert!(!is_json(&HeaderMap::new()));
        let mut two = h("application/json");
        two.append(header::CONTENT_TYPE, HeaderValue::from_static("text/html"));
        assert!(!is_json(&two));
    }
}
