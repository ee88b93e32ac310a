//! The ext_proc edge: one gRPC stream's messages, decoded from the input as a sequence of
//! length-delimited `ProcessingRequest`s (as Envoy sends them, minus gRPC framing), answered by
//! one session in order: request headers, bodies, response headers and bodies, trailers.
#![no_main]

use envoy_types::pb::envoy::service::ext_proc::v3::processing_request::Request as In;
use envoy_types::pb::envoy::service::ext_proc::v3::processing_response::Response as Out;
use envoy_types::pb::envoy::service::ext_proc::v3::ProcessingRequest;
use keygate::envoy::ext_proc::ProcService;
use keygate_fuzz::{assert_no_secret, check_allow_mutation, check_denial_body, fixture};
use libfuzzer_sys::fuzz_target;
use prost::Message;

const MAX_MESSAGES: usize = 24;

fuzz_target!(|data: &[u8]| {
    let mut input = data;
    let mut messages = Vec::new();
    while !input.is_empty() && messages.len() < MAX_MESSAGES {
        match ProcessingRequest::decode_length_delimited(&mut input) {
            Ok(m) => messages.push(m),
            Err(_) => break,
        }
    }
    if messages.is_empty() {
        return;
    }
    // KEYGATE_FUZZ_DEBUG=1 prints each answer, to see what an input does.
    let debug = std::env::var_os("KEYGATE_FUZZ_DEBUG").is_some();
    let fixture = fixture();
    let service = ProcService::new(fixture.pipeline());
    fixture.runtime.block_on(async {
        let mut session = service.session(keygate::envoy::Responses::Held);
        for message in messages {
            let names: Vec<String> = match &message.request {
                Some(In::RequestHeaders(h)) => h
                    .headers
                    .iter()
                    .flat_map(|m| &m.headers)
                    .map(|h| h.key.clone())
                    .collect(),
                _ => Vec::new(),
            };
            let response = session.respond(message).await;
            if debug {
                eprintln!("{response:?}");
            }
            match response.response {
                Some(Out::ImmediateResponse(immediate)) => {
                    let code = immediate.status.map_or(0, |s| s.code);
                    assert!((400..600).contains(&code), "denial status {code}");
                    check_denial_body(&immediate.body, data);
                    for header in immediate.headers.iter().flat_map(|h| &h.set_headers) {
                        if let Some(h) = &header.header {
                            assert_no_secret(&h.raw_value, data, "denial header");
                            assert_no_secret(h.value.as_bytes(), data, "denial header");
                        }
                    }
                }
                Some(Out::RequestHeaders(headers)) => {
                    let mutation = headers.response.and_then(|r| r.header_mutation);
                    let (removed, set) = mutation
                        .map(|m| (m.remove_headers, m.set_headers))
                        .unwrap_or_default();
                    let set: Vec<&str> = set
                        .iter()
                        .filter_map(|o| o.header.as_ref().map(|h| h.key.as_str()))
                        .collect();
                    check_allow_mutation(names.iter().map(String::as_str), &removed, &set);
                }
                Some(_) => {}
                None => panic!("a message without a response"),
            }
        }
        // The stream closes: the exchange settles inside the runtime, as in production.
        drop(session);
    });
});
