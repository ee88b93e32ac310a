//! The `keygate` binary: parses the command line and runs one command.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use keygate::cli;
use keygate::telemetry::{self, LogFormat};

/// Envoy ext_proc / ext_authz sidecar that guards AI provider API keys.
#[derive(Debug, Parser)]
#[command(name = "keygate", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve ext_proc and ext_authz on the gRPC listener, plus the admin HTTP listener.
    Serve {
        /// Configuration file (YAML).
        #[arg(short, long, env = "KEYGATE_CONFIG")]
        config: PathBuf,
        /// Log output format.
        #[arg(long, env = "KEYGATE_LOG_FORMAT", value_enum, default_value = "text")]
        log_format: LogFormat,
    },
    /// Validate a configuration file and every credential it references; exits non-zero on error.
    Check {
        #[arg(short, long, env = "KEYGATE_CONFIG")]
        config: PathBuf,
    },
    /// Create and hash consumer keys.
    Keys {
        #[command(subcommand)]
        command: cli::keys::KeysCommand,
    },
    /// Revoke a consumer or one key on every target keygate (admin API).
    Revoke {
        #[command(subcommand)]
        what: cli::admin::RevokeCommand,
        #[command(flatten)]
        target: cli::admin::Target,
    },
    /// Suspend a consumer (403 until resumed).
    Suspend {
        name: String,
        #[arg(long, default_value = "")]
        reason: String,
        #[command(flatten)]
        target: cli::admin::Target,
    },
    /// Resume a suspended consumer.
    Resume {
        name: String,
        #[arg(long, default_value = "")]
        reason: String,
        #[command(flatten)]
        target: cli::admin::Target,
    },
    /// Inspect consumers on the target keygates.
    Consumers {
        #[command(subcommand)]
        what: cli::admin::ConsumersCommand,
        #[command(flatten)]
        target: cli::admin::Target,
    },
    /// Lift a detector's throttle from a consumer (on every target keygate).
    Unthrottle {
        name: String,
        #[arg(long, default_value = "")]
        reason: String,
        #[command(flatten)]
        target: cli::admin::Target,
    },
    /// Show the operator and role the admin API sees you as.
    Whoami {
        #[command(flatten)]
        target: cli::admin::Target,
    },
    /// Report leaked keys found by a secret scanner (gitleaks) so keygate revokes them.
    Leaks {
        #[command(subcommand)]
        command: cli::leaks::LeaksCommand,
    },
    /// Operator credentials for the admin API.
    Admin {
        #[command(subcommand)]
        command: cli::operator_token::AdminCommand,
    },
    /// Rotate provider credentials: mint, health-check, store in Vault, switch every replica,
    /// revoke the old key after the grace period; roll back on any failure.
    Rotate {
        #[command(flatten)]
        args: cli::rotate::RotateArgs,
        #[command(flatten)]
        target: cli::admin::Target,
    },
    /// The provider credential inventory, and emergency revocation.
    Credentials {
        #[command(subcommand)]
        what: cli::credentials::CredentialsCommand,
        #[command(flatten)]
        target: cli::admin::Target,
    },
}

fn main() -> ExitCode {
    let args = Cli::parse();
    match args.command {
        Command::Serve { config, log_format } => {
            telemetry::init_tracing(log_format);
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => return fail(&anyhow::anyhow!("cannot start the runtime: {e}")),
            };
            match runtime.block_on(keygate::server::serve(&config)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = %e, "keygate stopped");
                    fail(&anyhow::Error::new(e))
                }
            }
        }
        Command::Check { config } => report(cli::check::run(&config)),
        Command::Keys { command } => report(cli::keys::run(command)),
        Command::Revoke { what, target } => {
            report(cli::admin::run(&target, cli::admin::Command::Revoke(what)))
        }
        Command::Suspend {
            name,
            reason,
            target,
        } => report(cli::admin::run(
            &target,
            cli::admin::Command::Suspend { name, reason },
        )),
        Command::Resume {
            name,
            reason,
            target,
        } => report(cli::admin::run(
            &target,
            cli::admin::Command::Resume { name, reason },
        )),
        Command::Consumers { what, target } => report(cli::admin::run(
            &target,
            cli::admin::Command::Consumers(what),
        )),
        Command::Unthrottle {
            name,
            reason,
            target,
        } => report(cli::admin::run(
            &target,
            cli::admin::Command::Unthrottle { name, reason },
        )),
        Command::Whoami { target } => report(cli::admin::run(&target, cli::admin::Command::WhoAmI)),
        Command::Leaks {
            command: cli::leaks::LeaksCommand::Report(args),
        } => report(cli::leaks::report(&args)),
        Command::Admin { command } => report(cli::operator_token::run(command)),
        Command::Rotate { args, target } => {
            init_cli_logs();
            report(cli::rotate::run(args, &target))
        }
        Command::Credentials { what, target } => {
            init_cli_logs();
            report(cli::credentials::run(what, &target))
        }
    }
}

/// The rotation commands print their steps on stdout; warnings (and, with KEYGATE_LOG, more)
/// go to stderr, through the same filters as `serve` (which keep HTTP bodies out).
fn init_cli_logs() {
    telemetry::init_cli_tracing();
}

fn report(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

fn fail(e: &anyhow::Error) -> ExitCode {
    eprintln!("keygate: error: {e:#}");
    ExitCode::FAILURE
}
