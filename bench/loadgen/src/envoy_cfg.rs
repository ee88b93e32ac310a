//! Renders the shipped Envoy configs for a benchmark exactly the way
//! tests/harness/envoy_config.py does: every listener binds 127.0.0.1:listen, the admin
//! interface 127.0.0.1:admin, the `keygate` cluster's single endpoint becomes
//! 127.0.0.1:keygate (or a Unix socket, see [`Endpoint`]), and every other cluster (the providers) becomes a STATIC plain-HTTP
//! cluster at 127.0.0.1:upstream. Filters, routes, timeouts and circuit breakers are untouched.
//!
//! Two benchmark variants go further (see [`Variant`]): the baseline drops the ext_proc /
//! ext_authz HTTP filter, leaving Envoy's own routing (its client sends the `x-keygate-provider`
//! header keygate would have added); the request-headers-only variant restricts ext_proc to the
//! request-headers phase and drops the response observer.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use serde_yaml::{Mapping, Value};

const KEYGATE_CLUSTER: &str = "keygate";
const GATE_FILTERS: [&str; 3] = [
    "envoy.filters.http.ext_proc",
    "envoy.filters.http.ext_authz",
    OBSERVER_FILTER,
];
/// The shipped ext_proc config's second filter, which observes responses.
const OBSERVER_FILTER: &str = "keygate.responses";
/// Keys removed from provider clusters, as in the Python harness.
const DNS_TLS_KEYS: [&str; 7] = [
    "transport_socket",
    "transport_socket_matches",
    "dns_lookup_family",
    "dns_refresh_rate",
    "respect_dns_ttl",
    "typed_dns_resolver_config",
    "upstream_http_protocol_options",
];

#[derive(Debug, Clone)]
pub struct Ports {
    pub listen: u16,
    pub admin: u16,
    pub keygate: Endpoint,
    pub upstream: u16,
}

/// Where Envoy reaches keygate: a loopback port, or keygate's `listeners.grpc_uds` socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    Port(u16),
    Uds(PathBuf),
}

impl Endpoint {
    fn address(&self) -> Value {
        match self {
            Endpoint::Port(port) => socket_address(*port),
            Endpoint::Uds(path) => {
                let mut pipe = Mapping::new();
                pipe.insert("path".into(), path.to_string_lossy().into_owned().into());
                let mut outer = Mapping::new();
                outer.insert("pipe".into(), Value::Mapping(pipe));
                Value::Mapping(outer)
            }
        }
    }
}

/// What a benchmark configuration changes beyond the test harness's rewrite.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// The shipped config as the tests render it.
    AsShipped,
    /// The ext_proc / ext_authz filter removed: Envoy → provider only.
    Baseline,
    /// ext_proc restricted to the request-headers phase (no bodies, no response phases, no
    /// mode overrides): the shape keygate shipped before usage accounting.
    RequestHeadersOnly,
    /// [`Variant::RequestHeadersOnly`] plus the request body, BUFFERED: the two messages
    /// Envoy waits for on an LLM POST in the shipped config, without mode overrides (for the
    /// do-nothing processor, which asks for nothing).
    RequestHeadersAndBody,
    /// The shipped config with held responses (docs/envoy.md): no observer filter, and the
    /// deciding filter asks for the response phases itself, as keygate shipped before issue 16.
    HeldResponses,
}

/// Reads `src`, rewrites it for `ports` and `variant`, writes `out`.
pub fn render(src: &Path, out: &Path, ports: &Ports, variant: Variant) -> Result<()> {
    let mut config = load(src)?;
    rewrite(&mut config, ports)?;
    match variant {
        Variant::AsShipped => {}
        Variant::Baseline => strip_gate_filters(&mut config)?,
        Variant::RequestHeadersOnly => headers_only(&mut config, "NONE")?,
        Variant::RequestHeadersAndBody => headers_only(&mut config, "BUFFERED")?,
        Variant::HeldResponses => hold_responses(&mut config)?,
    }
    let name = src
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    let rendered = format!(
        "# Rendered by keygate-bench from {name} ({variant:?}); do not edit.\n{}",
        serde_yaml::to_string(&config)?
    );
    std::fs::write(out, rendered).with_context(|| format!("writing {}", out.display()))
}

