//! `weir-bench nodeport`: NodePort 64-byte UDP packets per second forwarded
//! by one core of the node, weir against kube-proxy's iptables rules and
//! plain routing.
//!
//! ```text
//!  external netns               node netns                          server netns
//!  eth0 172.31.255.2 <-veth->  eth0 172.31.255.1:30080 (NodePort)
//!  sender threads               wrsrv0 10.244.255.1      <-veth->  eth0 10.244.255.2
//!                                                                  sink: UDP :8080 on
//!                                                                  every backend address
//! ```
//!
//! The sender (threads of this process moved into the external netns,
//! pinned to `--sender-cpu`) sends 18-byte UDP payloads — 60-byte frames, 64
//! bytes on a wire with the FCS — from `--flows` sockets in turn, as fast as
//! it can. Receive packet steering (`rps_cpus`) moves the node's processing
//! of every packet arriving on its `eth0` (routing, NAT, weir's programs, the
//! forward to the server veth) to `--forward-cpu`, and the server netns's own
//! receive processing back to the sender's CPU, so one core forwards and
//! nothing else of the benchmark runs on it. Forwarded packets are counted
//! where they arrive: `rx_packets` of the server netns's `eth0` (the backend
//! side) over the measured window; there blackhole routes drop them
//! (with `--socket-sink`, a sink socket reads what it can on the sender's
//! core instead; its count is reported, not used as the rate). Sent well
//! above forwarded means the forward core was the bottleneck (the excess is
//! dropped at its backlog); the forward core's busy and softirq shares over
//! the window are reported too.
//!
//! Variants: `direct` (the sender targets a backend address: routing only),
//! `weir` (a real weir-agent with a NodePort Service of type NodePort,
//! externalTrafficPolicy Cluster: DNAT + SNAT at TCX ingress of `eth0`),
//! `iptables` (kube-proxy's NodePort chains, see `iptables.rs`).

use std::net::{SocketAddrV4, UdpSocket};
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::netns::Topology;
use crate::plan;
use crate::weir::WeirCluster;

#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum NpVariant {
    Direct,
    Weir,
    Iptables,
}

impl NpVariant {
    fn name(self) -> &'static str {
        match self {
            NpVariant::Direct => "direct",
            NpVariant::Weir => "weir",
            NpVariant::Iptables => "iptables",
        }
    }
    fn code(self) -> &'static str {
        match self {
            NpVariant::Direct => "ndi",
            NpVariant::Weir => "nwe",
            NpVariant::Iptables => "nip",
        }
    }
}

#[derive(Clone, Debug, clap::Args)]
pub struct NodePortArgs {
    #[arg(long, value_delimiter = ',', default_value = "direct,weir,iptables")]
    pub variants: Vec<NpVariant>,
    /// ClusterIP services present besides the NodePort one (each with 4
    /// endpoints), as on a node of a real cluster.
    #[arg(long, default_value_t = 1000)]
    pub services: u32,
    /// Repetitions per variant (interleaved).
    #[arg(long, default_value_t = 3)]
    pub reps: u32,
    #[arg(long, default_value_t = 1.0)]
    pub warmup: f64,
    #[arg(long, default_value_t = 5.0)]
    pub duration: f64,
    /// UDP flows (sender sockets, one source port each).
    #[arg(long, default_value_t = 64)]
    pub flows: usize,
    /// Sender threads (all pinned to the sender CPU).
    #[arg(long, default_value_t = 1)]
    pub senders: usize,
    /// The CPU that forwards (node netns receive processing). Equal to
    /// `--sender-cpu`: one core sends and forwards (no RPS).
    #[arg(long, default_value_t = 1)]
    pub forward_cpu: usize,
    /// The CPU of the sender, the sink and the server netns.
    #[arg(long, default_value_t = 0)]
    pub sender_cpu: usize,
    /// Also deliver the packets to a sink socket in the server netns (on the
    /// sender's CPU). By default the server netns drops them at routing once
    /// its `eth0` counted them, so delivery does not take CPU from the
    /// sender.
    #[arg(long)]
    pub socket_sink: bool,
    #[arg(long, default_value = "target/bench")]
    pub out_dir: PathBuf,
    /// Directory holding weir-control and weir-agent (default: next to weir-bench).
    #[arg(long)]
    pub weir_bin_dir: Option<PathBuf>,
}

