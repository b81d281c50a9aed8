//! `weir-bench datapath`: the orchestrator. For every service count N and
//! repetition it runs each variant on a fresh topology (never one topology
//! twice: TCP and conntrack state of a run would leak into the next) with the
//! same server, the same client, the same warm-up and the same duration, then
//! reports medians and ratios.
//!
//! Variants:
//! - `direct`: the client connects to the backend pod IPs; nothing on the node;
//! - `weir`: the client connects to VIPs; weir's eBPF program on the `wr*`
//!   veths translates (see `weir.rs`);
//! - `iptables`: the client connects to VIPs; kube-proxy's rule structure
//!   loaded with `iptables-legacy-restore` in the node netns;
//! - `nftables`: the client connects to VIPs; kube-proxy's nftables-mode
//!   table loaded with one `nft -f` transaction in the node netns (see
//!   `nftables.rs`), deleted after the run.
//!
//! The two rule-based baselines never meet: each run has its own node netns
//! (netfilter tables and the conntrack table are per netns), and before the
//! client starts [`check_isolation`] verifies that the node holds only the
//! variant's own rules.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::client::ClientReport;
use crate::netns::Topology;
use crate::plan::TargetKind;
use crate::weir::WeirCluster;
use crate::{iptables, nftables, report};

#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Variant {
    Direct,
    Weir,
    Iptables,
    /// kube-proxy's nftables mode (`table ip kube-proxy`, verdict maps).
    Nftables,
    /// weir's tc path only: the client is outside the pod cgroup parent, so
    /// weir's socket load balancing does not see its connects and every
    /// packet is translated by the tc program (what a pod gets when socket
    /// LB cannot load or does not apply).
    #[value(name = "weir-tc")]
    #[serde(rename = "weir-tc")]
    WeirTc,
    /// Diagnostic (not in the default set): weir's agent and program in
    /// place, but the client connects to the backend IPs directly. The gap to
    /// `direct` is what the program costs on packets it does not translate;
    /// the gap from here to `weir` is the translation itself.
    #[value(name = "weir-idle")]
    #[serde(rename = "weir-idle")]
    WeirIdle,
}

impl Variant {
    pub fn name(self) -> &'static str {
        match self {
            Variant::Direct => "direct",
            Variant::Weir => "weir",
            Variant::Iptables => "iptables",
            Variant::Nftables => "nftables",
            Variant::WeirIdle => "weir-idle",
            Variant::WeirTc => "weir-tc",
        }
    }

    /// Short code for namespace and pin-directory names.
    pub fn code(self) -> &'static str {
        match self {
            Variant::Direct => "dir",
            Variant::Weir => "wei",
            Variant::Iptables => "ipt",
            Variant::Nftables => "nft",
            Variant::WeirIdle => "wid",
            Variant::WeirTc => "wtc",
        }
    }
}

#[derive(Clone, Debug, clap::Args)]
pub struct DatapathArgs {
    /// Service counts (each service has 4 endpoints).
    #[arg(long, value_delimiter = ',', default_value = "1,1000,10000")]
    pub services: Vec<u32>,
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "direct,weir,weir-tc,iptables,nftables"
    )]
    pub variants: Vec<Variant>,
    /// Repetitions per (variant, N); variants are interleaved.
    #[arg(long, default_value_t = 3)]
    pub reps: u32,
    /// Warm-up seconds per run (not measured).
    #[arg(long, default_value_t = 1.0)]
    pub warmup: f64,
    /// Measured seconds per run. Keep rate × (warm-up + duration + 10 s of
    /// conntrack CLOSE timeout) well below nf_conntrack_max (262144 here).
    #[arg(long, default_value_t = 4.0)]
    pub duration: f64,
    /// Connections in flight in the load runs (enough to saturate the CPUs).
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Connections in flight in the latency runs (unloaded latency); 0 skips them.
    #[arg(long, default_value_t = 1)]
    pub latency_concurrency: usize,
    /// Measured seconds of each latency run.
    #[arg(long, default_value_t = 2.0)]
    pub latency_duration: f64,
    /// Worker threads of the client and of the server (each).
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
    /// Where to write the JSON results and the markdown table.
    #[arg(long, default_value = "target/bench")]
    pub out_dir: PathBuf,
    /// Skip the service-change -> datapath latency measurement.
    #[arg(long)]
    pub no_change_latency: bool,
    /// Service changes measured per variant and N.
    #[arg(long, default_value_t = 10)]
    pub changes: u32,
    /// Directory holding weir-control and weir-agent (default: next to weir-bench).
    #[arg(long)]
    pub weir_bin_dir: Option<PathBuf>,
}

