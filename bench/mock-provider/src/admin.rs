//! The providers' admin APIs, as far as key rotation needs them:
//!
//! - OpenAI (`Authorization: Bearer <admin key>`): project service accounts (create, which
//!   returns the new key once; list; delete, which deletes its keys) and project API keys
//!   (list with redacted values; delete).
//! - Anthropic (`x-api-key: <admin key>`): API keys (list with `partial_key_hint`, get, and
//!   update `status` to `inactive` or `archived`). Anthropic's admin API cannot create keys.
//! - Azure (see [`crate::azure`]).
//!
//! An unknown admin credential gets the provider's 401.

use axum::body::Body;
use axum::http::{HeaderMap, Method, Response, StatusCode};
use serde_json::{json, Value};

use crate::keys::{redacted, Key, KeyStore, Provider, ServiceAccount, Status};
use crate::response::{self, Flavor};

const OPENAI_PROJECTS: &str = "/v1/organization/projects/";
const ANTHROPIC_KEYS: &str = "/v1/organizations/api_keys";

/// The credential a request presents, from whichever header its provider reads.
pub fn presented(headers: &HeaderMap) -> Option<&str> {
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let header = |name| headers.get(name).and_then(|v| v.to_str().ok());
    bearer
        .or_else(|| header("x-api-key"))
        .or_else(|| header("api-key"))
}

