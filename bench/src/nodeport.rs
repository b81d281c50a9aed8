//! `weir-bench nodeport`: NodePort 64-byte UDP packets per second forwarded
//! by one core of the node to a backend on another node, weir against
//! kube-proxy's iptables and nftables rules and plain routing.
//!
//! - Topology ([`crate::nodeport_topo`]): the node's `eth0` on an L2 segment
//!   with the traffic generator and the backend node; every forwarded packet
//!   leaves through `eth0` again towards the backend node, the path weir's XDP
//!   program forwards with `XDP_TX`.
//! - Sender ([`crate::nodeport_gen`]): an XDP program run by
//!   `BPF_PROG_TEST_RUN` with live frames on the sender CPU, varying the UDP
//!   source port over `--flows` flows; forwarded frames are counted (and
//!   dropped) where they arrive by a sink XDP program, the same in every
//!   variant.
//! - One core ([`crate::nodeport_cpu`]): the node's receive processing runs
//!   in its `eth0`'s threaded-NAPI kthread pinned to `--forward-cpu`; the
//!   generator, the sink's NAPI thread and every process of the benchmark
//!   (agent, control plane, containerd) run on `--sender-cpu`.
//!
//! Variants: `direct` (the generator targets a backend address: routing
//! only), `weir-native` / `weir-generic` (a real weir-agent from a real
//! weir-control with `--xdp-mode native|generic`: the XDP program on the
//! node's `eth0` DNATs + SNATs and transmits), `iptables` (kube-proxy's
//! NodePort chains via `iptables-legacy-restore`, see `iptables.rs`),
//! `nftables` (kube-proxy's nftables mode, see `nftables.rs`). Each
//! repetition runs every variant once, on a fresh topology, in turn.

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::nodeport_cpu::{self, CpuTimes};
use crate::nodeport_gen::{FrameSpec, GenCounters, TxGen, udp_frame};
use crate::nodeport_topo::{self, IFACE, NODE_MAC, NpTopology, OfferCounters, SEGMENT_MAC};
use crate::plan;
use crate::weir::{Agent, WeirCluster};

/// Source port of flow 0.
const SPORT_BASE: u16 = 10_000;

#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "kebab-case")]
pub enum NpVariant {
    Direct,
    WeirNative,
    WeirGeneric,
    Iptables,
    Nftables,
}

impl NpVariant {
    pub fn name(self) -> &'static str {
        match self {
            NpVariant::Direct => "direct",
            NpVariant::WeirNative => "weir-native",
            NpVariant::WeirGeneric => "weir-generic",
            NpVariant::Iptables => "iptables",
            NpVariant::Nftables => "nftables",
        }
    }
    fn code(self) -> &'static str {
        match self {
            NpVariant::Direct => "di",
            NpVariant::WeirNative => "wn",
            NpVariant::WeirGeneric => "wg",
            NpVariant::Iptables => "ip",
            NpVariant::Nftables => "nf",
        }
    }
    /// The agent's `--xdp-mode` for the weir variants.
    fn xdp_mode(self) -> Option<&'static str> {
        match self {
            NpVariant::WeirNative => Some("native"),
            NpVariant::WeirGeneric => Some("generic"),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, clap::Args)]