/// What a run measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Many connections in flight: the rate the machine sustains.
    Load,
    /// Few in flight: per-transaction latency without queueing.
    Latency,
}

/// One measured run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunResult {
    pub variant: Variant,
    pub mode: Mode,
    pub services: u32,
    pub rep: u32,
    pub client: ClientReport,
    /// Seconds to install the N services (restore, or map writes).
    pub setup_seconds: f64,
    /// Node conntrack entries after the run (iptables only uses them).
    pub node_conntrack: Option<u64>,
    /// 1-minute load average when the run started: the machine is shared,
    /// and a high value means other work competed for the CPUs.
    #[serde(default)]
    pub load1: Option<f64>,
}

/// A `weir-bench` helper process we started (the server); stopped on drop,
/// so an error anywhere never leaves one running.
pub(crate) struct Helper(Child);

impl Drop for Helper {
    /// Closes its stdin (helpers exit on EOF), then kills it by its own PID
    /// if it is still there.
    fn drop(&mut self) {
        drop(self.0.stdin.take());
        for _ in 0..100 {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A variant that could not be measured at some N, and why.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Failure {
    pub variant: Variant,
    pub services: u32,
    pub error: String,
}

impl Failure {
    fn new(variant: Variant, services: u32, during: &str, error: &anyhow::Error) -> Failure {
        eprintln!(
            "{} N={services}: {during} failed: {error:#}",
            variant.name()
        );
        Failure {
            variant,
            services,
            error: format!("{during} failed: {error:#}"),
        }
    }
}

/// This very weir-bench executable, for its helper processes: the kernel's
/// link to the running image, so a rebuild that replaces the file on disk
/// mid-run (a shared `target/`) cannot take the helpers away or mix versions
/// (`current_exe()` would name the replaced, or a deleted, file).
pub(crate) const SELF_EXE: &str = "/proc/self/exe";

/// Spawns `weir-bench <args>` and waits for its `ready` line.
pub(crate) fn spawn_ready(args: &[String]) -> Result<Helper> {
    let mut child = Command::new(SELF_EXE)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("cannot spawn weir-bench {}", args.join(" ")))?;
    let stdout = child.stdout.take().context("child stdout")?;
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    if line.trim() != "ready" {
        let _ = child.kill();
        let _ = child.wait();
        bail!(
            "weir-bench {} did not start (said {line:?})",
            args.join(" ")
        );
    }
    Ok(Helper(child))
}

fn run_client(
    topo: &Topology,
    kind: TargetKind,
    services: u32,
    mode: Mode,
    args: &DatapathArgs,
    cgroup: Option<&std::path::Path>,
) -> Result<ClientReport> {
    let (concurrency, duration) = match mode {
        Mode::Load => (args.concurrency, args.duration),
        Mode::Latency => (args.latency_concurrency, args.latency_duration),
    };
    let mut cmd = Command::new(SELF_EXE);
    if let Some(dir) = cgroup {
        cmd.arg("client").arg("--cgroup").arg(dir);
    } else {
        cmd.arg("client");
    }
    let out = cmd
        .args(["--netns", &topo.client, "--services", &services.to_string()])
        .args([
            "--targets",
            match kind {
                TargetKind::Vips => "vips",
                TargetKind::Backends => "backends",
            },
        ])
        .args([
            "--concurrency",
            &concurrency.to_string(),
            "--workers",
            &args.workers.to_string(),
        ])
        .args([
            "--warmup",
            &args.warmup.to_string(),
            "--duration",
            &duration.to_string(),
        ])
        .stderr(Stdio::inherit())
        .output()
        .context("cannot run the client")?;
    if !out.status.success() {
        bail!("client failed ({})", out.status);
    }
    serde_json::from_slice(&out.stdout).context("cannot parse the client's report")
}

/// Loads kube-proxy's rules for `services` into the node netns; returns the
/// restore time.
pub(crate) fn load_iptables(topo: &Topology, services: u32) -> Result<f64> {
    let input = iptables::restore_input(services);
    let started = Instant::now();
    let mut child = Command::new("ip")
        .args(["netns", "exec", &topo.node, "iptables-legacy-restore"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot run iptables-legacy-restore (apt-get install iptables)")?;
    child
        .stdin
        .take()
        .context("stdin")?
        .write_all(input.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "iptables-legacy-restore failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(started.elapsed().as_secs_f64())
}

/// Lines of `program args..` run in `netns` that start with `prefix`
/// (None when the program is missing).
fn netns_lines(netns: &str, program: &str, args: &[&str], prefix: &str) -> Option<usize> {
    let out = Command::new("ip")
        .args(["netns", "exec", netns, program])
        .args(args)
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status.success().then(|| {
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.starts_with(prefix))
            .count()
    })
}

/// Fails unless the node netns holds only `variant`'s own packet-filter
/// rules: no iptables-legacy rule under the nftables variant, no nftables
/// table under the iptables variant (and neither under the others), so one
/// baseline's hooks never tax another's packets.
pub(crate) fn check_isolation(topo: &Topology, variant: Variant) -> Result<()> {
    let legacy_rules = netns_lines(&topo.node, "iptables-legacy-save", &[], "-A ").unwrap_or(0);
    let nft_tables = netns_lines(&topo.node, "nft", &["list", "tables"], "table ").unwrap_or(0);
    let (legacy_ok, nft_ok) = match variant {
        Variant::Iptables => (true, nft_tables == 0),
        Variant::Nftables => (legacy_rules == 0, nft_tables == 1),
        _ => (legacy_rules == 0, nft_tables == 0),
    };
    if !(legacy_ok && nft_ok) {
        bail!(
            "{}: the node netns {} holds {legacy_rules} iptables-legacy rules and {nft_tables} nftables tables",
            variant.name(),
            topo.node
        );
    }
    Ok(())
}

fn one_run(
    variant: Variant,
    mode: Mode,
    services: u32,
    rep: u32,
    args: &DatapathArgs,
    weir: Option<&WeirCluster>,
) -> Result<RunResult> {
    let m = match mode {
        Mode::Load => "",
        Mode::Latency => "l",
    };
    let tag = format!("{}{services}r{rep}{m}", variant.code());
    let load1 = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().and_then(|v| v.parse().ok()));
    let topo = Topology::create(&tag)?;
    let lifetime = (args.warmup + args.duration + 300.0).to_string();
    let server = spawn_ready(&[
        "serve".into(),
        "--netns".into(),
        topo.server.clone(),
        "--workers".into(),
        args.workers.to_string(),
        "--lifetime".into(),
        lifetime.clone(),
    ])?;
    let mut agent_guard = None;
    // Declared after `topo`, so dropped (table deleted) before the netns goes.
    let mut nft_table = None;
    let (kind, setup_seconds) = match variant {
        Variant::Direct => (TargetKind::Backends, 0.0),
        Variant::Iptables => (TargetKind::Vips, load_iptables(&topo, services)?),
        Variant::Nftables => {
            let (table, seconds) = nftables::Table::load(&topo.node, &nftables::ruleset(services))?;
            nft_table = Some(table);
            (TargetKind::Vips, seconds)
        }
        Variant::Weir | Variant::WeirTc | Variant::WeirIdle => {
            let cluster = weir.context("the weir variants need the weir cluster")?;
            let (agent, seconds) = cluster.start_agent(&topo, &tag)?;
            agent_guard = Some(agent);
            let kind = if variant != Variant::WeirIdle {
                TargetKind::Vips
            } else {
                TargetKind::Backends
            };
            (kind, seconds)
        }
    };
    check_isolation(&topo, variant)?;
    // The weir variant's client runs like a pod: inside the agent's pod
    // cgroup parent, where weir's socket load balancing is attached.
    let cgroup = (variant == Variant::Weir).then(|| crate::weir::client_cgroup(&tag));
    let client = run_client(&topo, kind, services, mode, args, cgroup.as_deref());
    if let Some(dir) = &cgroup {
        // Empty again once the client exited.
        let _ = std::fs::remove_dir(dir);
    }
    let node_conntrack = topo.node_conntrack_count();
    drop(agent_guard);
    drop(nft_table);
    drop(server);
    drop(topo);
    let client = client?;
    eprintln!(
        "{:>8} {mode:?} N={services:<5} rep={rep}: {:>8.0} conn/s  p50 {:>5} µs  p99 {:>6} µs  cpu {:>3.0}% (user {:>3.0}%)  errors {} timeouts {}  setup {:.2}s  conntrack {:?}  load {:?}",
        variant.name(),
        client.per_second,
        client.p50_us,
        client.p99_us,
        client.cpu_busy * 100.0,
        client.cpu_user * 100.0,
        client.errors,
        client.timeouts,
        setup_seconds,
        node_conntrack,
        load1
    );
    Ok(RunResult {
        variant,
        mode,
        services,
        rep,
        client,
        setup_seconds,
        node_conntrack,
        load1,
    })
}

pub fn run(args: DatapathArgs) -> Result<()> {
    crate::netns::remove_leftovers()?;
    for &n in &args.services {
        anyhow::ensure!(
            (1..=crate::plan::MAX_SERVICES).contains(&n),
            "--services {n}: 1..={}",
            crate::plan::MAX_SERVICES
        );
    }
    let started = Instant::now();
    let mut services_list = args.services.clone();
    services_list.sort_unstable();
    services_list.dedup();
    let mut weir = if args
        .variants
        .iter()
        .any(|v| matches!(v, Variant::Weir | Variant::WeirTc | Variant::WeirIdle))
    {
        let bin_dir = crate::weir::bin_dir(args.weir_bin_dir.as_deref())?;
        Some(WeirCluster::start(&bin_dir)?)
    } else {
        None
    };
    let mut results = Vec::new();
    let mut changes = Vec::new();
    // A variant that fails at some N (e.g. weir's control plane cannot serve
    // N services) is recorded and skipped for that N; the others go on.
    let mut failures: Vec<Failure> = Vec::new();
    for &services in &services_list {
        let failed = |failures: &[Failure], v: Variant| {
            failures
                .iter()
                .any(|f| f.variant == v && f.services == services)
        };
        if let Some(cluster) = weir.as_mut() {
            match cluster.ensure_services(services) {
                Ok(seconds) => eprintln!(
                    "weir-control: {services} services with their EndpointSlices ({seconds:.1} s of API writes)"
                ),
                Err(e) => failures.push(Failure::new(
                    Variant::Weir,
                    services,
                    "creating the Services",
                    &e,
                )),
            }
        }
        for rep in 0..args.reps {
            for &variant in &args.variants {
                let mut modes = vec![Mode::Load];
                if args.latency_concurrency > 0 {
                    modes.push(Mode::Latency);
                }
                for mode in modes {
                    if failed(&failures, variant) {
                        continue;
                    }
                    match one_run(variant, mode, services, rep, &args, weir.as_ref()) {
                        Ok(r) => results.push(r),
                        Err(e) => {
                            failures.push(Failure::new(variant, services, "a benchmark run", &e))
                        }
                    }
                }
            }
        }
        if !args.no_change_latency {
            for &variant in args
                .variants
                .iter()
                .filter(|v| matches!(v, Variant::Weir | Variant::Iptables | Variant::Nftables))
            {
                if failed(&failures, variant) {
                    continue;
                }
                match crate::change::measure(variant, services, args.changes, weir.as_mut()) {
                    Ok(c) => changes.push(c),
                    Err(e) => failures.push(Failure::new(
                        variant,
                        services,
                        "the service change test",
                        &e,
                    )),
                }
            }
        }
    }
    drop(weir);
    let table = report::markdown(
        &results,
        &changes,
        &failures,
        &report::Context::gather(&args, started.elapsed()),
    );
    std::fs::create_dir_all(&args.out_dir)?;
    let json = args.out_dir.join("datapath.json");
    std::fs::write(
        &json,
        serde_json::to_vec_pretty(&(&results, &changes, &failures))?,
    )?;
    let md = args.out_dir.join("datapath.md");
    std::fs::write(&md, &table)?;
    println!("{table}");
    eprintln!("results: {} and {}", json.display(), md.display());
    Ok(())
}