fn load(src: &Path) -> Result<Value> {
    let text =
        std::fs::read_to_string(src).with_context(|| format!("reading {}", src.display()))?;
    serde_yaml::from_str(&text).with_context(|| format!("parsing {} as YAML", src.display()))
}

/// True when the shipped ext_proc config sends response phases to keygate (usage accounting).
pub fn has_response_phases(src: &Path) -> Result<bool> {
    let mut config = load(src)?;
    let mut found = false;
    for_each_http_filter(&mut config, &mut |f| {
        let outer = f.get("typed_config");
        // The observer is wrapped in an ExtensionWithMatcher (skipped on keygate's denials).
        let inner = outer
            .and_then(|t| t.get("extension_config"))
            .and_then(|e| e.get("typed_config"))
            .or(outer);
        let mode = inner
            .and_then(|t| t.get("processing_mode"))
            .and_then(|m| m.get("response_header_mode"))
            .and_then(Value::as_str);
        found |= mode == Some("SEND");
    })?;
    Ok(found)
}

fn socket_address(port: u16) -> Value {
    let mut sa = Mapping::new();
    sa.insert("address".into(), "127.0.0.1".into());
    sa.insert("port_value".into(), u64::from(port).into());
    let mut outer = Mapping::new();
    outer.insert("socket_address".into(), Value::Mapping(sa));
    Value::Mapping(outer)
}

fn map_mut<'a>(v: &'a mut Value, what: &str) -> Result<&'a mut Mapping> {
    v.as_mapping_mut()
        .ok_or_else(|| anyhow!("Envoy config: {what} is not a mapping"))
}

fn seq_mut<'a>(m: &'a mut Mapping, key: &str) -> Result<&'a mut Vec<Value>> {
    m.get_mut(key)
        .and_then(Value::as_sequence_mut)
        .ok_or_else(|| anyhow!("Envoy config: no list {key:?}"))
}

/// The in-memory transformation; the same as `rewrite()` in envoy_config.py.
pub fn rewrite(config: &mut Value, ports: &Ports) -> Result<()> {
    let root = map_mut(config, "the bootstrap")?;
    let admin = root
        .entry("admin".into())
        .or_insert_with(|| Value::Mapping(Mapping::new()));
    map_mut(admin, "admin")?.insert("address".into(), socket_address(ports.admin));
    let resources = map_mut(
        root.get_mut("static_resources")
            .ok_or_else(|| anyhow!("Envoy config: no static_resources"))?,
        "static_resources",
    )?;
    for listener in seq_mut(resources, "listeners")? {
        map_mut(listener, "a listener")?.insert("address".into(), socket_address(ports.listen));
    }
    let clusters = seq_mut(resources, "clusters")?;
    let name_of = |c: &Value| c.get("name").and_then(Value::as_str).map(str::to_string);
    if !clusters
        .iter()
        .any(|c| name_of(c).as_deref() == Some(KEYGATE_CLUSTER))
    {
        bail!("Envoy config has no '{KEYGATE_CLUSTER}' cluster");
    }
    for cluster in clusters.iter_mut() {
        let name = name_of(cluster).ok_or_else(|| anyhow!("a cluster has no name"))?;
        let c = map_mut(cluster, "a cluster")?;
        if name == KEYGATE_CLUSTER {
            set_single_endpoint(c, &name, ports.keygate.address());
        } else {
            c.insert("type".into(), "STATIC".into());
            for key in DNS_TLS_KEYS {
                c.remove(key);
            }
            set_single_endpoint(c, &name, socket_address(ports.upstream));
        }
    }
    Ok(())
}

