//! The replicas behind `--targets`, as a rotation's [`Fleet`]: a switch asks every replica at
//! once to re-read the credential (the admin API's RefreshCredentials with the credential
//! named, which answers only after the re-read) and retries each until it serves the
//! expected key or the time is up; an emergency revocation goes to every replica at once;
//! an outcome is reported to the first replica that takes it.

use std::time::{Duration, Instant};

use tokio::task::JoinSet;
use tonic::transport::ClientTlsConfig;

use super::admin::{connect, resolve, token, Target};
use crate::admin::pb::{RefreshRequest, RevokeCredentialRequest, RotationReport};
use crate::rotator::{Event, Expect, Fleet, FleetError};
use crate::secrets::Fingerprint;

/// How often a replica that does not serve the expected key yet is asked again.
const RETRY: Duration = Duration::from_millis(100);

#[derive(Clone)]
struct Replica {
    addr: String,
    tls: Option<ClientTlsConfig>,
}

/// Every replica `--targets` names.
pub struct AdminFleet {
    replicas: Vec<Replica>,
    token: Option<String>,
}

impl AdminFleet {
    pub fn new(target: &Target) -> anyhow::Result<Self> {
        let replicas = resolve(&target.targets)?
            .into_iter()
            .map(|r| {
                Ok(Replica {
                    tls: target.tls.config(r.name.as_deref())?,
                    addr: r.addr,
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(AdminFleet {
            replicas,
            token: token(target)?,
        })
    }

    pub fn len(&self) -> usize {
        self.replicas.len()
    }

    pub fn is_empty(&self) -> bool {
        self.replicas.is_empty()
    }

    /// Runs `each` on every replica at once; the addresses that failed, with why.
    async fn on_all<F, Fut>(&self, each: F) -> (usize, Vec<String>)
    where
        F: Fn(Replica, Option<String>) -> Fut,
        Fut: std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let mut set = JoinSet::new();
        for replica in &self.replicas {
            let addr = replica.addr.clone();
            let job = each(replica.clone(), self.token.clone());
            set.spawn(async move { (addr, job.await) });
        }
        let (mut ok, mut problems) = (0, Vec::new());
        while let Some(joined) = set.join_next().await {
            match joined {
                Ok((_, Ok(()))) => ok += 1,
                Ok((addr, Err(e))) => problems.push(format!("{addr}: {e:#}")),
                Err(e) => problems.push(format!("a replica's task failed: {e}")),
            }
        }
        problems.sort();
        (ok, problems)
    }
}

/// Whether a refresh reply (`<ref>: <fp> version <n>`, `<ref>: revoked`, …) shows `expect`.
fn shows(message: &str, credential: &str, expect: Expect) -> bool {
    let Some(state) = message
        .split("; ")
        .find_map(|line| line.strip_prefix(credential)?.strip_prefix(": "))
    else {
        return false;
    };
    match expect {
        Expect::Any => true,
        Expect::Revoked => state == "revoked",
        Expect::Serving(fp) => state.split(' ').next() == Some(fp.to_string().as_str()),
    }
}

#[async_trait::async_trait]
impl Fleet for AdminFleet {
    async fn switch(
        &self,
        credential: &str,
        expect: Expect,
        within: Duration,
    ) -> Result<usize, FleetError> {
        let deadline = Instant::now() + within;
        let credential = credential.to_string();
        let (ok, problems) = self
            .on_all(|replica, token| {
                let credential = credential.clone();
                async move {
                    let mut last = String::from("no answer");
                    loop {
                        let attempt = async {
                            let mut client =
                                connect(&replica.addr, replica.tls.clone(), token.as_deref())
                                    .await?;
                            let reply = client
                                .refresh_credentials(RefreshRequest {
                                    credentials: vec![credential.clone()],
                                })
                                .await?
                                .into_inner();
                            anyhow::Ok(reply.message)
                        };
                        match tokio::time::timeout_at(deadline.into(), attempt).await {
                            Ok(Ok(message)) if shows(&message, &credential, expect) => {
                                return Ok(())
                            }
                            Ok(Ok(message)) => last = format!("serves {message}"),
                            Ok(Err(e)) => last = format!("{e:#}"),
                            Err(_) => {}
                        }
                        if Instant::now() + RETRY >= deadline {
                            anyhow::bail!("{last}");
                        }
                        tokio::time::sleep(RETRY).await;
                    }
                }
            })
            .await;
        if problems.is_empty() {
            Ok(ok)
        } else {
            Err(FleetError::Unconfirmed {
                confirmed: ok,
                total: self.replicas.len(),
                within,
                problems,
            })
        }
    }

    async fn revoke(
        &self,
        credential: &str,
        fingerprint: Fingerprint,
        reason: &str,
    ) -> Result<usize, FleetError> {
        let request = RevokeCredentialRequest {
            credential: credential.to_string(),
            fingerprint: fingerprint.to_string(),
            reason: reason.to_string(),
        };
        let (ok, problems) = self
            .on_all(|replica, token| {
                let request = request.clone();
                async move {
                    let mut client = connect(&replica.addr, replica.tls, token.as_deref()).await?;
                    client.revoke_credential(request).await?;
                    Ok(())
                }
            })
            .await;
        match (ok, problems.is_empty()) {
            (_, true) => Ok(ok),
            (0, false) => Err(FleetError::Unreachable(problems.join("; "))),
            (_, false) => Err(FleetError::Unconfirmed {
                confirmed: ok,
                total: self.replicas.len(),
                within: Duration::from_secs(5),
                problems,
            }),
        }
    }

    async fn report(&self, event: &Event) -> Result<(), FleetError> {
        let report = RotationReport {
            event: event.event.as_str().to_string(),
            credential: event.credential.clone(),
            rotation: event.rotation.clone(),
            fingerprint: event.fingerprint.map(|f| f.to_string()).unwrap_or_default(),
            detail: event.detail.clone(),
            reason: event.reason.clone(),
        };
        let mut problems = Vec::new();
        for replica in &self.replicas {
            let sent = async {
                let mut client =
                    connect(&replica.addr, replica.tls.clone(), self.token.as_deref()).await?;
                client.report_rotation(report.clone()).await?;
                anyhow::Ok(())
            };
            match sent.await {
                Ok(()) => return Ok(()),
                Err(e) => problems.push(format!("{}: {e:#}", replica.addr)),
            }
        }
        Err(FleetError::Unreachable(problems.join("; ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refresh_reply_shows_what_a_replica_serves() {
        let fp = Fingerprint::of("sk-new");
        let message = format!("openai/production: {fp} version 4; anthropic/production: revoked");
        assert!(shows(&message, "openai/production", Expect::Serving(fp)));
        assert!(!shows(
            &message,
            "openai/production",
            Expect::Serving(Fingerprint::of("sk-old"))
        ));
        assert!(shows(&message, "anthropic/production", Expect::Revoked));
        assert!(
            !shows(&message, "openai/prod", Expect::Any),
            "a prefix is not a match"
        );
        assert!(!shows(
            "openai/production: unavailable (x)",
            "openai/production",
            Expect::Revoked
        ));
    }
}