/// One measured run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NpRun {
    pub variant: NpVariant,
    pub rep: u32,
    /// Packets per second arriving in the server netns (the backends).
    pub forwarded_pps: f64,
    /// Packets per second the sender handed to the kernel.
    pub sent_pps: f64,
    /// Packets per second the sink socket read (bounded by its CPU share).
    pub sink_pps: f64,
    /// Busy share of the forward CPU over the window, and its softirq part.
    pub forward_cpu_busy: f64,
    pub forward_cpu_softirq: f64,
    pub load1: Option<f64>,
}

/// Per-CPU jiffies from `/proc/stat`: (total, idle + iowait, softirq).
fn cpu_times(cpu: usize) -> Result<(u64, u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let prefix = format!("cpu{cpu} ");
    let line = stat
        .lines()
        .find(|l| l.starts_with(&prefix))
        .with_context(|| format!("no {prefix} in /proc/stat"))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    anyhow::ensure!(v.len() >= 7, "short /proc/stat line {line:?}");
    Ok((v.iter().take(8).sum(), v[3] + v[4], v[6]))
}

/// `rx_packets` of `dev` in `netns`.
fn rx_packets(netns: &str, dev: &str) -> Result<u64> {
    let out = Command::new("ip")
        .args(["-n", netns, "-s", "-j", "link", "show", "dev", dev])
        .output()
        .context("cannot run ip")?;
    anyhow::ensure!(
        out.status.success(),
        "ip -s link show {dev} in {netns} failed"
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    v.pointer("/0/stats64/rx/packets")
        .and_then(serde_json::Value::as_u64)
        .with_context(|| format!("no rx packet count for {dev} in {netns}"))
}

/// Steers receive processing of `dev` in `netns` to the CPUs of `mask`.
fn set_rps(netns: &str, dev: &str, mask: u64) -> Result<()> {
    let status = Command::new("ip")
        .args(["netns", "exec", netns, "sh", "-c"])
        .arg(format!(
            "echo {mask:x} > /sys/class/net/{dev}/queues/rx-0/rps_cpus"
        ))
        .status()?;
    anyhow::ensure!(status.success(), "cannot set rps_cpus of {dev} in {netns}");
    Ok(())
}

/// Drops what arrives in `netns` for the NodePort service's backends at
/// routing (blackhole routes in the local table, which win over the AnyIP
/// `local` route; no ICMP is sent), after the interface counted them.
/// Kernels here have no tc classifier modules, so no tc drop.
fn drop_at_ingress(netns: &str) -> Result<()> {
    for j in 0..plan::ENDPOINTS_PER_SERVICE {
        let backend = plan::backend(plan::NODEPORT_SERVICE, j);
        let status = Command::new("ip")
            .args(["-n", netns, "route", "add", "blackhole"])
            .arg(format!("{backend}/32"))
            .args(["table", "local"])
            .status()?;
        anyhow::ensure!(status.success(), "cannot blackhole {backend} in {netns}");
    }
    Ok(())
}

fn pin_current_thread(cpu: usize) -> Result<()> {
    let mut set = nix::sched::CpuSet::new();
    set.set(cpu).context("CPU number out of range")?;
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set)
        .with_context(|| format!("cannot pin to CPU {cpu}"))
}

/// The stop flag and counters shared with the sender and sink threads.
#[derive(Default)]
struct Shared {
    stop: AtomicBool,
    sent: AtomicU64,
    received: AtomicU64,
}

