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
    /// A write body on an inspected route that is not JSON.
    RequestNotJson,
    /// A compressed write body on an inspected route.
    RequestEncoding,
    MalformedRequestJson(Malformed),
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
    /// A record's subject has not consented to the purpose (or objected);
    /// `write`: refused before a write reached the CRM.
    ConsentRequired {
        purpose: String,
        write: bool,
    },
    /// The consent store could not be read.
    ConsentUnavailable,
    /// The request's audit event could not be stored: nothing is released.
    AuditUnavailable,
    /// A data key could not be read or made (key store down, no master key).
    KeysUnavailable,
    /// A search on an encrypted field that cannot be rewritten into tokens.
    SearchUnsupported(String),
    /// A write of encrypted fields whose path names no usable customer id.
    SubjectUnknown,
    /// A write of encrypted fields for a customer whose key was destroyed.
    SubjectErased,
    /// The response's one record belongs to an erased customer.
    RecordErased,
    /// A write carries a token as the value of an encrypted field.
    TokenAsValue,
    /// A write carries data the purpose may not collect (`minimise: refuse`).
    NotCollectable {
        purpose: String,
        collectable: Vec<String>,
    },
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
    /// The CRM answered a create with no usable id, or an id that already
    /// has a key: the encrypted values cannot be bound to the record.
    KeyBinding,
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
            | RequestBodyUnreadable
            | MalformedRequestJson(_)
            | SearchUnsupported(_)
            | SubjectUnknown
            | TokenAsValue => StatusCode::BAD_REQUEST,
            RequestNotJson | RequestEncoding => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            MethodRefused => StatusCode::METHOD_NOT_ALLOWED,
            RequestBodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiKeyMissing | ApiKeyUnknown => StatusCode::UNAUTHORIZED,
            PurposeNotAllowed
            | RouteNotAllowed
            | PurposeNotCovered { .. }
            | ConsentRequired { .. }
            | NotCollectable { .. } => StatusCode::FORBIDDEN,
            SubjectErased => StatusCode::CONFLICT,
            RecordErased => StatusCode::GONE,
            ConsentUnavailable | KeysUnavailable | AuditUnavailable => {
                StatusCode::SERVICE_UNAVAILABLE
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
            | StreamingUnavailable
            | KeyBinding => StatusCode::BAD_GATEWAY,
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
            RequestNotJson => "request-not-json",
            RequestEncoding => "request-encoding",
            MalformedRequestJson(_) => "malformed-request-json",
            ApiKeyMissing => "api-key-missing",
            ApiKeyUnknown => "api-key-unknown",
            PurposeNotAllowed => "purpose-not-allowed",
            RouteNotAllowed => "route-not-allowed",
            PathCaseVariant => "path-case-variant",
            PurposeNotCovered { .. } => "purpose-not-covered",
            ConsentRequired { .. } => "consent-required",
            ConsentUnavailable => "consent-unavailable",
            AuditUnavailable => "audit-unavailable",
            KeysUnavailable => "keys-unavailable",
            SearchUnsupported(_) => "search-unsupported",
            SubjectUnknown => "subject-unknown",
            SubjectErased => "subject-erased",
            RecordErased => "record-erased",
            TokenAsValue => "token-as-value",
            KeyBinding => "key-binding",
            NotCollectable { .. } => "not-collectable",
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
            RequestNotJson => "Request body is not JSON",
            RequestEncoding => "Compressed request body",
            MalformedRequestJson(_) => "Request body is not strict JSON",
            ApiKeyMissing => "API key required",
            ApiKeyUnknown => "Unknown API key",
            PurposeNotAllowed => "Purpose not allowed for this client",
            RouteNotAllowed => "Route not allowed",
            PathCaseVariant => "Path differs from a known route only in letter case",
            PurposeNotCovered { .. } => "Purpose not covered by the policy",
            ConsentRequired { .. } => "Consent required",
            ConsentUnavailable => "Consent store unavailable",
            AuditUnavailable => "Audit trail unavailable",
            KeysUnavailable => "Encryption keys unavailable",
            SearchUnsupported(_) => "Search on an encrypted field not possible",
            SubjectUnknown => "Customer id required",
            SubjectErased => "Customer erased",
            RecordErased => "Customer erased",
            TokenAsValue => "Token written as a value",
            KeyBinding => "Created record cannot be bound to its key",
            NotCollectable { .. } => "Data the purpose may not collect",
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
            RequestNotJson => "writes to this route are inspected: send the body as application/json (UTF-8)".into(),
            RequestEncoding => "writes to this route are inspected: send the body without Content-Encoding".into(),
            MalformedRequestJson(k) => format!("the request body is not strict JSON ({k})"),
            ApiKeyMissing => "send the client's API key in the API key header".into(),
            ApiKeyUnknown => "the API key matches no configured client".into(),
            PurposeNotAllowed => "this client is not allowed to declare this purpose".into(),
            RouteNotAllowed => "no policy resource matches this method and path".into(),
            PathCaseVariant => "use the path's canonical spelling".into(),
            PurposeNotCovered { policy, resource } => {
                format!("policy `{policy}`, resource `{resource}` has no rule for this purpose")
            }
            ConsentRequired { purpose, write: false } => format!(
                "the customer has not consented to `{purpose}` (or has objected), and the policy blocks the response"
            ),
            ConsentRequired { purpose, write: true } => format!(
                "the customer has not consented to `{purpose}` (or has objected), so this write was not sent to the CRM"
            ),
            ConsentUnavailable => "the consent store could not be read; responses that depend on consent are refused until it is back".into(),
            AuditUnavailable => "the audit event of this request could not be stored, so its response is not released; try again when the audit store is back".into(),
            KeysUnavailable => "the data keys could not be read or made; encrypted fields are neither written nor shown until the key store is back".into(),
            SearchUnsupported(why) => why.clone(),
            TokenAsValue => "an encrypted field carries a consentry token (ctk1./ctd1.): write the value itself; tokens are made by the gateway".into(),
            SubjectErased => "this customer's data key was destroyed (erasure): encrypted fields are not written for them again".into(),
            RecordErased => "this record belongs to a customer who was erased: nothing of theirs is served or written again (the CRM may still hold it)".into(),
            SubjectUnknown => "this write stores encrypted fields under the customer's key, and the path does not name a well-formed customer id".into(),
            KeyBinding => "the CRM created the record, but its answer names no usable id (or an id that already has a key), so the encrypted values sent cannot be read back; check the CRM and the resource's `subject` selector".into(),
            NotCollectable { purpose, collectable } if collectable.is_empty() => format!(
                "purpose `{purpose}` may not write personal data to this route; the policy refuses such writes"
            ),
            NotCollectable { purpose, collectable } => format!(
                "the body carries data that purpose `{purpose}` may not collect; it may write only {}",
                collectable.join(", ")
            ),
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
    let mut resp = problem_response(
        r.status(),
        r.slug(),
        r.title(),
        &r.detail(),
        Some(id.as_str()),
    );
    if matches!(r, Refusal::ApiKeyMissing | Refusal::ApiKeyUnknown) {
        resp.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("ApiKey"));
    }
    resp
}

