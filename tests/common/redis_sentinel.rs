//! A real Redis Sentinel group on free loopback ports: a master, one replica of it, and three
//! sentinels (`redis-server <conf> --sentinel`, the same binary Debian's redis-sentinel runs)
//! watching it as `kg` with a quorum of two. Everything is stopped when dropped.

use std::time::Duration;

use keygate::config::SentinelConfig;

use super::redis_cluster::{free_port, wait_until, Process};

/// The name the sentinels know the master group by.
pub const MASTER: &str = "kg";

pub struct RedisSentinel {
    pub master: Process,
    pub replica: Process,
    pub sentinels: Vec<Process>,
    _dir: tempfile::TempDir,
}

impl RedisSentinel {
    /// Starts the group and waits until the replica is in sync and every sentinel knows the
    /// replica and the two other sentinels (so a failover can be agreed on).
    pub fn start() -> RedisSentinel {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let master = Process::start(free_port(false), dir.path(), &[]);
        let master_port = master.port.to_string();
        let replica = Process::start(
            free_port(false),
            dir.path(),
            &["--replicaof", "127.0.0.1", &master_port],
        );
        wait_until(Duration::from_secs(10), "the replica in sync", || {
            info(&replica, "replication").contains("master_link_status:up")
        });
        let sentinels: Vec<Process> = (0..3)
            .map(|_| {
                let port = free_port(false);
                let conf = dir.path().join(format!("sentinel-{port}.conf"));
                std::fs::write(
                    &conf,
                    format!(
                        "sentinel monitor {MASTER} 127.0.0.1 {master_port} 2\n\
                         sentinel down-after-milliseconds {MASTER} 1000\n\
                         sentinel failover-timeout {MASTER} 5000\n\
                         sentinel parallel-syncs {MASTER} 1\n"
                    ),
                )
                .unwrap();
                let conf = conf.to_str().unwrap().to_string();
                Process::start(port, dir.path(), &[&conf, "--sentinel"])
            })
            .collect();
        let group = RedisSentinel {
            master,
            replica,
            sentinels,
            _dir: dir,
        };
        wait_until(
            Duration::from_secs(20),
            "every sentinel knowing the replica and the other sentinels",
            || {
                group.sentinels.iter().all(|s| {
                    let mut conn = s.connection();
                    let replicas: Vec<redis::Value> = redis::cmd("SENTINEL")
                        .arg("REPLICAS")
                        .arg(MASTER)
                        .query(&mut conn)
                        .unwrap_or_default();
                    let peers: Vec<redis::Value> = redis::cmd("SENTINEL")
                        .arg("SENTINELS")
                        .arg(MASTER)
                        .query(&mut conn)
                        .unwrap_or_default();
                    replicas.len() == 1 && peers.len() == 2
                })
            },
        );
        group
    }

    /// `limits.redis.sentinel` for this group.
    pub fn config(&self) -> SentinelConfig {
        SentinelConfig {
            urls: self.sentinels.iter().map(Process::url).collect(),
            master: MASTER.into(),
        }
    }

    /// The master's port as the first sentinel names it.
    pub fn master_port(&self) -> Option<u16> {
        let addr: Option<(String, u16)> = redis::cmd("SENTINEL")
            .arg("GET-MASTER-ADDR-BY-NAME")
            .arg(MASTER)
            .query(&mut self.sentinels[0].connection())
            .ok()
            .flatten();
        addr.map(|(_, port)| port)
    }

    /// Waits until everything the master has written reached the replica.
    pub fn replicated(&self) {
        let acked: i64 = redis::cmd("WAIT")
            .arg(1)
            .arg(5000)
            .query(&mut self.master.connection())
            .unwrap();
        assert_eq!(acked, 1, "the replica acknowledged the master's writes");
    }

    /// Kills the master (the sentinels notice after a second and promote the replica).
    pub fn kill_master(&mut self) {
        self.master.kill();
    }

    /// The sentinels name the replica as the master, and it says it is one.
    pub fn promoted(&self) -> bool {
        self.master_port() == Some(self.replica.port)
            && info(&self.replica, "replication").contains("role:master")
    }
}

/// `INFO section` of a process ("" when it does not answer).
pub fn info(process: &Process, section: &str) -> String {
    redis::Client::open(process.url())
        .and_then(|c| c.get_connection())
        .and_then(|mut conn| redis::cmd("INFO").arg(section).query(&mut conn))
        .unwrap_or_default()
}
