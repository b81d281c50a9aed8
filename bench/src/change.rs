//! Service change -> datapath latency: on a node already holding N services,
//! add one more and measure the time from the start of the change to the
//! first successful connect to its VIP from the client netns.
//!
//! The prober is a thread of this process moved into the client netns (a
//! netns switch is per thread), so both ends of the measurement read the
//! same monotonic clock. Until the VIP is translated, the node answers SYNs
//! to it with ICMP unreachable (an `unreachable` route, ICMP rate limits off
//! for this netns), so a failed attempt costs microseconds, not a SYN timeout.

use std::net::{SocketAddr, SocketAddrV4, TcpStream};
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::datapath::{Variant, spawn_ready};
use crate::netns::Topology;
use crate::weir::WeirCluster;
use crate::{iptables, nftables, plan};

/// Give up on one change after this long.
const PROBE_LIMIT: Duration = Duration::from_secs(30);

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ChangeResult {
    pub variant: Variant,
    pub services: u32,
    /// Start of the change -> first successful connect.
    pub samples_ms: Vec<f64>,
    /// Start of the change -> the change call returned (iptables-restore or
    /// `nft -f` exited; weir's API accepted both objects). For weir the rest of
    /// `samples_ms` is watch -> agent -> planner -> maps -> packet.
    #[serde(default)]
    pub applied_ms: Vec<f64>,
    pub method: String,
}

impl ChangeResult {
    pub fn p50_ms(&self) -> f64 {
        crate::stats::median(&self.samples_ms).unwrap_or(f64::NAN)
    }
    pub fn applied_p50_ms(&self) -> f64 {
        crate::stats::median(&self.applied_ms).unwrap_or(f64::NAN)
    }
    /// p50 and max of (first connect − the change call's return): for weir
    /// the watch -> agent -> maps part alone (negative for iptables, whose
    /// restore returns after the rules already work).
    pub fn after_return_ms(&self) -> (f64, f64) {
        let after: Vec<f64> = self
            .samples_ms
            .iter()
            .zip(&self.applied_ms)
            .map(|(s, a)| s - a)
            .collect();
        (
            crate::stats::median(&after).unwrap_or(f64::NAN),
            after.iter().copied().fold(f64::NAN, f64::max),
        )
    }
    pub fn max_ms(&self) -> f64 {
        self.samples_ms.iter().copied().fold(f64::NAN, f64::max)
    }
}

/// Starts a prober thread in `netns` that connects to `target` until it
/// succeeds or `limit` passes; it sends the `Instant` of the first success.
fn spawn_prober(
    netns: String,
    target: SocketAddrV4,
    limit: Duration,
) -> mpsc::Receiver<Result<Instant>> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let result = (|| {
            crate::netns::enter(&netns)?;
            let deadline = Instant::now() + limit;
            while Instant::now() < deadline {
                if TcpStream::connect_timeout(&SocketAddr::V4(target), Duration::from_millis(5))
                    .is_ok()
                {
                    return Ok(Instant::now());
                }
                std::thread::sleep(Duration::from_micros(100));
            }
            bail!("{target} never became reachable within {limit:?}")
        })();
        let _ = tx.send(result);
    });
    rx
}

/// Blocks until `target` accepts a connection from `netns`.
pub fn wait_reachable(netns: &str, target: SocketAddrV4, limit: Duration) -> Result<Instant> {
    spawn_prober(netns.to_owned(), target, limit)
        .recv()
        .context("prober vanished")?
}

fn iptables_restore(netns: &str, input: &str, noflush: bool) -> Result<()> {
    use std::io::Write;
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", netns, "iptables-legacy-restore"]);
    if noflush {
        cmd.arg("--noflush");
    }
    let mut child = cmd
        .stdin(std::process::Stdio::piped())
        .spawn()
        .context("cannot run iptables-legacy-restore")?;
    child
        .stdin
        .take()
        .context("stdin")?
        .write_all(input.as_bytes())?;
    anyhow::ensure!(child.wait()?.success(), "iptables-legacy-restore failed");
    Ok(())
}

