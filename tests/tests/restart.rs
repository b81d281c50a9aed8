//! End-to-end (issue 3): restarting weir-agent under load drops no established
//! TCP connection and no UDP flow. The maps and the programs' links are pinned
//! per node, so a crashed agent leaves the datapath running and the next one
//! adopts it; this test kills the agent with SIGKILL (a crash, not a clean
//! exit) while traffic flows through ClusterIPs and checks that no connection
//! broke and no flow stalled for more than a second.
//!
//! Traffic, all through ClusterIPs and running the whole time:
//! - a client pod holds one TCP connection to an echo server (busybox
//!   `nc -ll -e cat`) and sends a numbered line every 50 ms; its output (the
//!   echoes, timestamped by the CRI log) must be every number in order, with
//!   no gap over 1 s. The pod's connect goes through weir's socket load
//!   balancing (the pod is in the node's cgroup subtree).
//! - threads of this test, inside the client pod's network namespace but not
//!   its cgroup (so every packet goes through weir's tc programs and pinned
//!   conntrack), hold a TCP echo connection and a UDP flow (one socket, one
//!   source port) to `netprobe serve`, one message every 20 ms, each answered
//!   within a second;
//! - threads in the cluster's external namespace hold a TCP echo connection
//!   to the echo Service's NodePort on every node's address (NodePort
//!   translation, SNAT when the backend is on another node).
//!
//! The agent is restarted the way xtask starts it: the same command line in
//! the same cgroup, output appended to the same log, found through the PID
//! and start time recorded in the cluster state file, which is updated with
//! the new process so `cargo xtask down` still stops it.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpStream, UdpSocket};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use hyper_util::rt::TokioIo;
use k8s_cri::v1 as cri;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use tonic::transport::{Endpoint, Uri};
use weir_e2e::cri::Cri;
use weir_e2e::{Check, Cluster, DeleteParams, ListParams, phase, unique_suffix, wait_for};

const NS: &str = "default";
const CLIENT_IMAGE: &str = "127.0.0.1:5000/weir/client:v1";
const NETPOL_IMAGE: &str = "127.0.0.1:5000/weir/netpol:v1";
const POD_TIMEOUT: Duration = Duration::from_secs(180);
/// The longest a flow may go without an answer.
const MAX_GAP: Duration = Duration::from_secs(1);
/// Traffic before the restart and after the new agent started.
const BEFORE: Duration = Duration::from_secs(3);
const AFTER: Duration = Duration::from_secs(8);

fn manifests(sfx: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: rs-tcp-{sfx}
  labels: {{app: rs-tcp-{sfx}}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: echo
    image: {CLIENT_IMAGE}
    command: ["nc", "-ll", "-p", "9000", "-e", "cat"]
---
apiVersion: v1
kind: Pod
metadata:
  name: rs-udp-{sfx}
  labels: {{app: rs-udp-{sfx}}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: probe
    image: {NETPOL_IMAGE}
    command: ["/netprobe", "serve", "udp-echo", "9001"]
---
apiVersion: v1
kind: Service
metadata:
  name: rs-tcp-{sfx}
spec:
  type: NodePort
  selector: {{app: rs-tcp-{sfx}}}
  ports:
  - {{port: 9000, targetPort: 9000, protocol: TCP}}
---
apiVersion: v1
kind: Service
metadata:
  name: rs-udp-{sfx}
spec:
  selector: {{app: rs-udp-{sfx}}}
  ports:
  - {{port: 9001, targetPort: 9001, protocol: UDP}}
"#
    )
}

/// The client pod: one long-lived TCP connection through the ClusterIP,
/// a numbered line every 50 ms; the echoes go to its log. `CLOSED` marks the
/// end of the connection.
fn client_pod(sfx: &str, vip: &str) -> String {
    let script = format!(
        "i=0; while :; do echo $i; i=$((i+1)); usleep 50000; done | nc {vip} 9000; echo CLOSED; sleep 3600"
    );
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: rs-client-{sfx}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: client
    image: {CLIENT_IMAGE}
    command: ["sh", "-c", '{script}']
"#
    )
}