/// Answers an admin API call, or `None` when `path` is not one.
pub fn route(
    keys: &KeyStore,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Option<Response<Body>> {
    let flavor = if path.starts_with(ANTHROPIC_KEYS) {
        Flavor::Anthropic
    } else if path.starts_with(OPENAI_PROJECTS) {
        Flavor::OpenAi
    } else {
        return None;
    };
    if !keys.is_admin(presented(headers)) {
        return Some(response::error(
            flavor,
            StatusCode::UNAUTHORIZED,
            "Invalid admin API key.",
            false,
        ));
    }
    Some(match flavor {
        Flavor::OpenAi => openai(keys, method, &path[OPENAI_PROJECTS.len()..], body),
        Flavor::Anthropic => anthropic(keys, method, &path[ANTHROPIC_KEYS.len()..], body),
    })
}

fn not_found(flavor: Flavor, what: &str) -> Response<Body> {
    response::error(flavor, StatusCode::NOT_FOUND, what, false)
}

fn ok(value: &Value) -> Response<Body> {
    response::json(StatusCode::OK, value, false)
}

/// `{project}/service_accounts[/{id}]` and `{project}/api_keys[/{id}]`.
fn openai(keys: &KeyStore, method: &Method, rest: &str, body: &[u8]) -> Response<Body> {
    let parts: Vec<&str> = rest.split('/').collect();
    match (method, parts.as_slice()) {
        (&Method::POST, [project, "service_accounts"]) => {
            let name = serde_json::from_slice::<Value>(body)
                .ok()
                .and_then(|v| v.get("name").and_then(Value::as_str).map(str::to_string));
            let Some(name) = name else {
                return response::error(
                    Flavor::OpenAi,
                    StatusCode::BAD_REQUEST,
                    "name is required",
                    false,
                );
            };
            let (account, key) = keys.create_service_account(project, &name);
            let mut doc = service_account(&account);
            doc["api_key"] = json!({
                "object": "organization.project.service_account.api_key",
                "value": key.value,
                "name": key.name,
                "created_at": key.created_at as u64,
                "id": key.id,
            });
            ok(&doc)
        }
        (&Method::GET, [project, "service_accounts"]) => {
            let data: Vec<Value> = keys
                .service_accounts(project)
                .iter()
                .map(service_account)
                .collect();
            ok(&list(data))
        }
        (&Method::DELETE, [project, "service_accounts", id]) => {
            if !keys.delete_service_account(project, id) {
                return not_found(Flavor::OpenAi, "No such service account.");
            }
            ok(
                &json!({"object": "organization.project.service_account.deleted", "id": id, "deleted": true}),
            )
        }
        (&Method::GET, [project, "api_keys"]) => {
            let data: Vec<Value> = keys
                .list(Provider::Openai, Some(project))
                .iter()
                .map(|k| openai_key(keys, k))
                .collect();
            ok(&list(data))
        }
        (&Method::DELETE, [_project, "api_keys", id]) => {
            match keys.set_status(Provider::Openai, id, Status::Deleted) {
                Some(_) => ok(
                    &json!({"object": "organization.project.api_key.deleted", "id": id, "deleted": true}),
                ),
                None => not_found(Flavor::OpenAi, "No such API key."),
            }
        }
        _ => not_found(Flavor::OpenAi, "Unknown admin endpoint."),
    }
}

fn list(data: Vec<Value>) -> Value {
    let first = data
        .first()
        .and_then(|d| d["id"].as_str())
        .map(str::to_string);
    let last = data
        .last()
        .and_then(|d| d["id"].as_str())
        .map(str::to_string);
    json!({"object": "list", "data": data, "first_id": first, "last_id": last, "has_more": false})
}

fn service_account(a: &ServiceAccount) -> Value {
    json!({
        "object": "organization.project.service_account",
        "id": a.id,
        "name": a.name,
        "role": "member",
        "created_at": a.created_at as u64,
    })
}

fn openai_key(keys: &KeyStore, k: &Key) -> Value {
    let owner = match k.owner.as_deref().and_then(|o| keys.account(o)) {
        Some(a) => json!({"type": "service_account", "service_account": service_account(&a)}),
        None => json!({"type": "user", "user": {"id": "user_mock", "name": "mock user"}}),
    };
    json!({
        "object": "organization.project.api_key",
        "redacted_value": redacted(&k.value),
        "name": k.name,
        "created_at": k.created_at as u64,
        "last_used_at": null,
        "id": k.id,
        "owner": owner,
    })
}

/// `""` (list), `/{id}` (get, update).
fn anthropic(keys: &KeyStore, method: &Method, rest: &str, body: &[u8]) -> Response<Body> {
    let id = rest.strip_prefix('/').unwrap_or(rest);
    let find = |id: &str| {
        keys.list(Provider::Anthropic, None)
            .into_iter()
            .find(|k| k.id == id)
    };
    match (method, id) {
        (&Method::GET, "") => {
            let data: Vec<Value> = keys
                .list(Provider::Anthropic, None)
                .iter()
                .map(anthropic_key)
                .collect();
            let first = data.first().map(|d| d["id"].clone());
            let last = data.last().map(|d| d["id"].clone());
            ok(&json!({"data": data, "has_more": false, "first_id": first, "last_id": last}))
        }
        (&Method::GET, id) => match find(id) {
            Some(k) => ok(&anthropic_key(&k)),
            None => not_found(Flavor::Anthropic, "API key not found."),
        },
        (&Method::POST, id) => {
            let status = serde_json::from_slice::<Value>(body).ok().and_then(|v| {
                match v.get("status").and_then(Value::as_str) {
                    Some("active") => Some(Status::Active),
                    Some("inactive" | "archived") => Some(Status::Inactive),
                    _ => None,
                }
            });
            let updated = match status {
                Some(status) => keys.set_status(Provider::Anthropic, id, status),
                None => find(id),
            };
            match updated {
                Some(k) => ok(&anthropic_key(&k)),
                None => not_found(Flavor::Anthropic, "API key not found."),
            }
        }
        _ => not_found(Flavor::Anthropic, "Unknown admin endpoint."),
    }
}

fn anthropic_key(k: &Key) -> Value {
    let status = match k.status {
        Status::Active => "active",
        Status::Inactive | Status::Deleted => "inactive",
    };
    json!({
        "type": "api_key",
        "id": k.id,
        "name": k.name,
        "status": status,
        "partial_key_hint": redacted(&k.value),
        "workspace_id": null,
        "created_at": humanize(k.created_at),
        "created_by": {"id": "user_mock", "type": "user"},
    })
}

/// RFC 3339 UTC from Unix seconds (whole seconds).
fn humanize(unix: f64) -> String {
    let secs = unix as u64;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month, day) (Howard Hinnant's algorithm).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_rfc3339() {
        assert_eq!(humanize(0.0), "1970-01-01T00:00:00Z");
        assert_eq!(humanize(1_730_332_707.0), "2024-10-30T23:58:27Z");
    }
}
