//! `weir-bench`: side-by-side datapath benchmarks (`cargo xtask bench datapath`).
//!
//! One binary plays every role so that every variant runs the very same code:
//! `datapath` orchestrates; `serve` and `client` are started by it inside the
//! benchmark's network namespaces; `weir-datapath` holds weir's eBPF datapath
//! in the node netns. Results go to `target/bench/datapath.{md,json}`; see
//! BENCHMARKS.md for how to read them.
#![forbid(unsafe_code)]

mod change;
mod client;
mod control;
mod datapath;
mod iptables;
mod netns;
mod nftables;
mod nodeport;
mod nodeport_cpu;
mod nodeport_gen;
mod nodeport_topo;
mod plan;
mod policy;
mod policy_report;
mod report;
mod server;
mod stats;
#[cfg(test)]
mod tests;
mod weir;

use std::time::Duration;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "weir-bench", about = "weir datapath benchmarks")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// ClusterIP short-connection rate and latency: direct vs weir vs iptables.
    Datapath(datapath::DatapathArgs),
    /// Control plane: write/list/watch latency and memory against a real etcd.
    Control(control::ControlArgs),
    /// NodePort 64-byte UDP packets/s forwarded on one core: direct vs weir vs iptables.
    Nodeport(nodeport::NodePortArgs),
    /// NetworkPolicy: connection rate with N policies vs none, change -> enforced latency.
    Policy(policy::PolicyArgs),
    /// (internal) The TCP server, inside the server netns.
    Serve {
        #[arg(long)]
        netns: String,
        #[arg(long, default_value_t = plan::TARGET_PORT)]
        port: u16,
        #[arg(long, default_value_t = 2)]
        workers: usize,
        /// Exit after this many seconds at the latest.
        #[arg(long, default_value_t = 300.0)]
        lifetime: f64,
    },
    /// (internal) The load generator, inside the client netns; prints JSON.
    Client {
        #[arg(long)]
        netns: String,
        #[arg(long, value_enum)]
        targets: plan::TargetKind,
        #[arg(long)]
        services: u32,
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        #[arg(long, default_value_t = 2)]
        workers: usize,
        #[arg(long, default_value_t = 1.0)]
        warmup: f64,
        #[arg(long, default_value_t = 4.0)]
        duration: f64,
        /// Per-transaction timeout in milliseconds.
        #[arg(long, default_value_t = 3000)]
        timeout_ms: u64,
        #[arg(long, default_value_t = 2_000_000)]
        max_connections: u64,
        /// cgroup v2 directory to move into first (created if missing), so
        /// cgroup-attached programs (weir's socket load balancing) apply,
        /// as they do to a pod.
        #[arg(long)]
        cgroup: Option<std::path::PathBuf>,
    },
}

fn secs(s: f64) -> Result<Duration> {
    Duration::try_from_secs_f64(s).map_err(|e| anyhow::anyhow!("bad duration {s}: {e}"))
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Cmd::Datapath(args) => datapath::run(args),
        Cmd::Control(args) => control::run(args),
        Cmd::Nodeport(args) => nodeport::run(args),
        Cmd::Policy(args) => policy::run(args),
        Cmd::Serve {
            netns: ns,
            port,
            workers,
            lifetime,
        } => {
            netns::enter(&ns)?;
            server::run(port, workers, secs(lifetime)?)
        }
        Cmd::Client {
            netns: ns,
            targets,
            services,
            concurrency,
            workers,
            warmup,
            duration,
            timeout_ms,
            max_connections,
            cgroup,
        } => {
            if let Some(dir) = cgroup {
                std::fs::create_dir_all(&dir)?;
                std::fs::write(dir.join("cgroup.procs"), std::process::id().to_string())
                    .map_err(|e| anyhow::anyhow!("cannot join cgroup {}: {e}", dir.display()))?;
            }
            netns::enter(&ns)?;
            let report = client::run(client::ClientConfig {
                targets: plan::targets(targets, services),
                concurrency,
                workers,
                warmup: secs(warmup)?,
                duration: secs(duration)?,
                timeout: Duration::from_millis(timeout_ms),
                max_connections,
            })?;
            println!("{}", serde_json::to_string(&report)?);
            Ok(())
        }
    }
}