pub struct NodePortArgs {
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "direct,weir-native,weir-generic,iptables,nftables"
    )]
    pub variants: Vec<NpVariant>,
    /// ClusterIP services present besides the NodePort one (each with 4
    /// endpoints), as on a node of a real cluster.
    #[arg(long, default_value_t = 1000)]
    pub services: u32,
    /// Repetitions per variant (interleaved).
    #[arg(long, default_value_t = 3)]
    pub reps: u32,
    #[arg(long, default_value_t = 2.0)]
    pub warmup: f64,
    #[arg(long, default_value_t = 5.0)]
    pub duration: f64,
    /// UDP flows (source ports) the generator cycles through.
    #[arg(long, default_value_t = 256)]
    pub flows: u32,
    /// The CPU that forwards (the node's `eth0` NAPI thread).
    #[arg(long, default_value_t = 1)]
    pub forward_cpu: usize,
    /// The CPU of the generator, the sink and every benchmark process.
    #[arg(long, default_value_t = 0)]
    pub sender_cpu: usize,
    /// Seconds to wait for the first forwarded packet of a run (weir: the
    /// agent's start and first sync).
    #[arg(long, default_value_t = 60.0)]
    pub ready_timeout: f64,
    #[arg(long, default_value = "target/bench")]
    pub out_dir: PathBuf,
    /// Directory holding weir-control and weir-agent (default: next to weir-bench).
    #[arg(long)]
    pub weir_bin_dir: Option<PathBuf>,
    /// After each run, print both veths' counters (`ip -s link`,
    /// `ethtool -S`) to stderr, to see where packets were dropped.
    #[arg(long)]
    pub diagnose: bool,
}

/// One measured run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NpRun {
    pub variant: NpVariant,
    pub rep: u32,
    /// Packets per second arriving at the backend node (the sink).
    pub forwarded_pps: f64,
    /// Frames per second the generator produced.
    pub generated_pps: f64,
    /// Of those, per second: accepted into the node's receive ring, and
    /// refused because the ring was full (the node did not keep up).
    pub offered_pps: f64,
    pub refused_pps: f64,
    /// Busy share of the forward CPU over the window, its system + softirq
    /// part, and the node NAPI thread's share.
    pub forward_cpu_busy: f64,
    pub forward_cpu_kernel: f64,
    pub napi_thread: f64,
    /// weir variants: the share of packets weir's XDP program transmitted
    /// itself (`XDP_TX`) rather than passing them to the stack.
    pub xdp_tx_share: Option<f64>,
    pub load1: Option<f64>,
}

fn load1() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().and_then(|v| v.parse().ok()))
}