async fn running(c: &Cluster, name: &str) -> Result<Pod> {
    wait_for(&format!("pod {name} running"), POD_TIMEOUT, || async {
        let p: Pod = c.client.get(NS, name).await?;
        Ok(match phase(&p) {
            "Running" => Check::Done(p),
            "Failed" | "Succeeded" => Check::Failed(format!("the pod ended ({})", phase(&p))),
            other => Check::Waiting(format!("phase {other:?}")),
        })
    })
    .await
}

async fn cluster_ip(c: &Cluster, name: &str) -> Result<Ipv4Addr> {
    let s: Service = c.client.get(NS, name).await?;
    s.spec
        .and_then(|s| s.cluster_ip)
        .context("no clusterIP")?
        .parse()
        .context("clusterIP is not IPv4")
}

async fn node_port(c: &Cluster, name: &str) -> Result<u16> {
    let s: Service = c.client.get(NS, name).await?;
    s.spec
        .and_then(|s| s.ports)
        .and_then(|p| p.first()?.node_port)
        .and_then(|p| u16::try_from(p).ok())
        .context("no nodePort")
}

async fn wait_endpoints(c: &Cluster, svc: &str) -> Result<()> {
    wait_for(
        &format!("a ready endpoint of {svc}"),
        POD_TIMEOUT,
        || async {
            let slices = c
                .client
                .list::<EndpointSlice>(
                    NS,
                    &ListParams::default().labels(format!("kubernetes.io/service-name={svc}")),
                )
                .await?
                .items;
            let ready = slices
                .iter()
                .flat_map(|s| &s.endpoints)
                .any(|e| e.conditions.as_ref().and_then(|c| c.ready) == Some(true));
            Ok(if ready {
                Check::Done(())
            } else {
                Check::Waiting(format!("{} slices, none ready", slices.len()))
            })
        },
    )
    .await
}

/// The network namespace of `pod`'s sandbox, as `/proc/<pause pid>/ns/net`
/// (from containerd's verbose PodSandboxStatus).
async fn pod_netns(socket: &Path, pod: &Pod) -> Result<PathBuf> {
    let uid = pod.metadata.uid.as_deref().context("pod has no uid")?;
    let sandbox = Cri::connect(socket)
        .await?
        .sandboxes_of(uid)
        .await?
        .into_iter()
        .find(|s| s.state == cri::PodSandboxState::SandboxReady as i32)
        .context("no ready sandbox for the client pod")?;
    let sock = socket.to_path_buf();
    let channel = Endpoint::from_static("http://cri.invalid")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let sock = sock.clone();
            async move {
                Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(sock).await?))
            }
        }))
        .await?;
    let status = cri::runtime_service_client::RuntimeServiceClient::new(channel)
        .pod_sandbox_status(cri::PodSandboxStatusRequest {
            pod_sandbox_id: sandbox.id.clone(),
            verbose: true,
        })
        .await
        .context("PodSandboxStatus")?
        .into_inner();
    let info: serde_json::Value = serde_json::from_str(
        status
            .info
            .get("info")
            .context("PodSandboxStatus has no verbose info")?,
    )?;
    let pid = info
        .get("pid")
        .and_then(serde_json::Value::as_u64)
        .context("no sandbox pid in the verbose info")?;
    Ok(PathBuf::from(format!("/proc/{pid}/ns/net")))
}

/// What one flow of the test's own client saw.
#[derive(Debug, Default)]
struct FlowReport {
    answered: u64,
    errors: Vec<String>,
    max_gap: Duration,
}

