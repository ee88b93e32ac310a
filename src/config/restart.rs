//! Which settings a reload cannot apply: listeners are bound, and the admin plane's files and
//! the ledger opened, once at startup. A reload names each changed one in the log.

use super::Config;

/// The restart-only settings that differ between the running config and a reloaded one.
pub fn restart_only_changes(running: &Config, reloaded: &Config) -> Vec<&'static str> {
    let (a, b) = (running, reloaded);
    let redis_servers = |c: &Config| {
        c.limits
            .redis
            .as_ref()
            .map(|r| (r.url.clone(), r.cluster.clone(), r.sentinel.clone()))
    };
    let tls = |c: &Config| {
        c.admin.tls.as_ref().map(|t| {
            (
                t.cert_file.clone(),
                t.key_file.clone(),
                t.client_ca_file.clone(),
            )
        })
    };
    [
        ("listeners.grpc", a.listeners.grpc != b.listeners.grpc),
        (
            "listeners.grpc_uds",
            a.listeners.grpc_uds != b.listeners.grpc_uds,
        ),
        (
            "listeners.grpc_tls",
            a.listeners.grpc_tls != b.listeners.grpc_tls,
        ),
        ("listeners.admin", a.listeners.admin != b.listeners.admin),
        ("admin.listen", a.admin.listen != b.admin.listen),
        ("admin.token_file", a.admin.token_file != b.admin.token_file),
        ("admin.token_env", a.admin.token_env != b.admin.token_env),
        ("admin.tls", tls(a) != tls(b)),
        ("admin.state_file", a.admin.state_file != b.admin.state_file),
        ("admin.audit_log", a.admin.audit_log != b.admin.audit_log),
        ("leaks", a.leaks != b.leaks),
        ("usage.ledger", a.usage.ledger != b.usage.ledger),
        (
            "usage.source_window",
            a.usage.source_window != b.usage.source_window,
        ),
        (
            "limits.redis url, cluster or sentinel (admin broadcast)",
            redis_servers(a) != redis_servers(b),
        ),
    ]
    .into_iter()
    .filter_map(|(name, changed)| changed.then_some(name))
    .collect()
}