fn set_single_endpoint(cluster: &mut Mapping, name: &str, address: Value) {
    let mut endpoint = Mapping::new();
    endpoint.insert("address".into(), address);
    let mut lb = Mapping::new();
    lb.insert("endpoint".into(), Value::Mapping(endpoint));
    let mut group = Mapping::new();
    group.insert(
        "lb_endpoints".into(),
        Value::Sequence(vec![Value::Mapping(lb)]),
    );
    let mut assignment = Mapping::new();
    assignment.insert("cluster_name".into(), name.into());
    assignment.insert(
        "endpoints".into(),
        Value::Sequence(vec![Value::Mapping(group)]),
    );
    cluster.insert("load_assignment".into(), Value::Mapping(assignment));
}

/// Calls `f` on every HTTP filter list of every HTTP connection manager.
fn for_each_filter_list(config: &mut Value, f: &mut dyn FnMut(&mut Vec<Value>)) -> Result<()> {
    let listeners = config
        .get_mut("static_resources")
        .and_then(|r| r.get_mut("listeners"))
        .and_then(Value::as_sequence_mut)
        .ok_or_else(|| anyhow!("Envoy config: no listeners"))?;
    for listener in listeners {
        let chains = listener
            .get_mut("filter_chains")
            .and_then(Value::as_sequence_mut);
        for chain in chains.into_iter().flatten() {
            let filters = chain.get_mut("filters").and_then(Value::as_sequence_mut);
            for filter in filters.into_iter().flatten() {
                let http = filter
                    .get_mut("typed_config")
                    .and_then(|t| t.get_mut("http_filters"))
                    .and_then(Value::as_sequence_mut);
                if let Some(http) = http {
                    f(http);
                }
            }
        }
    }
    Ok(())
}

fn for_each_http_filter(config: &mut Value, f: &mut dyn FnMut(&mut Value)) -> Result<()> {
    for_each_filter_list(config, &mut |list| list.iter_mut().for_each(&mut *f))
}

/// Removes the ext_proc / ext_authz filter from every HTTP connection manager.
fn strip_gate_filters(config: &mut Value) -> Result<()> {
    let mut removed = 0;
    for_each_filter_list(config, &mut |http| {
        let before = http.len();
        http.retain(|f| {
            let name = f.get("name").and_then(Value::as_str).unwrap_or_default();
            !GATE_FILTERS.contains(&name)
        });
        removed += before - http.len();
    })?;
    if removed == 0 {
        bail!("Envoy config: found no ext_proc / ext_authz filter to remove for the baseline");
    }
    Ok(())
}

/// Removes the response observer and calls `change` on the deciding ext_proc filter's
/// `typed_config`, without the `x-keygate-responses` marker (no observer reads responses
/// any more). Fails when there is no such filter.
fn without_observer(config: &mut Value, change: &mut dyn FnMut(&mut Mapping)) -> Result<()> {
    for_each_filter_list(config, &mut |http| {
        http.retain(|f| f.get("name").and_then(Value::as_str) != Some(OBSERVER_FILTER));
    })?;
    let mut changed = 0;
    for_each_http_filter(config, &mut |f| {
        if f.get("name").and_then(Value::as_str) != Some(GATE_FILTERS[0]) {
            return;
        }
        let Some(tc) = f.get_mut("typed_config").and_then(Value::as_mapping_mut) else {
            return;
        };
        if let Some(grpc) = tc.get_mut("grpc_service").and_then(Value::as_mapping_mut) {
            grpc.remove("initial_metadata");
        }
        change(tc);
        changed += 1;
    })?;
    if changed == 0 {
        bail!("Envoy config: no ext_proc filter to change");
    }
    Ok(())
}

/// Sets the ext_proc filter to request headers (and the request body in `request_body` mode)
/// only, forbids mode overrides, and removes the response observer.
fn headers_only(config: &mut Value, request_body: &str) -> Result<()> {
    let mode: Value = serde_yaml::from_str(&format!(
        "{{request_header_mode: SEND, response_header_mode: SKIP, \
         request_body_mode: {request_body}, response_body_mode: NONE, \
         request_trailer_mode: SKIP, response_trailer_mode: SKIP}}"
    ))?;
    without_observer(config, &mut |tc| {
        tc.insert("processing_mode".into(), mode.clone());
        tc.insert("allow_mode_override".into(), false.into());
        tc.remove("allowed_override_modes");
    })
}