/// Runs `exchange` every 20 ms in a thread inside `netns` until `stop`;
/// `exchange` sends one message and waits for its answer.
fn spawn_flow<S: Send + 'static>(
    netns: PathBuf,
    stop: Arc<AtomicBool>,
    open: impl FnOnce() -> Result<S> + Send + 'static,
    mut exchange: impl FnMut(&mut S, u64) -> Result<()> + Send + 'static,
) -> JoinHandle<FlowReport> {
    std::thread::spawn(move || {
        let mut report = FlowReport::default();
        let opened = (|| {
            let f = File::open(&netns).with_context(|| format!("open {}", netns.display()))?;
            nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET).context("setns")?;
            open()
        })();
        let mut state = match opened {
            Ok(s) => s,
            Err(e) => {
                report.errors.push(format!("cannot start: {e:#}"));
                return report;
            }
        };
        let mut last = Instant::now();
        let mut seq = 0u64;
        while !stop.load(Ordering::Relaxed) {
            match exchange(&mut state, seq) {
                Ok(()) => {
                    report.answered += 1;
                    report.max_gap = report.max_gap.max(last.elapsed());
                    last = Instant::now();
                }
                Err(e) => {
                    report.errors.push(format!("message {seq}: {e:#}"));
                    if report.errors.len() > 20 {
                        break;
                    }
                }
            }
            seq += 1;
            std::thread::sleep(Duration::from_millis(20));
        }
        report
    })
}

fn tcp_flow(netns: PathBuf, stop: Arc<AtomicBool>, target: SocketAddrV4) -> JoinHandle<FlowReport> {
    spawn_flow(
        netns,
        stop,
        move || {
            let s = TcpStream::connect_timeout(&target.into(), Duration::from_secs(2))?;
            s.set_read_timeout(Some(MAX_GAP))?;
            Ok((s.try_clone()?, BufReader::new(s)))
        },
        |(w, r), seq| {
            writeln!(w, "t{seq}")?;
            let mut line = String::new();
            ensure!(r.read_line(&mut line)? > 0, "the connection was closed");
            ensure!(line.trim() == format!("t{seq}"), "echo {line:?}");
            Ok(())
        },
    )
}

fn udp_flow(netns: PathBuf, stop: Arc<AtomicBool>, vip: Ipv4Addr) -> JoinHandle<FlowReport> {
    spawn_flow(
        netns,
        stop,
        move || {
            let s = UdpSocket::bind("0.0.0.0:0")?;
            s.connect(SocketAddrV4::new(vip, 9001))?;
            s.set_read_timeout(Some(MAX_GAP))?;
            Ok(s)
        },
        |s, seq| {
            s.send(format!("u{seq}").as_bytes())?;
            let mut buf = [0u8; 64];
            let n = s.recv(&mut buf).context("no answer")?;
            let answer = String::from_utf8_lossy(&buf[..n]);
            ensure!(answer.trim() == "udp-echo", "answer {answer:?}");
            Ok(())
        },
    )
}

/// The cluster state file (xtask's), the same one the harness reads.
fn state_file() -> PathBuf {
    std::env::var_os("WEIR_E2E_CLUSTER_FILE")
        .map(PathBuf::from)
        .unwrap_or_else(|| weir_e2e::DEFAULT_CLUSTER_FILE.into())
}

/// Field 22 of /proc/PID/stat (fields counted after the last ')').
fn start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 1..]
        .split_whitespace()
        .nth(19)?
        .parse()
        .ok()
}

/// The cgroup v2 directory of `pid`.
fn cgroup_dir(pid: i32) -> Result<PathBuf> {
    let line = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))?
        .lines()
        .find_map(|l| l.strip_prefix("0::").map(str::to_owned))
        .context("no cgroup v2 entry")?;
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")?;
    let mount = mountinfo
        .lines()
        .find(|l| {
            l.split(" - ")
                .nth(1)
                .is_some_and(|t| t.starts_with("cgroup2 "))
        })
        .and_then(|l| l.split_whitespace().nth(4))
        .context("cgroup2 is not mounted")?;
    Ok(Path::new(mount).join(line.trim_start_matches('/')))
}

