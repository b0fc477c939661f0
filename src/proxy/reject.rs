//! Refusals: every way the gateway says no, and the one table that turns
//! them into RFC 9457 problem+json responses.
//!
//! A refusal's `detail` names what was wrong (a header, a route template, a
//! purpose), never a value from the request or the CRM's data. The `type`
//! URIs are stable: clients may branch on them.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};

use super::body::{self, Body};
use super::context::RequestId;
use crate::path::PathError;
use crate::transform::Malformed;

/// Why a request was not (fully) served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    // The request itself.
    BadPath(PathError),
    MethodOverride,
    UpgradeRefused,
    MethodRefused,
    PurposeRequired,
    PurposeInvalid,
    PurposeRepeated,
    RequestBodyTooLarge,
    RequestBodyUnreadable,
    // Who is calling, and why.
    ApiKeyMissing,
    ApiKeyUnknown,
    PurposeNotAllowed,
    // What the policy says.
    RouteNotAllowed,
    PathCaseVariant,
    PurposeNotCovered {
        policy: String,
        resource: String,
    },
    RecordBlocked,
    // What the CRM answered.
    UpstreamUnavailable,
    UpstreamTimeout,
    UpstreamFailed,
    UnsupportedEncoding,
    NotJson,
    MalformedJson(Malformed),
    ResponseTooLarge,
    DecompressionFailed,
    PartialContent,
    UnexpectedNotModified,
    /// An HTTP/1.0 client cannot tell a cut-off stream from a whole body.
    StreamingUnavailable,
    Internal,
}

impl Refusal {
    /// The whole status table, in one place.
    pub fn status(&self) -> StatusCode {
        use Refusal::*;
        match self {
            BadPath(_)
            | MethodOverride
            | UpgradeRefused
            | PurposeRequired
            | PurposeInvalid
            | PurposeRepeated
            | PathCaseVariant
            | RequestBodyUnreadable => StatusCode::BAD_REQUEST,
            MethodRefused => StatusCode::METHOD_NOT_ALLOWED,
            RequestBodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiKeyMissing | ApiKeyUnknown => StatusCode::UNAUTHORIZED,
            PurposeNotAllowed | RouteNotAllowed | PurposeNotCovered { .. } | RecordBlocked => {
                StatusCode::FORBIDDEN
            }
            UpstreamUnavailable
            | UpstreamFailed
            | UnsupportedEncoding
            | NotJson
            | MalformedJson(_)
            | ResponseTooLarge
            | DecompressionFailed
            | PartialContent
            | UnexpectedNotModified
            | StreamingUnavailable => StatusCode::BAD_GATEWAY,
            UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable last part of the problem `type`.
    pub fn slug(&self) -> &'static str {
        use Refusal::*;
        match self {
            BadPath(_) => "ambiguous-path",
            MethodOverride => "method-override",
            UpgradeRefused => "upgrade-refused",
            MethodRefused => "method-refused",
            PurposeRequired => "purpose-required",
            PurposeInvalid => "purpose-invalid",
            PurposeRepeated => "purpose-repeated",
            RequestBodyTooLarge => "request-body-too-large",
            RequestBodyUnreadable => "request-body-unreadable",
            ApiKeyMissing => "api-key-missing",
            ApiKeyUnknown => "api-key-unknown",
            PurposeNotAllowed => "purpose-not-allowed",
            RouteNotAllowed => "route-not-allowed",
            PathCaseVariant => "path-case-variant",
            PurposeNotCovered { .. } => "purpose-not-covered",
            RecordBlocked => "record-blocked",
            UpstreamUnavailable => "upstream-unavailable",
            UpstreamTimeout => "upstream-timeout",
            UpstreamFailed => "upstream-failed",
            UnsupportedEncoding => "unsupported-encoding",
            NotJson => "not-json",
            MalformedJson(_) => "malformed-json",
            ResponseTooLarge => "response-too-large",
            DecompressionFailed => "decompression-failed",
            PartialContent => "partial-content",
            UnexpectedNotModified => "unexpected-not-modified",
            StreamingUnavailable => "streaming-unavailable",
            Internal => "internal",
        }
    }

    pub fn title(&self) -> &'static str {
        use Refusal::*;
        match self {
            BadPath(_) => "Ambiguous request path",
            MethodOverride => "Method override refused",
            UpgradeRefused => "Protocol upgrade refused",
            MethodRefused => "Method refused",
            PurposeRequired => "Purpose required",
            PurposeInvalid => "Invalid purpose",
            PurposeRepeated => "More than one purpose",
            RequestBodyTooLarge => "Request body too large",
            RequestBodyUnreadable => "Request body unreadable",
            ApiKeyMissing => "API key required",
            ApiKeyUnknown => "Unknown API key",
            PurposeNotAllowed => "Purpose not allowed for this client",
            RouteNotAllowed => "Route not allowed",
            PathCaseVariant => "Path differs from a known route only in letter case",
            PurposeNotCovered { .. } => "Purpose not covered by the policy",
            RecordBlocked => "Record may not be shown",
            UpstreamUnavailable => "CRM unavailable",
            UpstreamTimeout => "CRM timed out",
            UpstreamFailed => "CRM response failed",
            UnsupportedEncoding => "Response encoding cannot be inspected",
            NotJson => "Response is not JSON",
            MalformedJson(_) => "Response is not strict JSON",
            ResponseTooLarge => "Response too large",
            DecompressionFailed => "Response could not be decompressed",
            PartialContent => "Partial content cannot be inspected",
            UnexpectedNotModified => "Unexpected 304 from the CRM",
            StreamingUnavailable => "Response too large for an HTTP/1.0 client",
            Internal => "Internal error",
        }
    }

