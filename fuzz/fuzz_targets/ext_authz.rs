//! The ext_authz edge: an arbitrary `CheckRequest` (protobuf bytes as Envoy sends them)
//! through the header-only pipeline.
#![no_main]

use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use envoy_types::pb::envoy::service::auth::v3::CheckRequest;
use keygate::envoy::ext_authz::check;
use keygate_fuzz::{assert_no_secret, check_allow_mutation, check_denial_body, fixture};
use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let Ok(request) = CheckRequest::decode(data) else {
        return;
    };
    let fixture = fixture();
    let pipeline = fixture.pipeline();
    let response = fixture.runtime.block_on(check(&pipeline, &request));
    if std::env::var_os("KEYGATE_FUZZ_DEBUG").is_some() {
        eprintln!("{response:?}");
    }
    let code = response.status.as_ref().map_or(-1, |s| s.code);
    match response.http_response {
        Some(HttpResponse::DeniedResponse(denied)) => {
            assert_ne!(code, 0, "a denial with an OK status");
            let status = denied.status.map_or(0, |s| s.code);
            assert!((400..600).contains(&status), "denial status {status}");
            check_denial_body(denied.body.as_bytes(), data);
            for header in &denied.headers {
                if let Some(h) = &header.header {
                    assert_no_secret(h.value.as_bytes(), data, "denial header");
                    assert_no_secret(&h.raw_value, data, "denial header");
                }
            }
        }
        Some(HttpResponse::OkResponse(ok)) => {
            assert_eq!(code, 0);
            let http = request
                .attributes
                .as_ref()
                .and_then(|a| a.request.as_ref())
                .and_then(|r| r.http.as_ref())
                .expect("an allow had HTTP attributes");
            let names: Vec<&str> = match &http.header_map {
                Some(m) if !m.headers.is_empty() => {
                    m.headers.iter().map(|h| h.key.as_str()).collect()
                }
                _ => http.headers.keys().map(String::as_str).collect(),
            };
            let set: Vec<&str> = ok
                .headers
                .iter()
                .filter_map(|o| o.header.as_ref().map(|h| h.key.as_str()))
                .collect();
            check_allow_mutation(names, &ok.headers_to_remove, &set);
        }
        Some(HttpResponse::ErrorResponse(_)) | None => assert_ne!(code, 0),
    }
});