/// Measures `changes` service additions (one after the other) of `variant`
/// on a node holding `services`.
pub fn measure(
    variant: Variant,
    services: u32,
    changes: u32,
    weir: Option<&mut WeirCluster>,
) -> Result<ChangeResult> {
    anyhow::ensure!(
        services + changes < plan::NODEPORT_SERVICE,
        "too many services for the change test"
    );
    let topo = Topology::create(&format!("chg{}{services}", variant.code()))?;
    let status = Command::new("ip")
        .args([
            "netns",
            "exec",
            &topo.node,
            "sysctl",
            "-q",
            "-w",
            "net.ipv4.icmp_ratelimit=0",
            "net.ipv4.icmp_msgs_per_sec=1000000",
        ])
        .status()?;
    anyhow::ensure!(
        status.success(),
        "cannot lift the ICMP rate limits in {}",
        topo.node
    );
    let server = spawn_ready(&[
        "serve".into(),
        "--netns".into(),
        topo.server.clone(),
        "--workers".into(),
        "1".into(),
        "--lifetime".into(),
        "600".into(),
    ])?;
    let mut samples_ms = Vec::new();
    let mut applied_ms = Vec::new();
    let ms_since = |start: Instant| start.elapsed().as_secs_f64() * 1e3;
    let method;
    match variant {
        Variant::Direct | Variant::WeirIdle | Variant::WeirTc => {
            bail!("{} has no services to change", variant.name())
        }
        Variant::Iptables => {
            method = "kube-proxy partial sync: `iptables-legacy-restore --noflush` rewriting KUBE-SERVICES + the new chains".to_owned();
            iptables_restore(&topo.node, &iptables::restore_input(services), false)?;
            for k in 0..changes {
                let total = services + k + 1;
                let input = iptables::restore_add_service(total);
                let probe = spawn_prober(
                    topo.client.clone(),
                    SocketAddrV4::new(plan::vip(total - 1), plan::SERVICE_PORT),
                    PROBE_LIMIT,
                );
                std::thread::sleep(Duration::from_millis(20));
                let started = Instant::now();
                iptables_restore(&topo.node, &input, true)?;
                applied_ms.push(ms_since(started));
                let reached = probe.recv().context("prober vanished")??;
                samples_ms.push(reached.duration_since(started).as_secs_f64() * 1e3);
            }
        }
        Variant::Nftables => {
            method = "kube-proxy nftables partial sync: one `nft -f` transaction adding the new service's chains, rules and map/set elements".to_owned();
            let (table, _) = nftables::Table::load(&topo.node, &nftables::ruleset(services))?;
            crate::datapath::check_isolation(&topo, variant)?;
            for k in 0..changes {
                let total = services + k + 1;
                let input = nftables::add_service(total);
                let probe = spawn_prober(
                    topo.client.clone(),
                    SocketAddrV4::new(plan::vip(total - 1), plan::SERVICE_PORT),
                    PROBE_LIMIT,
                );
                std::thread::sleep(Duration::from_millis(20));
                let started = Instant::now();
                nftables::load(&topo.node, &input)?;
                applied_ms.push(ms_since(started));
                let reached = probe.recv().context("prober vanished")??;
                samples_ms.push(reached.duration_since(started).as_secs_f64() * 1e3);
            }
            drop(table);
        }
        Variant::Weir => {
            method = crate::weir::CHANGE_METHOD.to_owned();
            let cluster = weir.context("the weir variant needs the weir cluster")?;
            anyhow::ensure!(
                cluster.services() == services,
                "weir holds {} services, not {services}",
                cluster.services()
            );
            let (agent, _) = cluster.start_agent(&topo, &format!("chg{services}"))?;
            for _ in 0..changes {
                let index = cluster.services();
                let probe = spawn_prober(
                    topo.client.clone(),
                    SocketAddrV4::new(plan::vip(index), plan::SERVICE_PORT),
                    PROBE_LIMIT,
                );
                std::thread::sleep(Duration::from_millis(20));
                let started = Instant::now();
                cluster.add_one_service()?;
                applied_ms.push(ms_since(started));
                let reached = probe.recv().context("prober vanished")??;
                samples_ms.push(reached.duration_since(started).as_secs_f64() * 1e3);
            }
            drop(agent);
        }
    }
    drop(server);
    drop(topo);
    eprintln!(
        "change {:>8} N={services}: {samples_ms:.2?} ms",
        variant.name()
    );
    Ok(ChangeResult {
        variant,
        services,
        samples_ms,
        applied_ms,
        method,
    })
}