/// Kills node `node`'s weir-agent with SIGKILL (by the PID and start time
/// the state file recorded) and starts it again like xtask does: same
/// command line, same cgroup, output appended to the same log. Records the
/// new process in the state file. Returns the new PID.
fn restart_agent(node: &str) -> Result<i32> {
    let path = state_file();
    let mut state: serde_json::Value = serde_json::from_slice(&std::fs::read(&path)?)?;
    let name = format!("agent/{node}");
    let procs = state
        .get_mut("processes")
        .and_then(serde_json::Value::as_array_mut)
        .context("no processes in the state file")?;
    let entry = procs
        .iter_mut()
        .find(|p| p.get("name").and_then(serde_json::Value::as_str) == Some(name.as_str()))
        .with_context(|| format!("no {name} in the state file"))?;
    let pid = entry
        .get("pid")
        .and_then(serde_json::Value::as_i64)
        .and_then(|p| i32::try_from(p).ok())
        .context("no pid")?;
    let recorded = entry.get("start_time").and_then(serde_json::Value::as_u64);
    ensure!(
        start_time(pid).is_some() && start_time(pid) == recorded,
        "{name} (pid {pid}) is not running as recorded"
    );
    let log = PathBuf::from(
        entry
            .get("log")
            .and_then(serde_json::Value::as_str)
            .context("no log")?,
    );
    let argv: Vec<String> = std::fs::read(format!("/proc/{pid}/cmdline"))?
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    ensure!(!argv.is_empty(), "empty command line of pid {pid}");
    let cgroup = cgroup_dir(pid)?;
    eprintln!(
        "[e2e] killing {name} (pid {pid}) with SIGKILL; restarting in {}",
        cgroup.display()
    );
    ensure!(
        Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status()?
            .success(),
        "kill -KILL {pid} failed"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while start_time(pid) == recorded && !zombie_or_gone(pid) {
        ensure!(Instant::now() < deadline, "pid {pid} did not die");
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = OpenOptions::new().create(true).append(true).open(&log)?;
    let err = out.try_clone()?;
    let child = Command::new("sh")
        .arg("-c")
        .arg(r#"echo $$ > "$0/cgroup.procs" && exec "$@""#)
        .arg(&cgroup)
        .args(&argv)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0)
        .spawn()
        .context("cannot start the agent again")?;
    let new_pid = i32::try_from(child.id())?;
    let new_start = start_time(new_pid).context("the new agent vanished")?;
    entry["pid"] = new_pid.into();
    entry["start_time"] = new_start.into();
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(&state)?)?;
    std::fs::rename(&tmp, &path)?;
    Ok(new_pid)
}

/// Whether `pid` is gone or a zombie (killed, not yet reaped by its parent).
fn zombie_or_gone(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |s| {
        s.rfind(')')
            .and_then(|i| s[i + 1..].split_whitespace().next().map(|st| st == "Z"))
            .unwrap_or(true)
    })
}

/// Seconds since midnight UTC of a CRI log line's RFC 3339 time.
fn cri_seconds(time: &str) -> Option<f64> {
    let clock = time.split('T').nth(1)?.trim_end_matches('Z');
    let mut parts = clock.split(':');
    let (h, m, s) = (parts.next()?, parts.next()?, parts.next()?);
    Some(h.parse::<f64>().ok()? * 3600.0 + m.parse::<f64>().ok()? * 60.0 + s.parse::<f64>().ok()?)
}