fn spawn_sender(
    netns: String,
    target: SocketAddrV4,
    flows: usize,
    cpu: usize,
    shared: Arc<Shared>,
) -> std::thread::JoinHandle<Result<()>> {
    std::thread::spawn(move || {
        crate::netns::enter(&netns)?;
        pin_current_thread(cpu)?;
        let sockets: Vec<UdpSocket> = (0..flows)
            .map(|_| {
                let s = UdpSocket::bind((plan::EXTERNAL_ADDR, 0))?;
                s.connect(target)?;
                Ok(s)
            })
            .collect::<std::io::Result<_>>()
            .context("cannot open the sender sockets")?;
        let payload = [0x5au8; 18];
        let mut sent = 0u64;
        while !shared.stop.load(Ordering::Relaxed) {
            for s in &sockets {
                // A full qdisc/backlog (ENOBUFS) is a drop, not an error.
                if s.send(&payload).is_ok() {
                    sent += 1;
                }
            }
            if sent & 0xfff < flows as u64 {
                shared.sent.store(sent, Ordering::Relaxed);
            }
        }
        shared.sent.store(sent, Ordering::Relaxed);
        Ok(())
    })
}

fn spawn_sink(
    netns: String,
    cpu: usize,
    shared: Arc<Shared>,
) -> Result<std::thread::JoinHandle<Result<()>>> {
    let (tx, rx) = std::sync::mpsc::channel();
    let handle = std::thread::spawn(move || {
        let bound = (|| {
            crate::netns::enter(&netns)?;
            pin_current_thread(cpu)?;
            let s = UdpSocket::bind(("0.0.0.0", plan::TARGET_PORT))?;
            s.set_read_timeout(Some(Duration::from_millis(100)))?;
            Ok::<_, anyhow::Error>(s)
        })();
        let socket = match bound {
            Ok(s) => {
                let _ = tx.send(Ok(()));
                s
            }
            Err(e) => {
                let _ = tx.send(Err(e));
                return Ok(());
            }
        };
        let mut buf = [0u8; 2048];
        let mut n = 0u64;
        while !shared.stop.load(Ordering::Relaxed) {
            if socket.recv(&mut buf).is_ok() {
                n += 1;
                if n & 0xfff == 0 {
                    shared.received.store(n, Ordering::Relaxed);
                }
            }
        }
        shared.received.store(n, Ordering::Relaxed);
        Ok(())
    });
    rx.recv().context("sink thread vanished")??;
    Ok(handle)
}

