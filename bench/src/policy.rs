//! `weir-bench policy`: NetworkPolicy cost and change latency, measured on a
//! real one-node weir cluster (`cargo xtask up --release`, torn down at the
//! end): weir-control, containerd, the real weir-agent (its watch ->
//! compile -> map writes) and the eBPF datapath, with pods from the
//! `weir/netpol` image.
//!
//! Topology: a client pod (namespace `bp-cli`) and two identical server pods
//! (`bp-pol/srv`, `bp-none/srv`), all on the one node.
//!
//! (a) Connection rate: `netprobe load` in the client pod (short TCP
//!     connections: connect, read the answer, close) to one server, then the
//!     other, alternating, first with no policy in the cluster (control: both
//!     servers should be equal), then with N policies in `bp-pol` that all
//!     select its server (N-1 allow every pod on their own port 20000+i, one
//!     allows the client on port 80). Ratio = selected / unselected.
//!     Before the second phase a probe checks that port 81 of the selected
//!     server is denied (the policies are in force).
//! (b) Change latency: with the N policies in force, a watcher in the client
//!     pod (`netprobe watch`) starts a TCP connection to the selected server's
//!     port 81 every 2 ms; the bench creates, then deletes, a policy that
//!     allows the client on port 81, alternately. Latency = start of the
//!     first connection attempt that got the new verdict (CLOCK_REALTIME, the
//!     same clock on both sides) - the moment just before the API write was
//!     sent. It covers API server -> etcd -> watch -> agent compile -> BPF
//!     map writes -> the packet; its resolution is the attempt interval.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail, ensure};
use serde_json::{Value, json};
use weir_client::{Client, DeleteParams};
use weir_e2e::ClusterInfo;
use weir_e2e::cri::Cri;

use crate::policy_report::{
    Change, LoadRun, PolicyBench, change_latencies, parse_load, parse_watch,
};

const CLUSTER: &str = "wbpol";
const IMAGE: &str = "127.0.0.1:5000/weir/netpol:v1";
const CLI_NS: &str = "bp-cli";
const POL_NS: &str = "bp-pol";
const NONE_NS: &str = "bp-none";

#[derive(Clone, Debug, clap::Args)]
pub struct PolicyArgs {
    /// Policies in force in phase two and during the change measurement.
    #[arg(long, default_value_t = 1000)]
    pub policies: u32,
    /// Load runs per server and phase (alternating).
    #[arg(long, default_value_t = 4)]
    pub reps: usize,
    /// Seconds per load run.
    #[arg(long, default_value_t = 4.0)]
    pub duration: f64,
    /// Connections in flight per load process (2 processes).
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Policy changes measured (half opening, half closing).
    #[arg(long, default_value_t = 40)]
    pub changes: usize,
    /// Milliseconds between two changes.
    #[arg(long, default_value_t = 1000)]
    pub change_interval_ms: u64,
    /// Leave the cluster running afterwards.
    #[arg(long)]
    pub keep_cluster: bool,
    #[arg(long, default_value = "target/bench")]
    pub out_dir: PathBuf,
}

fn xtask(args: &[&str]) -> Result<()> {
    let status = Command::new(env!("CARGO"))
        .arg("xtask")
        .args(args)
        .status()
        .context("cannot run cargo xtask")?;
    ensure!(status.success(), "cargo xtask {} failed", args.join(" "));
    Ok(())
}

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