/// The client pod's echoes from its raw CRI log: (numbers in order, the
/// longest time between two lines, whether the connection closed).
fn client_echoes(c: &Cluster, pod: &Pod) -> Result<(Vec<u64>, f64, bool)> {
    let node = c.node_of(pod)?;
    let uid = pod.metadata.uid.as_deref().context("no uid")?;
    let dir = std::fs::read_dir(&node.pod_log_dir)?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().ends_with(uid))
        })
        .context("no log directory of the client pod")?;
    let raw = std::fs::read_to_string(dir.join("client").join("0.log"))?;
    let (mut numbers, mut max_gap, mut closed, mut last) = (Vec::new(), 0.0f64, false, None);
    for line in raw.lines() {
        let mut parts = line.splitn(4, ' ');
        let (Some(time), Some(_), Some(_), Some(text)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let Some(mut t) = cri_seconds(time) else {
            continue;
        };
        if let Some(prev) = last {
            if t < prev {
                t += 86_400.0; // past midnight
            }
            max_gap = max_gap.max(t - prev);
        }
        last = Some(t);
        match text.trim() {
            "CLOSED" => closed = true,
            n => numbers.push(n.parse().with_context(|| format!("log line {line:?}"))?),
        }
    }
    Ok((numbers, max_gap, closed))
}

#[tokio::test]
#[ignore = "e2e: needs the local cluster from cargo xtask test"]
async fn e2e_agent_restart_under_load_drops_no_connection() -> Result<()> {
    let c = Cluster::connect().await?;
    let sfx = unique_suffix();
    c.apply_ok(&manifests(&sfx))?;
    let result = run(&c, &sfx).await;
    for name in [
        format!("rs-client-{sfx}"),
        format!("rs-tcp-{sfx}"),
        format!("rs-udp-{sfx}"),
    ] {
        let _ = c
            .client
            .delete::<Pod>(NS, &name, &DeleteParams::default())
            .await;
    }
    for name in [format!("rs-tcp-{sfx}"), format!("rs-udp-{sfx}")] {
        let _ = c
            .client
            .delete::<Service>(NS, &name, &DeleteParams::default())
            .await;
    }
    result
}

