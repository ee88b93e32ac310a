//! keygate's benchmark harness (issue 3): shared pieces of the `e2e`, `grpc-load`, `memory`,
//! `gen-config` and `criterion-table` binaries. `bench/run` at the repository root runs them all.

pub mod consumers;
pub mod decisions;
pub mod e2e;
pub mod envoy_cfg;
pub mod http_load;
pub mod procs;
pub mod services;
pub mod stack;
pub mod stats;

/// Runs `work` until it finishes or Ctrl-C arrives; on Ctrl-C the work future is dropped, which
/// stops every child process it started, and an error is returned.
pub async fn until_ctrl_c<T>(
    work: impl std::future::Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    tokio::select! {
        r = work => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    }
}