fn load_iptables_nodeport(topo: &Topology, services: u32) -> Result<()> {
    use std::io::Write;
    let input = crate::iptables::restore_input_nodeport(services);
    let mut child = Command::new("ip")
        .args(["netns", "exec", &topo.node, "iptables-legacy-restore"])
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

fn one_run(
    variant: NpVariant,
    rep: u32,
    args: &NodePortArgs,
    weir: Option<&WeirCluster>,
) -> Result<NpRun> {
    let tag = format!("{}r{rep}", variant.code());
    let load1 = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().and_then(|v| v.parse().ok()));
    let topo = Topology::create_with_external(&tag)?;
    let external = topo.external.clone().context("no external netns")?;
    // The same CPU for both: no steering, the sender's core also forwards
    // (veth hands packets to the backlog of the CPU that sent them).
    if args.forward_cpu != args.sender_cpu {
        set_rps(&topo.node, "eth0", 1 << args.forward_cpu)?;
        set_rps(&topo.server, "eth0", 1 << args.sender_cpu)?;
    }
    let mut agent_guard = None;
    let target = match variant {
        NpVariant::Direct => {
            SocketAddrV4::new(plan::backend(plan::NODEPORT_SERVICE, 0), plan::TARGET_PORT)
        }
        NpVariant::Iptables => {
            load_iptables_nodeport(&topo, args.services)?;
            SocketAddrV4::new(plan::NODE_IP, plan::NODE_PORT)
        }
        NpVariant::Weir => {
            let cluster = weir.context("the weir variant needs the weir cluster")?;
            // The agent counts as ready once ClusterIPs answer TCP from the
            // client netns, so a TCP server runs while it starts.
            let server = crate::datapath::spawn_ready(&[
                "serve".into(),
                "--netns".into(),
                topo.server.clone(),
                "--workers".into(),
                "1".into(),
                "--lifetime".into(),
                "120".into(),
            ])?;
            let (agent, _) = cluster.start_agent(&topo, &tag)?;
            drop(server);
            agent_guard = Some(agent);
            SocketAddrV4::new(plan::NODE_IP, plan::NODE_PORT)
        }
    };
    let shared = Arc::new(Shared::default());
    let sink = if args.socket_sink {
        Some(spawn_sink(
            topo.server.clone(),
            args.sender_cpu,
            shared.clone(),
        )?)
    } else {
        drop_at_ingress(&topo.server)?;
        None
    };
    let senders: Vec<_> = (0..args.senders.max(1))
        .map(|_| {
            spawn_sender(
                external.clone(),
                target,
                args.flows,
                args.sender_cpu,
                shared.clone(),
            )
        })
        .collect();
    std::thread::sleep(Duration::from_secs_f64(args.warmup));
    let (rx0, sent0, sink0) = (
        rx_packets(&topo.server, "eth0")?,
        shared.sent.load(Ordering::Relaxed),
        shared.received.load(Ordering::Relaxed),
    );
    let cpu0 = cpu_times(args.forward_cpu)?;
    let started = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(args.duration));
    let (rx1, sent1, sink1) = (
        rx_packets(&topo.server, "eth0")?,
        shared.sent.load(Ordering::Relaxed),
        shared.received.load(Ordering::Relaxed),
    );
    let cpu1 = cpu_times(args.forward_cpu)?;
    let secs = started.elapsed().as_secs_f64();
    shared.stop.store(true, Ordering::Relaxed);
    for s in senders {
        s.join().map_err(|_| anyhow::anyhow!("sender panicked"))??;
    }
    if let Some(sink) = sink {
        sink.join()
            .map_err(|_| anyhow::anyhow!("sink panicked"))??;
    }
    drop(agent_guard);
    drop(topo);
    let total = (cpu1.0 - cpu0.0).max(1) as f64;
    let run = NpRun {
        variant,
        rep,
        forwarded_pps: (rx1 - rx0) as f64 / secs,
        // The sender publishes its count every ~4096 packets.
        sent_pps: sent1.saturating_sub(sent0) as f64 / secs,
        sink_pps: sink1.saturating_sub(sink0) as f64 / secs,
        forward_cpu_busy: 1.0 - (cpu1.1 - cpu0.1) as f64 / total,
        forward_cpu_softirq: (cpu1.2 - cpu0.2) as f64 / total,
        load1,
    };
    eprintln!(
        "nodeport {:>8} rep={rep}: forwarded {:>9.0} pps  sent {:>9.0} pps  sink {:>9.0} pps  cpu{} busy {:>3.0}% (softirq {:>3.0}%)  load {:?}",
        variant.name(),
        run.forwarded_pps,
        run.sent_pps,
        run.sink_pps,
        args.forward_cpu,
        run.forward_cpu_busy * 100.0,
        run.forward_cpu_softirq * 100.0,
        load1
    );
    if run.forwarded_pps < 1.0 {
        bail!(
            "{} forwarded nothing to {target} (sent {:.0} pps)",
            variant.name(),
            run.sent_pps
        );
    }
    Ok(run)
}

/// Medians per variant: (forwarded, sent, sink, busy, softirq, reps).
pub fn summarize(runs: &[NpRun]) -> Vec<(NpVariant, [f64; 5], usize)> {
    let mut variants: Vec<NpVariant> = runs.iter().map(|r| r.variant).collect();
    variants.sort();
    variants.dedup();
    variants
        .into_iter()
        .map(|v| {
            let of = |f: fn(&NpRun) -> f64| {
                let xs: Vec<f64> = runs.iter().filter(|r| r.variant == v).map(f).collect();
                crate::stats::median(&xs).unwrap_or(f64::NAN)
            };
            let n = runs.iter().filter(|r| r.variant == v).count();
            (
                v,
                [
                    of(|r| r.forwarded_pps),
                    of(|r| r.sent_pps),
                    of(|r| r.sink_pps),
                    of(|r| r.forward_cpu_busy),
                    of(|r| r.forward_cpu_softirq),
                ],
                n,
            )
        })
        .collect()
}