fn command_output(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

pub fn run(args: PolicyArgs) -> Result<()> {
    let wall = Instant::now();
    xtask(&[
        "up",
        "--name",
        CLUSTER,
        "--nodes",
        "1",
        "--release",
        "--no-demo",
    ])?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let result = runtime.block_on(measure(&args));
    if !args.keep_cluster {
        xtask(&["down", "--name", CLUSTER])?;
    }
    let bench = result?;
    let md = bench.render();
    std::fs::create_dir_all(&args.out_dir)?;
    std::fs::write(args.out_dir.join("policy.md"), &md)?;
    std::fs::write(
        args.out_dir.join("policy.json"),
        serde_json::to_vec_pretty(&bench)?,
    )?;
    println!("{md}");
    println!(
        "(wall {:.0}s; written to {}/policy.{{md,json}})",
        wall.elapsed().as_secs_f32(),
        args.out_dir.display()
    );
    Ok(())
}

struct Bench {
    client: Client,
    info: ClusterInfo,
}

/// A pod the bench execs into.
struct PodHandle {
    ip: Ipv4Addr,
    cri_socket: PathBuf,
    container: String,
}

impl Bench {
    async fn create(&self, kind: &str, v: Value) -> Result<()> {
        self.client
            .create_json(kind, serde_json::to_vec(&v)?, false)
            .await
            .with_context(|| format!("cannot create {kind} {}", v["metadata"]))?;
        Ok(())
    }

    async fn pod(&self, ns: &str, name: &str, id: &str) -> Result<PodHandle> {
        self.create(
            "Pod",
            json!({"apiVersion": "v1", "kind": "Pod",
                   "metadata": {"name": name, "namespace": ns, "labels": {"app": name}},
                   "spec": {"terminationGracePeriodSeconds": 1,
                            "containers": [{"name": "c", "image": IMAGE,
                                            "command": ["/netprobe", "serve", id]}]}}),
        )
        .await?;
        let deadline = Instant::now() + Duration::from_secs(240);
        loop {
            let v: Value = serde_json::from_slice(&self.client.get_json("Pod", ns, name).await?)?;
            let phase = v["status"]["phase"].as_str().unwrap_or("");
            let ip = v["status"]["podIP"].as_str().and_then(|s| s.parse().ok());
            if let (Some(ip), "Running") = (ip, phase) {
                let node = v["spec"]["nodeName"].as_str().unwrap_or("");
                let node = self
                    .info
                    .nodes
                    .iter()
                    .find(|n| n.name == node)
                    .with_context(|| format!("pod {ns}/{name} on unknown node {node:?}"))?;
                let uid = v["metadata"]["uid"].as_str().unwrap_or("");
                let cri = Cri::connect(&node.cri_socket).await?;
                let container = cri
                    .running_containers_of(uid)
                    .await?
                    .into_iter()
                    .next()
                    .with_context(|| format!("no running container in {ns}/{name}"))?
                    .id;
                return Ok(PodHandle {
                    ip,
                    cri_socket: node.cri_socket.clone(),
                    container,
                });
            }
            ensure!(
                Instant::now() < deadline,
                "pod {ns}/{name} not running after 240 s (phase {phase:?})"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    async fn policy(&self, ns: &str, name: &str, spec: Value) -> Result<()> {
        self.create(
            "NetworkPolicy",
            json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                   "metadata": {"name": name, "namespace": ns}, "spec": spec}),
        )
        .await
    }
}

async fn exec(pod: &PodHandle, cmd: &[String], timeout_secs: i64) -> Result<String> {
    let cri = Cri::connect(&pod.cri_socket).await?;
    let out = cri.exec_sync(&pod.container, cmd, timeout_secs).await?;
    if out.exit_code != 0 {
        bail!(
            "{} exited {}: {}",
            cmd.join(" "),
            out.exit_code,
            out.stderr.trim()
        );
    }
    Ok(out.stdout)
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

async fn load(args: &PolicyArgs, cli: &PodHandle, dst: Ipv4Addr) -> Result<LoadRun> {
    let cmd = strings(&[
        "/netprobe",
        "load",
        "-c",
        &args.concurrency.to_string(),
        "-p",
        "2",
        "-d",
        &((args.duration * 1000.0) as u64).to_string(),
        &format!("{dst}:80"),
    ]);
    let out = exec(cli, &cmd, args.duration as i64 + 30).await?;
    parse_load(&out).with_context(|| format!("cannot read netprobe load output {out:?}"))
}

/// Alternating load runs to the two servers: (selected, unselected) per rep.
async fn load_pairs(
    args: &PolicyArgs,
    cli: &PodHandle,
    sel: Ipv4Addr,
    none: Ipv4Addr,
) -> Result<Vec<(LoadRun, LoadRun)>> {
    // Warm-up (neighbour entries, conntrack, page cache of the binary).
    let warm = PolicyArgs {
        duration: 1.0,
        ..args.clone()
    };
    load(&warm, cli, sel).await?;
    load(&warm, cli, none).await?;
    let mut out = Vec::new();
    for rep in 0..args.reps {
        // Alternate which goes first, so a drift in time favours neither.
        let (a, b) = if rep % 2 == 0 {
            let a = load(args, cli, sel).await?;
            (a, load(args, cli, none).await?)
        } else {
            let b = load(args, cli, none).await?;
            (load(args, cli, sel).await?, b)
        };
        eprintln!(
            "[policy] rep {rep}: selected {:.0}/s ({} failed), unselected {:.0}/s ({} failed)",
            a.rate(),
            a.fail,
            b.rate(),
            b.fail
        );
        out.push((a, b));
    }
    Ok(out)
}

async fn probe(cli: &PodHandle, spec: &str) -> Result<bool> {
    let out = exec(
        cli,
        &strings(&["/netprobe", "probe", "-t", "1000", spec]),
        10,
    )
    .await?;
    Ok(out.contains(" ok "))
}

async fn measure(args: &PolicyArgs) -> Result<PolicyBench> {
    let file = Path::new("/var/lib/weir")
        .join(CLUSTER)
        .join("cluster.json");
    let info: ClusterInfo = serde_json::from_slice(
        &std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?,
    )?;
    let client = Client::connect(&info.server).await?;
    let b = Bench { client, info };
    for ns in [CLI_NS, POL_NS, NONE_NS] {
        b.create(
            "Namespace",
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
        )
        .await?;
    }
    let cli = b.pod(CLI_NS, "cli", "cli").await?;
    let sel = b.pod(POL_NS, "srv", "srv-pol").await?;
    let none = b.pod(NONE_NS, "srv", "srv-none").await?;
    // Reachable before anything else is measured.
    for ip in [sel.ip, none.ip] {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !probe(&cli, &format!("tcp:{ip}:80")).await? {
            ensure!(
                Instant::now() < deadline,
                "{ip}:80 never answered the client"
            );
        }
    }
    eprintln!("[policy] phase 1: no policy");
    let before = load_pairs(args, &cli, sel.ip, none.ip).await?;

    eprintln!("[policy] creating {} policies in {POL_NS}", args.policies);
    let t = Instant::now();
    b.policy(
        POL_NS,
        "allow-cli-80",
        json!({"podSelector": {"matchLabels": {"app": "srv"}},
               "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": CLI_NS}}}],
                            "ports": [{"protocol": "TCP", "port": 80}]}]}),
    )
    .await?;
    for i in 1..args.policies {
        b.policy(
            POL_NS,
            &format!("p{i}"),
            json!({"podSelector": {"matchLabels": {"app": "srv"}},
                   "ingress": [{"from": [{"namespaceSelector": {}}],
                                "ports": [{"protocol": "TCP", "port": 20000 + i}]}]}),
        )
        .await?;
    }
    eprintln!("[policy] created in {:.1}s", t.elapsed().as_secs_f32());
    // In force: port 81 of the selected server is denied (wait for it).
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut enforced = false;
    while Instant::now() < deadline {
        if !probe(&cli, &format!("tcp:{}:81", sel.ip)).await? {
            enforced = true;
            break;
        }
    }
    ensure!(
        probe(&cli, &format!("tcp:{}:80", sel.ip)).await?,
        "the allowed port 80 of the selected server does not answer"
    );
    eprintln!(
        "[policy] phase 2: {} policies (enforced: {enforced})",
        args.policies
    );
    let with_policies = load_pairs(args, &cli, sel.ip, none.ip).await?;

    eprintln!("[policy] change latency: {} changes", args.changes);
    let watch_ms = args.changes as u64 * args.change_interval_ms + 2000;
    let watch_cmd = strings(&[
        "/netprobe",
        "watch",
        "-i",
        "2000",
        "-t",
        "300",
        "-d",
        &watch_ms.to_string(),
        &format!("tcp:{}:81", sel.ip),
    ]);
    let watcher = {
        let (socket, container) = (cli.cri_socket.clone(), cli.container.clone());
        tokio::spawn(async move {
            let pod = PodHandle {
                ip: Ipv4Addr::UNSPECIFIED,
                cri_socket: socket,
                container,
            };
            exec(&pod, &watch_cmd, (watch_ms / 1000) as i64 + 30).await
        })
    };
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let mut changes = Vec::new();
    for k in 0..args.changes {
        let opens = k % 2 == 0;
        let at_ns = now_ns();
        if opens {
            b.policy(
                POL_NS,
                "toggle-81",
                json!({"podSelector": {"matchLabels": {"app": "srv"}},
                       "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": CLI_NS}}}],
                                    "ports": [{"protocol": "TCP", "port": 81}]}]}),
            )
            .await?;
        } else {
            b.client
                .delete_json(
                    "NetworkPolicy",
                    POL_NS,
                    "toggle-81",
                    &DeleteParams::default(),
                )
                .await
                .context("delete toggle-81")?;
        }
        changes.push(Change { at_ns, opens });
        let next = Duration::from_millis(args.change_interval_ms);
        tokio::time::sleep(next).await;
    }
    let out = watcher.await.context("watcher task")??;
    let (transitions, attempts) = parse_watch(&out);
    let latencies = change_latencies(&changes, &transitions);
    eprintln!(
        "[policy] {attempts} attempts, {} transitions, latencies {latencies:?}",
        transitions.len()
    );
    Ok(PolicyBench {
        command: "cargo xtask bench policy".into(),
        date: command_output("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
        kernel: command_output("uname", &["-r"]),
        cpu: std::fs::read_to_string("/proc/cpuinfo")
            .unwrap_or_default()
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split(':').nth(1))
            .unwrap_or("unknown")
            .trim()
            .to_owned(),
        nproc: std::thread::available_parallelism().map_or(0, usize::from),
        policies: args.policies,
        before,
        with_policies,
        enforced,
        change_latencies_ms: latencies,
        load_settings: format!(
            "{} alternating runs of {} s per server and phase after a 1 s warm-up each; \
             `netprobe load`: 2 processes x {} connections in flight (connect, read the answer, close)",
            args.reps, args.duration, args.concurrency
        ),
        change_settings: format!(
            "{} changes {} ms apart (create / delete of a policy opening port 81), {} other policies in force; \
             a TCP connect attempt every 2 ms (300 ms timeout) from the client pod; release weir-control and weir-agent",
            args.changes, args.change_interval_ms, args.policies
        ),
    })
}
