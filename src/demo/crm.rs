//! The sample CRM of `consentry demo` (and of the integration tests): a
//! HubSpot-shaped contacts API on loopback, serving the invented contacts
//! of `data` and the contacts created through it.
//!
//! ```text
//! GET   /crm/v3/objects/contacts/{id}           one contact (404 if unknown)
//! GET   /crm/v3/objects/contacts?limit=&after=  {"results":[...],"paging":{...}}
//! GET   /crm/v3/objects/contacts?email=X        the contacts whose email is exactly X
//! POST  /crm/v3/objects/contacts                create: {"properties":{...}} -> 201, ids from 1001
//! PATCH /crm/v3/objects/contacts/{id}           update a created contact's properties
//! DELETE /crm/v3/objects/contacts/{id}          delete a contact -> 204 (404 if unknown)
//! POST  /crm/v3/objects/contacts/search         {"filterGroups":[{"filters":[{propertyName, operator: EQ, value}]}]}
//! GET   /crm/v3/properties/contacts             the property schema (no personal data)
//! ```
//!
//! Like a real CRM it stores what it receives as it receives it, so what
//! the gateway sent is what the CRM holds (`Crm::stored`).

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::{Value, json};
use tokio::net::TcpListener;

use super::data;

/// How many contacts the sample CRM holds.
pub const CONTACTS: u64 = 250;

fn json_response(status: StatusCode, body: &serde_json::Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(
        serde_json::to_vec(body).unwrap_or_default(),
    )));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json;charset=utf-8"),
    );
    r
}

fn query_param(q: Option<&str>, name: &str) -> Option<u64> {
    q?.split('&')
        .filter_map(|p| p.split_once('='))
        .find(|(k, _)| *k == name)
        .and_then(|(_, v)| v.parse().ok())
}

/// The sample CRM's state: the contacts created through it.
#[derive(Debug, Default)]
pub struct Crm {
    created: Mutex<BTreeMap<u64, Value>>,
    /// Every write body received, byte for byte.
    received: Mutex<Vec<Bytes>>,
    /// Where the created contacts are kept between runs (the demo's CRM
    /// remembers, like a real one, so that ids are never reused while the
    /// gateway's store still holds their keys).
    file: Option<std::path::PathBuf>,
}

/// The first id the CRM assigns.
pub const FIRST_CREATED: u64 = 1001;

const BASE: &str = "/crm/v3/objects/contacts";

fn not_found() -> Response<Full<Bytes>> {
    json_response(
        StatusCode::NOT_FOUND,
        &json!({"status":"error","message":"Object not found","category":"OBJECT_NOT_FOUND"}),
    )
}

fn bad_request(message: &str) -> Response<Full<Bytes>> {
    json_response(
        StatusCode::BAD_REQUEST,
        &json!({"status":"error","message": message,"category":"VALIDATION_ERROR"}),
    )
}

fn now_iso() -> String {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    crate::clock::rfc3339(ms)
}

impl Crm {
    pub fn new() -> Arc<Crm> {
        Arc::new(Crm::default())
    }