/// An RFC 9457 problem+json response (`type` is `urn:consentry:problem:{slug}`);
/// the admin API uses it too.
pub fn problem_response(
    status: StatusCode,
    slug: &str,
    title: &str,
    detail: &str,
    request_id: Option<&str>,
) -> Response<Body> {
    let mut doc = serde_json::json!({
        "type": format!("urn:consentry:problem:{slug}"),
        "title": title,
        "status": status.as_u16(),
        "detail": detail,
    });
    if let Some(id) = request_id {
        doc["request_id"] = id.into();
    }
    let bytes = Bytes::from(serde_json::to_vec(&doc).unwrap_or_default());
    let mut resp = Response::new(body::full(bytes));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Some(v) = request_id.and_then(|id| HeaderValue::from_str(id).ok()) {
        h.insert("x-request-id", v);
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
            RequestNotJson,
            RequestEncoding,
            MalformedRequestJson(Malformed::BadNumber),
            ApiKeyMissing,
            ApiKeyUnknown,
            PurposeNotAllowed,
            RouteNotAllowed,
            PathCaseVariant,
            PurposeNotCovered {
                policy: "p".into(),
                resource: "r".into(),
            },
            ConsentRequired {
                purpose: "marketing".into(),
                write: false,
            },
            ConsentUnavailable,
            AuditUnavailable,
            KeysUnavailable,
            SearchUnsupported("why".into()),
            SubjectUnknown,
            SubjectErased,
            RecordErased,
            TokenAsValue,
            KeyBinding,
            NotCollectable {
                purpose: "marketing".into(),
                collectable: vec!["user.contact.email".into()],
            },
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
            ("request-not-json", 415),
            ("request-encoding", 415),
            ("malformed-request-json", 400),
            ("api-key-missing", 401),
            ("api-key-unknown", 401),
            ("purpose-not-allowed", 403),
            ("route-not-allowed", 403),
            ("path-case-variant", 400),
            ("purpose-not-covered", 403),
            ("consent-required", 403),
            ("consent-unavailable", 503),
            ("audit-unavailable", 503),
            ("keys-unavailable", 503),
            ("search-unsupported", 400),
            ("subject-unknown", 400),
            ("subject-erased", 409),
            ("record-erased", 410),
            ("token-as-value", 400),
            ("key-binding", 502),
            ("not-collectable", 403),
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