async fn run(c: &Cluster, sfx: &str) -> Result<()> {
    running(c, &format!("rs-tcp-{sfx}")).await?;
    running(c, &format!("rs-udp-{sfx}")).await?;
    wait_endpoints(c, &format!("rs-tcp-{sfx}")).await?;
    wait_endpoints(c, &format!("rs-udp-{sfx}")).await?;
    let tcp_vip = cluster_ip(c, &format!("rs-tcp-{sfx}")).await?;
    let node_port = node_port(c, &format!("rs-tcp-{sfx}")).await?;
    let udp_vip = cluster_ip(c, &format!("rs-udp-{sfx}")).await?;
    // Every node's datapath serves both VIPs before any traffic starts.
    for node in &c.info.nodes {
        for frontend in [format!("{tcp_vip}:9000"), format!("{udp_vip}:9001")] {
            wait_for(
                &format!("{frontend} on {}", node.name),
                Duration::from_secs(30),
                || async {
                    Ok(match c.datapath_backends(node, &frontend)? {
                        Some(b) if !b.is_empty() => Check::Done(()),
                        other => Check::Waiting(format!("{other:?}")),
                    })
                },
            )
            .await?;
        }
    }

    let client_name = format!("rs-client-{sfx}");
    c.apply_ok(&client_pod(sfx, &tcp_vip.to_string()))?;
    let client = running(c, &client_name).await?;
    let netns = pod_netns(&c.node_of(&client)?.cri_socket, &client).await?;
    wait_for(
        "the client pod's echoes",
        Duration::from_secs(30),
        || async {
            let (numbers, _, closed) = client_echoes(c, &client)?;
            Ok(if closed {
                Check::Failed("the client's connection closed before the restart".into())
            } else if numbers.len() >= 10 {
                Check::Done(())
            } else {
                Check::Waiting(format!("{} echoes", numbers.len()))
            })
        },
    )
    .await?;

    let stop = Arc::new(AtomicBool::new(false));
    let mut flows = vec![
        (
            "TCP via ClusterIP (tc path)".to_string(),
            tcp_flow(
                netns.clone(),
                stop.clone(),
                SocketAddrV4::new(tcp_vip, 9000),
            ),
        ),
        (
            "UDP via ClusterIP (tc path)".to_string(),
            udp_flow(netns.clone(), stop.clone(), udp_vip),
        ),
    ];
    // From outside the cluster: the NodePort on every node's address.
    match &c.info.external {
        Some(ext) => {
            for node in &c.info.nodes {
                flows.push((
                    format!("TCP via NodePort of {} from {}", node.name, ext.netns),
                    tcp_flow(
                        PathBuf::from(format!("/run/netns/{}", ext.netns)),
                        stop.clone(),
                        SocketAddrV4::new(node.ip, node_port),
                    ),
                ));
            }
        }
        None => eprintln!("[e2e] no external namespace in the cluster file: no NodePort flow"),
    }
    tokio::time::sleep(BEFORE).await;
    let restarted = Instant::now();
    let nodes: Vec<String> = c.info.nodes.iter().map(|n| n.name.clone()).collect();
    let mut new_pids = Vec::new();
    for node in &nodes {
        let node = node.clone();
        new_pids.push(tokio::task::spawn_blocking(move || restart_agent(&node)).await??);
    }
    tokio::time::sleep(AFTER).await;
    stop.store(true, Ordering::Relaxed);
    let mut failures = Vec::new();
    for (name, flow) in flows {
        let report = flow
            .join()
            .map_err(|_| anyhow::anyhow!("the {name} thread panicked"))?;
        eprintln!(
            "[e2e] {name}: {} answered, longest gap {:?}, errors {:?}",
            report.answered, report.max_gap, report.errors
        );
        let least = (BEFORE + AFTER).as_millis() as u64 / 40;
        if !report.errors.is_empty() || report.max_gap > MAX_GAP || report.answered < least {
            failures.push(format!(
                "{name}: {} answered (want ≥ {least}), longest gap {:?}, errors {:?}",
                report.answered, report.max_gap, report.errors
            ));
        }
    }
    let (numbers, max_gap, closed) = client_echoes(c, &client)?;
    eprintln!(
        "[e2e] client pod (socket LB): {} echoes, longest gap {max_gap:.3} s, closed {closed}",
        numbers.len()
    );
    let in_order = numbers.iter().zip(0u64..).all(|(n, i)| *n == i);
    let least = (restarted.elapsed().as_millis() as u64) / 100;
    if closed || !in_order || max_gap > MAX_GAP.as_secs_f64() || (numbers.len() as u64) < least {
        failures.push(format!(
            "client pod: {} echoes (want ≥ {least}, in order: {in_order}), longest gap {max_gap:.3} s, closed {closed}",
            numbers.len()
        ));
    }
    for pid in &new_pids {
        ensure!(
            !zombie_or_gone(*pid),
            "the restarted agent (pid {pid}) exited"
        );
    }
    // The new agent's datapath takes new connections too.
    let fresh = std::thread::spawn(move || -> Result<()> {
        let f = File::open(&netns)?;
        nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET).context("setns")?;
        let s = TcpStream::connect_timeout(
            &SocketAddrV4::new(tcp_vip, 9000).into(),
            Duration::from_secs(2),
        )?;
        s.set_read_timeout(Some(MAX_GAP))?;
        let mut r = BufReader::new(s.try_clone()?);
        writeln!(&s, "fresh")?;
        let mut line = String::new();
        r.read_line(&mut line)?;
        ensure!(line.trim() == "fresh", "echo {line:?}");
        Ok(())
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the new-connection thread panicked"))?;
    if let Err(e) = fresh {
        failures.push(format!("a new connection after the restart: {e:#}"));
    }
    if !failures.is_empty() {
        bail!(
            "restarting weir-agent disturbed traffic:\n{}",
            failures.join("\n")
        );
    }
    Ok(())
}