/// Removes the response observer and lets the deciding filter hold the responses, exactly
/// as docs/envoy.md "One Envoy, several keygates" and tests/harness/envoy_config.py do.
fn hold_responses(config: &mut Value) -> Result<()> {
    let mut overrides = Vec::new();
    for (request, response) in [
        ("BUFFERED", "BUFFERED"),
        ("BUFFERED", "STREAMED"),
        ("BUFFERED", "NONE"),
        ("NONE", "BUFFERED"),
        ("NONE", "NONE"),
    ] {
        overrides.push(serde_yaml::from_str::<Value>(&format!(
            "{{response_header_mode: SEND, request_body_mode: {request}, \
             response_body_mode: {response}, request_trailer_mode: SKIP, \
             response_trailer_mode: SKIP}}"
        ))?);
    }
    without_observer(config, &mut |tc| {
        if let Some(mode) = tc
            .get_mut("processing_mode")
            .and_then(Value::as_mapping_mut)
        {
            mode.insert("response_header_mode".into(), "SEND".into());
            mode.insert("response_body_mode".into(), "STREAMED".into());
        }
        tc.insert(
            "allowed_override_modes".into(),
            Value::Sequence(overrides.clone()),
        );
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_shipped_configs() {
        let ports = Ports {
            listen: 1,
            admin: 2,
            keygate: Endpoint::Port(3),
            upstream: 4,
        };
        for name in ["ext_proc.yaml", "ext_authz.yaml"] {
            let src = crate::procs::repo_root().join("envoy").join(name);
            let dir = tempfile::tempdir().unwrap();
            let out = dir.path().join(name);
            render(&src, &out, &ports, Variant::Baseline).unwrap();
            let text = std::fs::read_to_string(&out).unwrap();
            // No gate filter (the access log may still name ext_authz's metadata namespace).
            assert!(!text.contains("name: envoy.filters.http.ext_"), "{text}");
            assert!(!text.contains("transport_socket"));
            assert!(!text.contains("LOGICAL_DNS"));
            render(&src, &out, &ports, Variant::AsShipped).unwrap();
            let text = std::fs::read_to_string(&out).unwrap();
            assert!(text.contains("name: envoy.filters.http.ext_"));
            assert!(text.contains("port_value: 3"));
        }
        let src = crate::procs::repo_root().join("envoy/ext_proc.yaml");
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("headers.yaml");
        assert!(has_response_phases(&src).unwrap());
        render(&src, &out, &ports, Variant::RequestHeadersOnly).unwrap();
        assert!(!has_response_phases(&out).unwrap());
        let text = std::fs::read_to_string(&out).unwrap();
        assert!(!text.contains(OBSERVER_FILTER) && !text.contains("initial_metadata"));
        assert!(!text.contains("BUFFERED"), "{text}");
        render(&src, &out, &ports, Variant::HeldResponses).unwrap();
        let text = std::fs::read_to_string(&out).unwrap();
        assert!(!text.contains(OBSERVER_FILTER) && !text.contains("initial_metadata"));
        assert!(has_response_phases(&out).unwrap());
        assert_eq!(
            text.matches("response_header_mode: SEND").count(),
            6,
            "{text}"
        );
        render(&src, &out, &ports, Variant::RequestHeadersAndBody).unwrap();
        let text = std::fs::read_to_string(&out).unwrap();
        assert!(
            text.contains("request_body_mode: BUFFERED") && !has_response_phases(&out).unwrap()
        );
        let uds = Ports {
            keygate: Endpoint::Uds("/tmp/kg.sock".into()),
            ..ports
        };
        render(&src, &out, &uds, Variant::AsShipped).unwrap();
        let text = std::fs::read_to_string(&out).unwrap();
        assert!(text.contains("path: /tmp/kg.sock"), "{text}");
        assert!(!text.contains("port_value: 3"), "{text}");
    }
}