    /// A CRM that keeps its created contacts in `file`, loaded now: JSON
    /// lines, one per create, update or delete (`{"id": n, "record": ...}`,
    /// `null` for a deleted one), appended as they happen and replayed in
    /// order. (A `.json` map from an earlier demo is read first.)
    pub fn persistent(file: std::path::PathBuf) -> Arc<Crm> {
        let mut created: BTreeMap<u64, Value> = std::fs::read(file.with_extension("json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        if let Ok(text) = std::fs::read_to_string(&file) {
            for line in text.lines() {
                let Ok(v) = serde_json::from_str::<Value>(line) else {
                    continue; // a line cut short by a crash
                };
                if let Some(id) = v["id"].as_u64() {
                    created.insert(id, v["record"].clone());
                }
            }
        }
        Arc::new(Crm {
            created: Mutex::new(created),
            received: Mutex::default(),
            file: Some(file),
        })
    }

    /// Appends one contact's new state to the file, if there is one.
    fn save(&self, id: u64, record: &Value) {
        use std::io::Write as _;
        let Some(file) = &self.file else { return };
        let mut line = serde_json::to_vec(&json!({"id": id, "record": record})).unwrap_or_default();
        line.push(b'\n');
        let ok = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(file)
            .and_then(|mut f| f.write_all(&line));
        if ok.is_err() {
            tracing::warn!(file = %file.display(), "the sample CRM cannot save its contacts");
        }
    }

    /// Every contact created through the CRM, as it stores them (JSON).
    pub fn stored(&self) -> Vec<u8> {
        let created = self.created.lock().map(|c| c.clone()).unwrap_or_default();
        let live: Vec<&Value> = created.values().filter(|v| !v.is_null()).collect();
        serde_json::to_vec(&live).unwrap_or_default()
    }

    /// Deletes a contact: its entry becomes a tombstone (`null`), so that
    /// neither it nor its id comes back.
    fn delete(&self, id: u64) -> Response<Full<Bytes>> {
        if self.contact(id).is_none() {
            return not_found();
        }
        let Ok(mut created) = self.created.lock() else {
            return bad_request("unavailable");
        };
        created.insert(id, Value::Null);
        self.save(id, &Value::Null);
        let mut r = Response::new(Full::new(Bytes::new()));
        *r.status_mut() = StatusCode::NO_CONTENT;
        r
    }

    fn deleted(&self, id: u64) -> bool {
        self.created
            .lock()
            .is_ok_and(|c| c.get(&id).is_some_and(Value::is_null))
    }

    /// Every write body the CRM received, byte for byte.
    pub fn received(&self) -> Vec<Bytes> {
        self.received.lock().map(|r| r.clone()).unwrap_or_default()
    }

    fn contact(&self, id: u64) -> Option<Value> {
        if let Some(c) = self.created.lock().ok()?.get(&id) {
            return (!c.is_null()).then(|| c.clone());
        }
        (1..=CONTACTS).contains(&id).then(|| data::contact(id))
    }

    /// Every contact whose property `name` is exactly `value`.
    fn find(&self, name: &str, value: &Value) -> Vec<Value> {
        let created: Vec<Value> = self
            .created
            .lock()
            .map(|c| c.values().cloned().collect())
            .unwrap_or_default();
        (1..=CONTACTS)
            .filter(|n| !self.deleted(*n))
            .map(data::contact)
            .chain(created)
            .filter(|c| !c.is_null() && c["properties"].get(name) == Some(value))
            .collect()
    }

    fn create(&self, body: &[u8]) -> Response<Full<Bytes>> {
        let Ok(mut doc) = serde_json::from_slice::<Value>(body) else {
            return bad_request("the body is not JSON");
        };
        let Some(props) = doc.get_mut("properties").and_then(Value::as_object_mut) else {
            return bad_request("a contact needs `properties`");
        };
        let Ok(mut created) = self.created.lock() else {
            return bad_request("unavailable");
        };
        let id = created
            .range(FIRST_CREATED..)
            .next_back()
            .map_or(FIRST_CREATED, |(n, _)| n + 1);
        let now = now_iso();
        props.insert("hs_object_id".into(), id.to_string().into());
        props.insert("createdate".into(), now.clone().into());
        props.insert("lastmodifieddate".into(), now.clone().into());
        let record = json!({
            "id": id.to_string(),
            "properties": props,
            "createdAt": now,
            "updatedAt": now,
            "archived": false,
        });
        self.save(id, &record);
        created.insert(id, record.clone());
        json_response(StatusCode::CREATED, &record)
    }

    fn update(&self, id: u64, body: &[u8]) -> Response<Full<Bytes>> {
        let Ok(doc) = serde_json::from_slice::<Value>(body) else {
            return bad_request("the body is not JSON");
        };
        let Some(props) = doc.get("properties").and_then(Value::as_object) else {
            return bad_request("an update needs `properties`");
        };
        let Ok(mut created) = self.created.lock() else {
            return bad_request("unavailable");
        };
        // The invented contacts are read-only; an update makes a stored copy.
        let record = match created.entry(id) {
            std::collections::btree_map::Entry::Occupied(e) if e.get().is_null() => {
                return not_found();
            }
            std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::btree_map::Entry::Vacant(v) => {
                if !(1..=CONTACTS).contains(&id) {
                    return not_found();
                }
                v.insert(data::contact(id))
            }
        };
        let now = now_iso();
        if let Some(stored) = record["properties"].as_object_mut() {
            for (k, v) in props {
                stored.insert(k.clone(), v.clone());
            }
            stored.insert("lastmodifieddate".into(), now.clone().into());
        }
        record["updatedAt"] = now.into();
        let resp = json_response(StatusCode::OK, record);
        self.save(id, record);
        resp
    }

    /// HubSpot's search: filter groups are ORed, filters in a group ANDed;
    /// this sample CRM knows `EQ` only.
    fn search(&self, body: &[u8]) -> Response<Full<Bytes>> {
        let Ok(doc) = serde_json::from_slice::<Value>(body) else {
            return bad_request("the body is not JSON");
        };
        let empty = Vec::new();
        let groups = doc["filterGroups"].as_array().unwrap_or(&empty);
        let mut results: Vec<Value> = Vec::new();
        for g in groups {
            let filters = g["filters"].as_array().unwrap_or(&empty);
            let mut hits: Option<Vec<Value>> = None;
            for f in filters {
                if f["operator"] != "EQ" {
                    return bad_request("this sample CRM searches with EQ only");
                }
                let name = f["propertyName"].as_str().unwrap_or("");
                let found = self.find(name, &f["value"]);
                hits = Some(match hits {
                    None => found,
                    Some(h) => h.into_iter().filter(|c| found.contains(c)).collect(),
                });
            }
            for c in hits.unwrap_or_default() {
                if !results.contains(&c) {
                    results.push(c);
                }
            }
        }
        json_response(
            StatusCode::OK,
            &json!({ "total": results.len(), "results": results }),
        )
    }

    /// Answers one request.
    pub fn answer(
        &self,
        method: &Method,
        path: &str,
        query: Option<&str>,
        body: &[u8],
    ) -> Response<Full<Bytes>> {
        let write = *method == Method::POST || *method == Method::PATCH;
        if write && let Ok(mut r) = self.received.lock() {
            r.push(Bytes::copy_from_slice(body));
        }
        match (method.as_str(), path) {
            ("POST", BASE) => return self.create(body),
            ("POST", "/crm/v3/objects/contacts/search") => return self.search(body),
            ("GET" | "HEAD", _) => {}
            ("PATCH" | "DELETE", _) if path.starts_with(BASE) => {}
            _ => {
                return json_response(
                    StatusCode::METHOD_NOT_ALLOWED,
                    &json!({"status":"error","message":"method not allowed"}),
                );
            }
        }
        if path == BASE {
            if let Some(email) = query_text(query, "email") {
                let results = self.find("email", &Value::String(email));
                return json_response(StatusCode::OK, &json!({ "results": results }));
            }
            let limit = query_param(query, "limit").unwrap_or(10).clamp(1, 100);
            let after = query_param(query, "after").unwrap_or(0);
            let mut page = data::page(BASE, after, limit, CONTACTS);
            if let Some(list) = page.get_mut("results").and_then(Value::as_array_mut) {
                list.retain(|c| {
                    let id = c["id"].as_str().and_then(|i| i.parse().ok());
                    !id.is_some_and(|i| self.deleted(i))
                });
            }
            return json_response(StatusCode::OK, &page);
        }
        if let Some(id) = path.strip_prefix(BASE).and_then(|r| r.strip_prefix('/')) {
            let Ok(n) = id.parse::<u64>() else {
                return not_found();
            };
            if *method == Method::PATCH {
                return self.update(n, body);
            }
            if *method == Method::DELETE {
                return self.delete(n);
            }
            return match self.contact(n) {
                Some(c) => json_response(StatusCode::OK, &c),
                None => not_found(),
            };
        }
        if path == "/crm/v3/properties/contacts" {
            let names = [
                "email",
                "firstname",
                "lastname",
                "phone",
                "date_of_birth",
                "notes",
            ];
            let props: Vec<_> = names
                .iter()
                .map(|n| json!({"name": n, "type": "string"}))
                .collect();
            return json_response(StatusCode::OK, &json!({ "results": props }));
        }
        json_response(
            StatusCode::NOT_FOUND,
            &json!({"status":"error","message":"not found"}),
        )
    }
}

/// A query parameter's percent-decoded text.
fn query_text(q: Option<&str>, name: &str) -> Option<String> {
    let v = q?
        .split('&')
        .filter_map(|p| p.split_once('='))
        .find(|(k, _)| *k == name)?
        .1;
    percent_encoding::percent_decode_str(v)
        .decode_utf8()
        .ok()
        .map(|s| s.into_owned())
}

/// Serves `crm` on `listener` until `shutdown` resolves.
pub async fn serve(crm: Arc<Crm>, listener: TcpListener, shutdown: impl Future<Output = ()>) {
    let builder = Arc::new(auto::Builder::new(TokioExecutor::new()));
    tokio::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
            a = listener.accept() => match a { Ok(a) => a, Err(_) => continue },
            () = &mut shutdown => return,
        };
        let builder = Arc::clone(&builder);
        let crm = Arc::clone(&crm);
        tokio::spawn(async move {
            let svc = service_fn(move |req: Request<Incoming>| {
                let crm = Arc::clone(&crm);
                async move {
                    let (parts, body) = req.into_parts();
                    let body = body
                        .collect()
                        .await
                        .map(|b| b.to_bytes())
                        .unwrap_or_default();
                    Ok::<_, std::convert::Infallible>(crm.answer(
                        &parts.method,
                        parts.uri.path(),
                        parts.uri.query(),
                        &body,
                    ))
                }
            });
            let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(r: Response<Full<Bytes>>) -> (StatusCode, Value) {
        let status = r.status();
        let bytes =
            futures_util::FutureExt::now_or_never(http_body_util::BodyExt::collect(r.into_body()))
                .and_then(Result::ok)
                .map(|c| c.to_bytes())
                .unwrap_or_default();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    #[test]
    fn a_persistent_crm_replays_creates_updates_and_deletes() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("crm.jsonl");
        let one = |crm: &Crm, m: Method, path: &str, b: &str| {
            body(crm.answer(&m, path, None, b.as_bytes()))
        };
        {
            let crm = Crm::persistent(file.clone());
            // A deleted invented contact does not move where ids start.
            assert_eq!(
                one(&crm, Method::DELETE, "/crm/v3/objects/contacts/8", "").0,
                204
            );
            let (s, c) = one(
                &crm,
                Method::POST,
                BASE,
                r#"{"properties":{"email":"a@x.example"}}"#,
            );
            assert_eq!((s, c["id"].as_str()), (StatusCode::CREATED, Some("1001")));
            one(
                &crm,
                Method::POST,
                BASE,
                r#"{"properties":{"email":"b@x.example"}}"#,
            );
            let patch = r#"{"properties":{"email":"a2@x.example"}}"#;
            assert_eq!(
                one(&crm, Method::PATCH, "/crm/v3/objects/contacts/1001", patch).0,
                200
            );
            assert_eq!(
                one(&crm, Method::DELETE, "/crm/v3/objects/contacts/1002", "").0,
                204
            );
        }
        let crm = Crm::persistent(file);
        let (s, c) = one(&crm, Method::GET, "/crm/v3/objects/contacts/1001", "");
        assert_eq!(
            (s, &c["properties"]["email"]),
            (StatusCode::OK, &json!("a2@x.example"))
        );
        assert_eq!(
            one(&crm, Method::GET, "/crm/v3/objects/contacts/1002", "").0,
            404
        );
        assert_eq!(
            one(&crm, Method::GET, "/crm/v3/objects/contacts/8", "").0,
            404
        );
        // Ids are never reused, not even a deleted one's.
        let (_, c) = one(&crm, Method::POST, BASE, r#"{"properties":{}}"#);
        assert_eq!(c["id"], "1003");
    }
}