/// The markdown table: medians, ratios to direct and iptables, the goal.
pub fn markdown(runs: &[NpRun], failures: &[String], header: &str) -> String {
    use std::fmt::Write;
    let rows = summarize(runs);
    let rate = |v: NpVariant| rows.iter().find(|r| r.0 == v).map(|r| r.1[0]);
    let mut out = String::new();
    let _ = writeln!(out, "{header}\n");
    out.push_str("| variant | forwarded pps (median) | vs direct | vs iptables | sent pps | sink read pps | forward CPU busy (softirq) | runs |\n");
    out.push_str("|---|---:|---:|---:|---:|---:|---:|---:|\n");
    let ratio = |x: f64, base: Option<f64>| match base {
        Some(b) if b > 0.0 => format!("{:.2}×", x / b),
        _ => "-".into(),
    };
    for (v, m, n) in &rows {
        let _ = writeln!(
            out,
            "| {} | {:.0} | {} | {} | {:.0} | {:.0} | {:.0}% ({:.0}%) | {n} |",
            v.name(),
            m[0],
            ratio(m[0], rate(NpVariant::Direct)),
            ratio(m[0], rate(NpVariant::Iptables)),
            m[1],
            m[2],
            m[3] * 100.0,
            m[4] * 100.0
        );
    }
    if let (Some(w), Some(i)) = (rate(NpVariant::Weir), rate(NpVariant::Iptables)) {
        let r = w / i;
        let _ = writeln!(
            out,
            "\nGoal (issue 3): NodePort pps ≥ 3× iptables: {r:.2}× — {}",
            if r >= 3.0 { "met" } else { "**missed**" }
        );
    }
    for f in failures {
        let _ = writeln!(out, "\nNot measured: {f}");
    }
    out
}

pub fn run(args: NodePortArgs) -> Result<()> {
    crate::netns::remove_leftovers()?;
    anyhow::ensure!(
        (1..plan::NODEPORT_SERVICE).contains(&args.services),
        "--services 1..{}",
        plan::NODEPORT_SERVICE
    );
    let started = Instant::now();
    let weir = if args.variants.contains(&NpVariant::Weir) {
        let bin_dir = match &args.weir_bin_dir {
            Some(dir) => dir.clone(),
            None => std::env::current_exe()?
                .parent()
                .context("weir-bench has no directory")?
                .to_owned(),
        };
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
            match one_run(variant, rep, &args, weir.as_ref()) {
                Ok(r) => runs.push(r),
                Err(e) => {
                    eprintln!("nodeport {} rep={rep} failed: {e:#}", variant.name());
                    failures.push(format!("{} rep {rep}: {e:#}", variant.name()));
                }
            }
        }
    }
    drop(weir);
    let header = format!(
        "Command: `{}`  \nDate: {}; kernel {}; wall time {:.0} s  \nSettings: {} repetitions, {} s warm-up + {} s measured, {} flows, {} sender thread(s) on CPU {}, forwarding on CPU {}, {} ClusterIP services besides the NodePort",
        std::env::args().collect::<Vec<_>>().join(" "),
        command_output("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
        command_output("uname", &["-r"]),
        started.elapsed().as_secs_f64(),
        args.reps,
        args.warmup,
        args.duration,
        args.flows,
        args.senders,
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

    fn run(v: NpVariant, pps: f64) -> NpRun {
        NpRun {
            variant: v,
            rep: 0,
            forwarded_pps: pps,
            sent_pps: 2.0 * pps,
            sink_pps: pps / 2.0,
            forward_cpu_busy: 1.0,
            forward_cpu_softirq: 0.9,
            load1: None,
        }
    }

    #[test]
    fn report_takes_medians_and_ratios() {
        let runs = [
            run(NpVariant::Iptables, 100.0),
            run(NpVariant::Iptables, 300.0),
            run(NpVariant::Iptables, 200.0),
            run(NpVariant::Weir, 700.0),
            run(NpVariant::Direct, 1000.0),
        ];
        let md = markdown(&runs, &["x rep 1: boom".into()], "H");
        assert!(md.contains("| iptables | 200 | 0.20× | 1.00× |"), "{md}");
        assert!(md.contains("| weir | 700 | 0.70× | 3.50× |"), "{md}");
        assert!(md.contains("≥ 3× iptables: 3.50× — met"), "{md}");
        assert!(md.contains("Not measured: x rep 1: boom"), "{md}");
    }
}