fn load_iptables_nodeport(netns: &str, services: u32) -> Result<()> {
    use std::io::Write;
    let input = crate::iptables::restore_input_nodeport(services);
    let mut child = Command::new("ip")
        .args(["netns", "exec", netns, "iptables-legacy-restore"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .context("cannot run iptables-legacy-restore (apt-get install iptables)")?;
    child
        .stdin
        .take()
        .context("stdin")?
        .write_all(input.as_bytes())?;
    anyhow::ensure!(child.wait()?.success(), "iptables-legacy-restore failed");
    Ok(())
}

/// Where a variant's generator sends (pure): a backend address for
/// `direct`, the NodePort on the node's address otherwise.
pub fn target(variant: NpVariant) -> (std::net::Ipv4Addr, u16) {
    match variant {
        NpVariant::Direct => (plan::backend(plan::NODEPORT_SERVICE, 0), plan::TARGET_PORT),
        _ => (plan::NODE_IP, plan::NODE_PORT),
    }
}

/// The generator's frame for `variant` (pure).
pub fn frame_for(variant: NpVariant) -> Vec<u8> {
    let (daddr, dport) = target(variant);
    udp_frame(&FrameSpec {
        dst_mac: NODE_MAC,
        src_mac: SEGMENT_MAC,
        saddr: plan::EXTERNAL_ADDR,
        daddr,
        sport: SPORT_BASE,
        dport,
    })
}

/// The XDP attach mode `ip -j link show` reports for a link (pure):
/// 1 native, 2 generic, 3 offloaded; `None` without a program.
pub fn xdp_attach_mode(ip_link_json: &str) -> Option<u64> {
    let v: serde_json::Value = serde_json::from_str(ip_link_json).ok()?;
    v.pointer("/0/xdp/mode")?.as_u64()
}

/// Waits until weir's agent attached its XDP program to the node's `eth0`
/// in the expected mode.
fn wait_xdp(netns: &str, want: u64, agent_log: &str, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let out = Command::new("ip")
            .args(["-n", netns, "-j", "link", "show", "dev", IFACE])
            .output()?;
        let mode = xdp_attach_mode(&String::from_utf8_lossy(&out.stdout));
        match mode {
            Some(m) if m == want => return Ok(()),
            Some(m) => {
                bail!("weir's XDP program is attached in mode {m}, not {want} (see {agent_log})")
            }
            None if Instant::now() > deadline => {
                bail!("weir-agent attached no XDP program to {IFACE} (see {agent_log})")
            }
            None => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// weir's XDP verdict counters (tx, pass, drop), from the agent's pin.
fn weir_xdp_counters(agent: &Agent) -> Result<[u64; 3]> {
    use aya::maps::{Map, MapData, PerCpuArray};
    use weir_ebpf_common::xdp::{XDP_STATS_MAP, verdict};
    let data = MapData::from_pin(agent.bpffs().join(XDP_STATS_MAP))?;
    let map: PerCpuArray<MapData, u64> = PerCpuArray::try_from(Map::PerCpuArray(data))?;
    let sum = |i: u32| -> Result<u64> { Ok(map.get(&i, 0)?.iter().sum()) };
    Ok([sum(verdict::TX)?, sum(verdict::PASS)?, sum(verdict::DROP)?])
}

/// Everything read at the start and the end of the measured window.
struct Snapshot {
    at: Instant,
    frames: GenCounters,
    offer: OfferCounters,
    cpu: CpuTimes,
    napi_ticks: u64,
    xdp: Option<[u64; 3]>,
}

fn snapshot(
    txgen: &TxGen,
    topo: &NpTopology,
    forward_cpu: usize,
    napi: i32,
    agent: Option<&Agent>,
) -> Result<Snapshot> {
    Ok(Snapshot {
        frames: txgen.counters()?,
        offer: nodeport_topo::offer_counters(&topo.segment)?,
        cpu: nodeport_cpu::cpu_times(forward_cpu)?,
        napi_ticks: nodeport_cpu::task_ticks(napi)?,
        xdp: agent.map(weir_xdp_counters).transpose()?,
        at: Instant::now(),
    })
}

/// The run's numbers from two snapshots (pure).
fn rates(variant: NpVariant, rep: u32, a: &Snapshot, b: &Snapshot, load1: Option<f64>) -> NpRun {
    let secs = b.at.duration_since(a.at).as_secs_f64().max(1e-9);
    let per_s = |x: u64, y: u64| y.saturating_sub(x) as f64 / secs;
    let total = b.cpu.total.saturating_sub(a.cpu.total).max(1) as f64;
    let xdp_tx_share = match (a.xdp, b.xdp) {
        (Some(x), Some(y)) => {
            let d: Vec<u64> = (0..3).map(|i| y[i].saturating_sub(x[i])).collect();
            let all: u64 = d.iter().sum();
            (all > 0).then(|| d[0] as f64 / all as f64)
        }
        _ => None,
    };
    NpRun {
        variant,
        rep,
        forwarded_pps: per_s(a.frames.sunk, b.frames.sunk),
        generated_pps: per_s(a.frames.generated, b.frames.generated),
        offered_pps: per_s(a.offer.accepted, b.offer.accepted),
        refused_pps: per_s(a.offer.refused, b.offer.refused),
        forward_cpu_busy: 1.0 - b.cpu.idle.saturating_sub(a.cpu.idle) as f64 / total,
        forward_cpu_kernel: b.cpu.kernel.saturating_sub(a.cpu.kernel) as f64 / total,
        napi_thread: b.napi_ticks.saturating_sub(a.napi_ticks) as f64 / total,
        xdp_tx_share,
        load1,
    }
}

fn one_run(
    variant: NpVariant,
    rep: u32,
    args: &NodePortArgs,
    txgen: &mut TxGen,
    weir: Option<&WeirCluster>,
) -> Result<NpRun> {
    let tag = format!("{}{rep}", variant.code());
    let load1 = load1();
    let frame = frame_for(variant);
    txgen.set_template(&frame)?;
    let topo = NpTopology::create(&tag)?;
    let sink = txgen.attach_sink(&topo.segment)?;
    let result = measure(variant, rep, &tag, &topo, &frame, args, txgen, weir, load1);
    txgen.detach_sink(sink);
    drop(topo);
    let run = result?;
    eprintln!(
        "nodeport {:>12} rep={rep}: forwarded {:>9.0} pps  generated {:>9.0}  offered {:>9.0}  refused {:>9.0}  cpu{} busy {:>3.0}% (napi thread {:>3.0}%)  xdp_tx {:?}  load {:?}",
        variant.name(),
        run.forwarded_pps,
        run.generated_pps,
        run.offered_pps,
        run.refused_pps,
        args.forward_cpu,
        run.forward_cpu_busy * 100.0,
        run.napi_thread * 100.0,
        run.xdp_tx_share,
        load1
    );
    Ok(run)
}

#[allow(clippy::too_many_arguments)]
fn measure(
    variant: NpVariant,
    rep: u32,
    tag: &str,
    topo: &NpTopology,
    frame: &[u8],
    args: &NodePortArgs,
    txgen: &TxGen,
    weir: Option<&WeirCluster>,
    load1: Option<f64>,
) -> Result<NpRun> {
    let mut agent = None;
    let mut _nft = None;
    match variant {
        NpVariant::Direct => {}
        NpVariant::Iptables => load_iptables_nodeport(&topo.node, args.services)?,
        NpVariant::Nftables => {
            let input = crate::nftables::ruleset_nodeport(args.services);
            _nft = Some(crate::nftables::Table::load(&topo.node, &input)?.0);
        }
        NpVariant::WeirNative | NpVariant::WeirGeneric => {
            let cluster = weir.context("the weir variants need the weir cluster")?;
            let mode = variant.xdp_mode().unwrap_or("auto");
            let started = cluster.spawn_agent(&topo.node, tag, &["--xdp-mode", mode])?;
            let log = format!("/tmp/wbench-weir/agent-{tag}*.log");
            let want = if mode == "native" { 1 } else { 2 };
            wait_xdp(
                &topo.node,
                want,
                &log,
                Duration::from_secs_f64(args.ready_timeout),
            )?;
            agent = Some(started);
        }
    }
    let (daddr, dport) = target(variant);
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let generator = s.spawn(|| txgen.generate(&topo.segment, args.sender_cpu, frame, &stop));
        let measured = (|| {
            // First forwarded packet: the variant is in place (weir: the
            // agent synced the NodePort service into its maps).
            let deadline = Instant::now() + Duration::from_secs_f64(args.ready_timeout);
            let first = txgen.counters()?.sunk;
            while txgen.counters()?.sunk == first {
                if generator.is_finished() {
                    bail!("the generator stopped");
                }
                if Instant::now() > deadline {
                    bail!(
                        "{} forwarded nothing to {daddr}:{dport} within {} s",
                        variant.name(),
                        args.ready_timeout
                    );
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let napi = nodeport_cpu::thread_napi(&topo.node, IFACE, args.forward_cpu)?;
            nodeport_cpu::thread_napi(&topo.segment, IFACE, args.sender_cpu)?;
            std::thread::sleep(Duration::from_secs_f64(args.warmup));
            let a = snapshot(txgen, topo, args.forward_cpu, napi, agent.as_ref())?;
            std::thread::sleep(Duration::from_secs_f64(args.duration));
            let b = snapshot(txgen, topo, args.forward_cpu, napi, agent.as_ref())?;
            anyhow::ensure!(!generator.is_finished(), "the generator stopped early");
            if args.diagnose {
                for ns in [&topo.node, &topo.segment] {
                    for argv in [
                        &["ip", "-s", "link", "show", IFACE][..],
                        &["ethtool", "-S", IFACE],
                        &["nstat", "-as"],
                    ] {
                        let out =
                            nodeport_topo::in_netns(ns, argv).unwrap_or_else(|e| format!("{e:#}"));
                        eprintln!("--- {ns}: {}\n{out}", argv.join(" "));
                    }
                }
            }
            Ok(rates(variant, rep, &a, &b, load1))
        })();
        stop.store(true, Ordering::Relaxed);
        let generated = generator
            .join()
            .map_err(|_| anyhow::anyhow!("the generator panicked"))?;
        generated.context("the generator failed")?;
        measured
    })
}

/// Per variant: medians of every column, min and max forwarded, runs.
#[derive(Clone, Debug)]
pub struct Summary {
    pub variant: NpVariant,
    pub forwarded: f64,
    pub forwarded_min: f64,
    pub forwarded_max: f64,
    pub generated: f64,
    pub offered: f64,
    pub refused: f64,
    pub busy: f64,
    pub kernel: f64,
    pub napi: f64,
    pub xdp_tx: Option<f64>,
    pub runs: usize,
}

pub fn summarize(runs: &[NpRun]) -> Vec<Summary> {
    let mut variants: Vec<NpVariant> = runs.iter().map(|r| r.variant).collect();
    variants.sort();
    variants.dedup();
    variants
        .into_iter()
        .map(|v| {
            let mine: Vec<&NpRun> = runs.iter().filter(|r| r.variant == v).collect();
            let of = |f: fn(&NpRun) -> f64| {
                let xs: Vec<f64> = mine.iter().map(|r| f(r)).collect();
                crate::stats::median(&xs).unwrap_or(f64::NAN)
            };
            let fw: Vec<f64> = mine.iter().map(|r| r.forwarded_pps).collect();
            let xdp: Vec<f64> = mine.iter().filter_map(|r| r.xdp_tx_share).collect();
            Summary {
                variant: v,
                forwarded: of(|r| r.forwarded_pps),
                forwarded_min: fw.iter().copied().fold(f64::INFINITY, f64::min),
                forwarded_max: fw.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                generated: of(|r| r.generated_pps),
                offered: of(|r| r.offered_pps),
                refused: of(|r| r.refused_pps),
                busy: of(|r| r.forward_cpu_busy),
                kernel: of(|r| r.forward_cpu_kernel),
                napi: of(|r| r.napi_thread),
                xdp_tx: crate::stats::median(&xdp),
                runs: mine.len(),
            }
        })
        .collect()
}

/// Whether a variant's runs show the forwarder, not the sender, as the
/// bottleneck: the generator produced at least 1.5× what arrived and the
/// node's receive ring refused frames (pure).
pub fn forwarder_bound(s: &Summary) -> bool {
    s.generated >= 1.5 * s.forwarded && s.refused > 0.1 * s.generated
}

fn pps(x: f64) -> String {
    if !x.is_finite() {
        return "-".into();
    }
    let n = x.round() as u64;
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The markdown report: per-variant medians with ratios, the goal per weir
/// mode, whether the forwarder was the bottleneck, and every run (pure).
pub fn markdown(runs: &[NpRun], failures: &[String], header: &str) -> String {
    use std::fmt::Write;
    let rows = summarize(runs);
    let rate = |v: NpVariant| {
        rows.iter()
            .find(|r| r.variant == v)
            .map(|r| r.forwarded)
            .filter(|x| *x > 0.0)
    };
    let ratio = |x: f64, base: Option<f64>| match base {
        Some(b) => format!("{:.2}×", x / b),
        None => "-".into(),
    };
    let mut out = String::new();
    let _ = writeln!(out, "{header}\n");
    out.push_str("| variant | forwarded pps (median) | min–max | vs direct | vs iptables | vs nftables | generated pps | offered to node pps | refused, ring full pps | forward CPU busy (sys+softirq) | node NAPI thread | pps per NAPI-thread CPU-second | weir XDP_TX share | runs |\n");
    out.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for r in &rows {
        let _ = writeln!(
            out,
            "| {} | {} | {}–{} | {} | {} | {} | {} | {} | {} | {:.0}% ({:.0}%) | {:.0}% | {} | {} | {} |",
            r.variant.name(),
            pps(r.forwarded),
            pps(r.forwarded_min),
            pps(r.forwarded_max),
            ratio(r.forwarded, rate(NpVariant::Direct)),
            ratio(r.forwarded, rate(NpVariant::Iptables)),
            ratio(r.forwarded, rate(NpVariant::Nftables)),
            pps(r.generated),
            pps(r.offered),
            pps(r.refused),
            r.busy * 100.0,
            r.kernel * 100.0,
            r.napi * 100.0,
            if r.napi > 0.0 {
                pps(r.forwarded / r.napi)
            } else {
                "-".into()
            },
            r.xdp_tx
                .map(|x| format!("{:.1}%", x * 100.0))
                .unwrap_or_else(|| "-".into()),
            r.runs
        );
    }
    out.push('\n');
    for weir in [NpVariant::WeirNative, NpVariant::WeirGeneric] {
        let (Some(w), Some(i)) = (rate(weir), rate(NpVariant::Iptables)) else {
            continue;
        };
        let r = w / i;
        let _ = writeln!(
            out,
            "- Goal (issue 3) NodePort pps ≥ 3× iptables, {}: {r:.2}× — {}",
            weir.name(),
            if r >= 3.0 { "**met**" } else { "**missed**" }
        );
        if let Some(n) = rate(NpVariant::Nftables) {
            let _ = writeln!(out, "- {} vs nftables: {:.2}×", weir.name(), w / n);
        }
    }
    for r in &rows {
        let _ = writeln!(
            out,
            "- {}: generated {:.1}× forwarded, ring refused {:.0}% of generated — {}",
            r.variant.name(),
            r.generated / r.forwarded.max(1.0),
            100.0 * r.refused / r.generated.max(1.0),
            if forwarder_bound(r) {
                "the forwarder was the bottleneck"
            } else {
                "**the sender may have limited this rate** (not forwarder-bound)"
            }
        );
    }
    for f in failures {
        let _ = writeln!(out, "- Not measured: {f}");
    }
    out.push_str("\n<details><summary>Every run</summary>\n\n| rep | variant | forwarded pps | generated pps | refused pps | CPU busy | NAPI thread | XDP_TX | load1 |\n|---:|---|---:|---:|---:|---:|---:|---:|---:|\n");
    for r in runs {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {:.0}% | {:.0}% | {} | {} |",
            r.rep,
            r.variant.name(),
            pps(r.forwarded_pps),
            pps(r.generated_pps),
            pps(r.refused_pps),
            r.forward_cpu_busy * 100.0,
            r.napi_thread * 100.0,
            r.xdp_tx_share
                .map(|x| format!("{:.1}%", x * 100.0))
                .unwrap_or_else(|| "-".into()),
            r.load1
                .map(|l| format!("{l:.1}"))
                .unwrap_or_else(|| "-".into())
        );
    }
    out.push_str("\n</details>\n");
    out
}

pub fn run(args: NodePortArgs) -> Result<()> {
    anyhow::ensure!(
        (1..plan::NODEPORT_SERVICE).contains(&args.services),
        "--services 1..{}",
        plan::NODEPORT_SERVICE
    );
    anyhow::ensure!(
        args.forward_cpu != args.sender_cpu,
        "--forward-cpu and --sender-cpu must differ (one core forwards, the other sends)"
    );
    anyhow::ensure!(args.flows >= 1, "--flows must be at least 1");
    nodeport_topo::remove_leftovers()?;
    crate::nodeport_gen::remove_leftover_pins();
    // Every process this benchmark starts (control plane, containerd,
    // agents, rule loaders) inherits the sender CPU: the forward CPU is left
    // to the node's NAPI thread (and to whatever else the machine runs).
    nodeport_cpu::pin(0, args.sender_cpu)?;
    let started = Instant::now();
    let load_start = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut txgen = TxGen::load(args.flows, SPORT_BASE, plan::TARGET_PORT)?;
    let weir = if args.variants.iter().any(|v| v.xdp_mode().is_some()) {
        let bin_dir = crate::weir::bin_dir(args.weir_bin_dir.as_deref())?;
        let mut cluster = WeirCluster::start(&bin_dir)?;
        cluster.ensure_services(args.services)?;
        cluster.ensure_nodeport_service()?;
        Some(cluster)
    } else {
        None
    };
    let mut runs = Vec::new();
    let mut failures = Vec::new();
    for rep in 0..args.reps {
        for &variant in &args.variants {
            match one_run(variant, rep, &args, &mut txgen, weir.as_ref()) {
                Ok(r) => runs.push(r),
                Err(e) => {
                    eprintln!("nodeport {} rep={rep} failed: {e:#}", variant.name());
                    failures.push(format!("{} rep {rep}: {e:#}", variant.name()));
                }
            }
        }
    }
    drop(weir);
    drop(txgen);
    let load_end = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let header = format!(
        "Command: `{}`  \nDate: {}; kernel {}; CPU: {} × {}; wall time {:.0} s  \nLoad average (1/5/15 min) at start: {}; at end: {}  \nSettings: {} repetitions (variants interleaved), {} s warm-up + {} s measured, {} flows, 60-byte frames (64 on a wire), generator + sink + benchmark processes on CPU {}, forwarding (node eth0 NAPI thread) on CPU {}, {} ClusterIP services besides the NodePort",
        std::env::args().collect::<Vec<_>>().join(" "),
        command_output("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
        command_output("uname", &["-r"]),
        cpu_count(),
        cpu_model(),
        started.elapsed().as_secs_f64(),
        load_start
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
        load_end
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
        args.reps,
        args.warmup,
        args.duration,
        args.flows,
        args.sender_cpu,
        args.forward_cpu,
        args.services
    );
    let table = markdown(&runs, &failures, &header);
    std::fs::create_dir_all(&args.out_dir)?;
    std::fs::write(
        args.out_dir.join("nodeport.json"),
        serde_json::to_vec_pretty(&(&runs, &failures))?,
    )?;
    std::fs::write(args.out_dir.join("nodeport.md"), &table)?;
    println!("{table}");
    Ok(())
}

/// CPUs of the machine (not of this process, which is pinned to one).
fn cpu_count() -> usize {
    std::fs::read_to_string("/proc/cpuinfo")
        .map(|c| c.lines().filter(|l| l.starts_with("processor")).count())
        .unwrap_or(0)
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

fn command_output(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(v: NpVariant, pps: f64, generated: f64, refused: f64) -> NpRun {
        NpRun {
            variant: v,
            rep: 0,
            forwarded_pps: pps,
            generated_pps: generated,
            offered_pps: generated - refused,
            refused_pps: refused,
            forward_cpu_busy: 1.0,
            forward_cpu_kernel: 0.9,
            napi_thread: 0.95,
            xdp_tx_share: (v == NpVariant::WeirNative).then_some(0.999),
            load1: Some(0.5),
        }
    }

    #[test]
    fn report_takes_medians_ratios_and_goals() {
        let runs = [
            run(NpVariant::Iptables, 100_000.0, 4e6, 3.8e6),
            run(NpVariant::Iptables, 300_000.0, 4e6, 3.6e6),
            run(NpVariant::Iptables, 200_000.0, 4e6, 3.7e6),
            run(NpVariant::Nftables, 250_000.0, 4e6, 3.7e6),
            run(NpVariant::WeirNative, 700_000.0, 4e6, 3.2e6),
            run(NpVariant::WeirGeneric, 400_000.0, 4e6, 3.5e6),
            run(NpVariant::Direct, 1_000_000.0, 1.2e6, 0.0),
        ];
        let md = markdown(&runs, &["nftables rep 1: boom".into()], "H");
        let cases = [
            "| iptables | 200,000 | 100,000–300,000 | 0.20× | 1.00× | 0.80× |",
            "| weir-native | 700,000 | 700,000–700,000 | 0.70× | 3.50× | 2.80× |",
            "| 95% | 736,842 | 99.9% | 1 |",
            "- Goal (issue 3) NodePort pps ≥ 3× iptables, weir-native: 3.50× — **met**",
            "- Goal (issue 3) NodePort pps ≥ 3× iptables, weir-generic: 2.00× — **missed**",
            "- weir-native vs nftables: 2.80×",
            "- iptables: generated 20.0× forwarded, ring refused 92% of generated — the forwarder was the bottleneck",
            "- direct: generated 1.2× forwarded, ring refused 0% of generated — **the sender may have limited this rate**",
            "- Not measured: nftables rep 1: boom",
            "| 0 | weir-native | 700,000 | 4,000,000 | 3,200,000 | 100% | 95% | 99.9% | 0.5 |",
        ];
        for want in cases {
            assert!(md.contains(want), "{want:?} missing from\n{md}");
        }
    }

    #[test]
    fn no_goal_line_without_both_sides() {
        let md = markdown(&[run(NpVariant::WeirNative, 1.0, 2.0, 1.0)], &[], "H");
        assert!(!md.contains("Goal"), "{md}");
    }

    #[test]
    fn pps_groups_thousands() {
        let cases = [
            (0.0, "0"),
            (999.4, "999"),
            (1000.0, "1,000"),
            (1_234_567.0, "1,234,567"),
            (f64::NAN, "-"),
        ];
        for (x, want) in cases {
            assert_eq!(pps(x), want, "{x}");
        }
    }

    #[test]
    fn frames_target_the_nodeport_or_a_backend() {
        let cases = [
            (NpVariant::Direct, [10, 245, 249, 253], 8080),
            (NpVariant::WeirNative, [172, 31, 255, 1], 30080),
            (NpVariant::Iptables, [172, 31, 255, 1], 30080),
            (NpVariant::Nftables, [172, 31, 255, 1], 30080),
        ];
        for (variant, daddr, dport) in cases {
            let f = frame_for(variant);
            assert_eq!(&f[0..6], &NODE_MAC, "{variant:?}");
            assert_eq!(&f[30..34], &daddr, "{variant:?}");
            assert_eq!(u16::from_be_bytes([f[36], f[37]]), dport, "{variant:?}");
        }
    }

    #[test]
    fn xdp_mode_from_ip_json() {
        let cases = [
            (
                r#"[{"ifname":"eth0","xdp":{"mode":1,"prog":{"id":7}}}]"#,
                Some(1),
            ),
            (
                r#"[{"ifname":"eth0","xdp":{"mode":2,"prog":{"id":7}}}]"#,
                Some(2),
            ),
            (r#"[{"ifname":"eth0"}]"#, None),
            ("garbage", None),
        ];
        for (json, want) in cases {
            assert_eq!(xdp_attach_mode(json), want, "{json}");
        }
    }

    #[test]
    fn variants_have_distinct_codes_and_modes() {
        use clap::ValueEnum;
        let codes: std::collections::BTreeSet<_> = NpVariant::value_variants()
            .iter()
            .map(|v| v.code())
            .collect();
        assert_eq!(codes.len(), NpVariant::value_variants().len());
        assert_eq!(NpVariant::WeirNative.xdp_mode(), Some("native"));
        assert_eq!(NpVariant::WeirGeneric.xdp_mode(), Some("generic"));
        assert_eq!(NpVariant::Iptables.xdp_mode(), None);
    }
}