    pub fn detail(&self) -> String {
        use Refusal::*;
        match self {
            BadPath(e) => format!("{e}; send the canonical path"),
            MethodOverride => "method-override headers (X-HTTP-Method-Override and the like) are not accepted: send the real method".into(),
            UpgradeRefused => "consentry does not upgrade connections (WebSocket, h2c): every response must pass the policy".into(),
            MethodRefused => "CONNECT and TRACE are never proxied".into(),
            PurposeRequired => "this client may act for several purposes: name one in the purpose header".into(),
            PurposeInvalid => "the purpose header does not name a known data use".into(),
            PurposeRepeated => "send exactly one purpose header".into(),
            RequestBodyTooLarge => "the request body exceeds limits.request_body".into(),
            RequestBodyUnreadable => "the request body could not be read".into(),
            ApiKeyMissing => "send the client's API key in the API key header".into(),
            ApiKeyUnknown => "the API key matches no configured client".into(),
            PurposeNotAllowed => "this client is not allowed to declare this purpose".into(),
            RouteNotAllowed => "no policy resource matches this method and path".into(),
            PathCaseVariant => "use the path's canonical spelling".into(),
            PurposeNotCovered { policy, resource } => {
                format!("policy `{policy}`, resource `{resource}` has no rule for this purpose")
            }
            RecordBlocked => "the policy does not allow this record to be shown for this purpose".into(),
            UpstreamUnavailable => "the CRM could not be reached".into(),
            UpstreamTimeout => "the CRM did not answer in time".into(),
            UpstreamFailed => "the CRM's response broke off or was invalid".into(),
            UnsupportedEncoding => "the CRM used a Content-Encoding other than gzip, deflate, br or zstd".into(),
            NotJson => "the CRM answered with a content type other than JSON on an inspected route".into(),
            MalformedJson(k) => format!("the CRM's body is not strict JSON ({k})"),
            ResponseTooLarge => "the CRM's body exceeds the configured size limits".into(),
            DecompressionFailed => "the CRM's compressed body is corrupt, truncated or mislabelled".into(),
            PartialContent => "206 responses cannot be inspected; consentry does not forward Range".into(),
            UnexpectedNotModified => "conditional headers are not forwarded, so a 304 cannot be trusted".into(),
            StreamingUnavailable => "responses larger than limits.stream_after are streamed, and over HTTP/1.0 a stream cut short would look complete; use HTTP/1.1 or HTTP/2".into(),
            Internal => "an internal error occurred".into(),
        }
    }
}

