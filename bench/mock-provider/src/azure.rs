//! Azure's side of key rotation: the Entra ID client-credentials login
//! (`POST /{tenant}/oauth2/v2.0/token`, the client secret being one of the mock's admin keys)
//! and the Azure Resource Manager calls on a Cognitive Services account
//! (`…/accounts/{account}/listKeys` and `…/regenerateKey` with `{"keyName": "Key1"}`), which
//! answer `{"key1", "key2"}`. A regenerated slot's old value stops working at once.

use axum::body::Body;
use axum::http::{HeaderMap, Method, Response, StatusCode};
use serde_json::{json, Value};

use crate::admin::presented;
use crate::keys::KeyStore;
use crate::response;

const ACCOUNTS: &str = "/providers/Microsoft.CognitiveServices/accounts/";

/// Answers a login or ARM call, or `None` when `path` is neither.
pub fn route(
    keys: &KeyStore,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Option<Response<Body>> {
    if method == Method::POST && path.ends_with("/oauth2/v2.0/token") {
        return Some(login(keys, body));
    }
    if !path.starts_with("/subscriptions/") {
        return None;
    }
    let (_, rest) = path.split_once(ACCOUNTS)?;
    let (account, operation) = rest.split_once('/')?;
    if !keys.is_admin(presented(headers)) {
        return Some(arm_error(
            StatusCode::UNAUTHORIZED,
            "InvalidAuthenticationToken",
            "The access token is invalid.",
        ));
    }
    if method != Method::POST {
        return Some(arm_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "Use POST.",
        ));
    }
    Some(match operation {
        "listKeys" => slots(keys, account),
        "regenerateKey" => {
            let slot = serde_json::from_slice::<Value>(body).ok().and_then(|v| {
                v.get("keyName")
                    .and_then(Value::as_str)
                    .map(str::to_lowercase)
            });
            match slot.as_deref() {
                Some(slot @ ("key1" | "key2")) if keys.azure_slot(account, slot).is_some() => {
                    keys.azure_regenerate(account, slot);
                    slots(keys, account)
                }
                Some("key1" | "key2") => not_found(account),
                _ => arm_error(
                    StatusCode::BAD_REQUEST,
                    "InvalidKeyName",
                    "keyName must be Key1 or Key2.",
                ),
            }
        }
        _ => arm_error(
            StatusCode::NOT_FOUND,
            "InvalidResourceType",
            "Unknown operation.",
        ),
    })
}

fn slots(keys: &KeyStore, account: &str) -> Response<Body> {
    match (
        keys.azure_slot(account, "key1"),
        keys.azure_slot(account, "key2"),
    ) {
        (Some(key1), Some(key2)) => {
            response::json(StatusCode::OK, &json!({"key1": key1, "key2": key2}), false)
        }
        _ => not_found(account),
    }
}

fn not_found(account: &str) -> Response<Body> {
    arm_error(
        StatusCode::NOT_FOUND,
        "ResourceNotFound",
        &format!("The Resource 'Microsoft.CognitiveServices/accounts/{account}' was not found."),
    )
}

fn arm_error(status: StatusCode, code: &str, message: &str) -> Response<Body> {
    response::json(
        status,
        &json!({"error": {"code": code, "message": message}}),
        false,
    )
}

fn login(keys: &KeyStore, body: &[u8]) -> Response<Body> {
    let form = String::from_utf8_lossy(body);
    let secret = form
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| *k == "client_secret")
        .map(|(_, v)| percent_decode(v));
    match secret.and_then(|s| keys.arm_login(&s)) {
        Some(token) => response::json(
            StatusCode::OK,
            &json!({"token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599, "access_token": token}),
            false,
        ),
        None => response::json(
            StatusCode::UNAUTHORIZED,
            &json!({"error": "invalid_client", "error_description": "AADSTS7000215: Invalid client secret provided."}),
            false,
        ),
    }
}

/// `application/x-www-form-urlencoded` value decoding (`+` and `%XX`).
fn percent_decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_values_decode() {
        assert_eq!(percent_decode("a%2Fb+c"), "a/b c");
        assert_eq!(percent_decode("100%"), "100%");
    }
}