/// The problem+json response for a refusal.
pub fn problem(id: &RequestId, r: &Refusal) -> Response<Body> {
    let status = r.status();
    let doc = serde_json::json!({
        "type": format!("urn:consentry:problem:{}", r.slug()),
        "title": r.title(),
        "status": status.as_u16(),
        "detail": r.detail(),
        "request_id": id.as_str(),
    });
    let bytes = Bytes::from(serde_json::to_vec(&doc).unwrap_or_default());
    let mut resp = Response::new(body::full(bytes));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Ok(v) = HeaderValue::from_str(id.as_str()) {
        h.insert("x-request-id", v);
    }
    if matches!(r, Refusal::ApiKeyMissing | Refusal::ApiKeyUnknown) {
        h.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("ApiKey"));
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use Refusal::*;

    fn all() -> Vec<Refusal> {
        vec![
            BadPath(PathError::DotSegment),
            MethodOverride,
            UpgradeRefused,
            MethodRefused,
            PurposeRequired,
            PurposeInvalid,
            PurposeRepeated,
            RequestBodyTooLarge,
            RequestBodyUnreadable,
            ApiKeyMissing,
            ApiKeyUnknown,
            PurposeNotAllowed,
            RouteNotAllowed,
            PathCaseVariant,
            PurposeNotCovered {
                policy: "p".into(),
                resource: "r".into(),
            },
            RecordBlocked,
            UpstreamUnavailable,
            UpstreamTimeout,
            UpstreamFailed,
            UnsupportedEncoding,
            NotJson,
            MalformedJson(Malformed::BadNumber),
            ResponseTooLarge,
            DecompressionFailed,
            PartialContent,
            UnexpectedNotModified,
            StreamingUnavailable,
            Internal,
        ]
    }

    #[test]
    fn status_table_is_pinned() {
        let table: Vec<(String, u16)> = all()
            .iter()
            .map(|r| (r.slug().to_owned(), r.status().as_u16()))
            .collect();
        let expected = [
            ("ambiguous-path", 400),
            ("method-override", 400),
            ("upgrade-refused", 400),
            ("method-refused", 405),
            ("purpose-required", 400),
            ("purpose-invalid", 400),
            ("purpose-repeated", 400),
            ("request-body-too-large", 413),
            ("request-body-unreadable", 400),
            ("api-key-missing", 401),
            ("api-key-unknown", 401),
            ("purpose-not-allowed", 403),
            ("route-not-allowed", 403),
            ("path-case-variant", 400),
            ("purpose-not-covered", 403),
            ("record-blocked", 403),
            ("upstream-unavailable", 502),
            ("upstream-timeout", 504),
            ("upstream-failed", 502),
            ("unsupported-encoding", 502),
            ("not-json", 502),
            ("malformed-json", 502),
            ("response-too-large", 502),
            ("decompression-failed", 502),
            ("partial-content", 502),
            ("unexpected-not-modified", 502),
            ("streaming-unavailable", 502),
            ("internal", 500),
        ];
        let expected: Vec<(String, u16)> =
            expected.iter().map(|(s, c)| (s.to_string(), *c)).collect();
        assert_eq!(table, expected);
    }

    #[test]
    fn problems_are_rfc9457_json() {
        let id = RequestId::parse("abc-123").unwrap();
        for r in all() {
            let resp = problem(&id, &r);
            assert_eq!(
                resp.headers()[header::CONTENT_TYPE],
                "application/problem+json"
            );
            assert_eq!(resp.headers()["x-request-id"], "abc-123");
            assert!(!r.detail().is_empty() && !r.title().is_empty());
        }
    }
}
