//! `cargo xtask up`: a local cluster in network namespaces.
//!
//! Host netns: weir-control (+ its embedded etcd) and the push registry.
//! Per node netns: a registry serving the same storage on 127.0.0.1:5000,
//! containerd (entered with `nsenter --net`) and weir-agent (which setns()es
//! itself). Every daemon runs in a cgroup2 group owned by the cluster.

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::Node;

use super::procs::{self, Daemon};
use super::state::{ClusterState, Routing};
use super::{cleanup, config, topology};
use crate::build::Binaries;
use crate::cmd::{self, cmd, info, step};
use crate::images::{self, Image};
use crate::layout::{CLUSTER_CIDR, Layout, NODE_REGISTRY_PORT, NodeLayout};

/// How `up` was asked to run.
#[derive(Debug, Clone)]
pub struct UpOptions {
    pub nodes: u8,
    /// Apply the demo workload after the nodes are Ready.
    pub demo: bool,
    /// Write ~/.weir/config.yaml pointing at this cluster.
    pub write_cli_config: bool,
    /// The agents' routing mode.
    pub routing: Routing,
}

/// A cluster being started: the layout, the state file contents, the live children.
pub(crate) struct Starting<'a> {
    layout: &'a Layout,
    pub(crate) state: ClusterState,
    daemons: Vec<Daemon>,
}

impl<'a> Starting<'a> {
    /// Creates the cluster's directories and its (empty) state file.
    pub(crate) fn new(
        layout: &'a Layout,
        nodes: &[NodeLayout],
        bin_dir: &Path,
        routing: Routing,
    ) -> Result<Starting<'a>> {
        for d in [
            layout.logs_dir(),
            layout.control_state_dir(),
            layout.run_dir(),
            layout.registry_storage(),
            layout.cni_bin_dir(),
        ] {
            fs::create_dir_all(&d).with_context(|| format!("cannot create {}", d.display()))?;
        }
        let s = Starting {
            layout,
            state: ClusterState::new(layout, nodes, bin_dir, routing),
            daemons: Vec::new(),
        };
        s.state.save(&layout.state_file())?;
        Ok(s)
    }

    /// Everything below the weir components: the underlay, the registries with
    /// the test images, and each node's containerd.
    pub(crate) fn start_infra(&mut self, nodes: &[NodeLayout]) -> Result<()> {
        let layout = self.layout;
        let built = images::build_all()?;
        topology::create(layout, nodes)?;
        // Registry in the host netns: the push target (and for users' own images).
        step("starting the image registry");
        fs::write(
            layout.registry_host_config(),
            config::registry(&layout.registry_storage(), layout.ports.registry),
        )?;
        fs::write(
            layout.registry_node_config(),
            config::registry(&layout.registry_storage(), NODE_REGISTRY_PORT),
        )?;
        self.start(
            "registry/host",
            &layout.control_cgroup(),
            argv(
                ["/usr/bin/docker-registry", "serve"],
                [&layout.registry_host_config()],
            ),
        )?;
        let reg_port = layout.ports.registry;
        self.wait_for("registry (host)", Duration::from_secs(30), || {
            Ok(port_open(reg_port))
        })?;
        images::push_all(&built, reg_port, &layout.registry_storage())?;
        for n in nodes {
            self.start_node_runtime(n)?;
        }
        Ok(())
    }

    fn start(&mut self, name: &str, cgroup: &Path, argv: Vec<String>) -> Result<()> {
        let log = self
            .layout
            .logs_dir()
            .join(format!("{}.log", name.replace('/', "-")));
        let d = procs::spawn(name, cgroup, &argv, &log)?;
        self.state.processes.push(d.record.clone());
        self.daemons.push(d);
        self.state.save(&self.layout.state_file())
    }

    /// Fails (showing its log) if a daemon already exited.
    fn check_alive(&mut self) -> Result<()> {
        for d in &mut self.daemons {
            if let Some(status) = d.exited() {
                bail!(
                    "{} exited during start-up ({status}); last lines of {}:\n{}",
                    d.record.name,
                    d.record.log.display(),
                    procs::tail(&d.record.log, 30)
                );
            }
        }
        Ok(())
    }

    /// Polls `probe` until it succeeds, failing early if a daemon dies.
    fn wait_for(
        &mut self,
        what: &str,
        timeout: Duration,
        mut probe: impl FnMut() -> Result<bool>,
    ) -> Result<()> {
        let t0 = Instant::now();
        loop {
            self.check_alive()?;
            if probe()? {
                info(format!(
                    "{what}: ready after {:.1}s",
                    t0.elapsed().as_secs_f32()
                ));
                return Ok(());
            }
            if t0.elapsed() > timeout {
                bail!(
                    "{what}: not ready after {timeout:?} (logs in {})",
                    self.layout.logs_dir().display()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// Whether the cluster described by the state file is already running.
pub fn running(layout: &Layout) -> Option<ClusterState> {
    let state = ClusterState::load(&layout.state_file()).ok().flatten()?;
    (!state.processes.is_empty() && state.processes.iter().all(procs::is_alive)).then_some(state)
}

/// Brings the cluster up; returns its state.
pub fn up(layout: &Layout, bins: &Binaries, opts: &UpOptions) -> Result<ClusterState> {
    cmd::require_root("up")?;
    cmd::ensure_bpffs()?;
    if opts.nodes == 0 || opts.nodes > 50 {
        bail!("--nodes must be between 1 and 50 (got {})", opts.nodes);
    }
    if let Some(state) = running(layout) {
        step(format!(
            "cluster {:?} is already up ({} nodes); `cargo xtask down --name {}` first to rebuild it",
            layout.name,
            state.nodes.len(),
            layout.name
        ));
        return Ok(state);
    }
    // Leftovers of an earlier run (crash, partial up) would collide with everything below.
    if layout.state_dir().exists()
        || layout.run_dir().exists()
        || Path::new(&format!("/run/netns/{}-node1", layout.name)).exists()
    {
        cleanup::down(layout)?;
    }
    check_ports_free(layout)?;

    let nodes: Vec<NodeLayout> = (1..=opts.nodes).map(|i| layout.node(i)).collect();
    let mut s = Starting::new(layout, &nodes, &bins.dir, opts.routing)?;
    s.start_infra(&nodes)?;

    step("starting weir-control");
    let control = vec![
        bins.control().display().to_string(),
        "--state-dir".into(),
        layout.control_state_dir().display().to_string(),
        "--embedded-etcd-port".into(),
        layout.ports.etcd.to_string(),
        "--listen".into(),
        format!("127.0.0.1:{}", layout.ports.api),
        "--unix-socket".into(),
        layout.unix_socket().display().to_string(),
        "--cluster-cidr".into(),
        CLUSTER_CIDR.into(),
    ];
    s.start("control", &layout.control_cgroup(), control)?;
    // weir-control writes its etcd's output next to the data; show it with the other logs.
    let _ = std::os::unix::fs::symlink(
        layout.control_state_dir().join("etcd.log"),
        layout.logs_dir().join("etcd.log"),
    );
    let server = layout.server_url();
    s.wait_for("API server", Duration::from_secs(90), || {
        Ok(api_answers(&server))
    })?;

    step("preparing the CNI bin dir");
    link_cni_plugins(layout, Some(&bins.cni()))?;
    for n in &nodes {
        s.start_agent(n, bins)?;
    }

    wait_nodes_ready(&mut s, &nodes)?;
    let state = s.state.clone();
    if opts.write_cli_config {
        write_cli_config(&server)?;
    }
    if opts.demo {
        super::demo::apply(layout, bins)?;
    }
    Ok(state)
}

impl Starting<'_> {
    /// A node's registry (same storage as the host one) and containerd, both in its netns.
    fn start_node_runtime(&mut self, n: &NodeLayout) -> Result<()> {
        step(format!(
            "starting the runtime of {} (netns {}, {})",
            n.name, n.netns, n.ip
        ));
        for d in [
            &n.state_dir,
            &n.run_dir,
            &n.cni_conf_dir,
            &n.pod_log_dir,
            &n.ipam_dir,
            &n.containerd_root,
            &n.containerd_state,
        ] {
            fs::create_dir_all(d).with_context(|| format!("cannot create {}", d.display()))?;
        }
        let net = format!("--net={}", topology::netns_path(&n.netns));
        let layout = self.layout;

        self.start(
            &format!("registry/{}", n.name),
            &n.daemon_cgroup,
            argv(
                ["nsenter", &net, "/usr/bin/docker-registry", "serve"],
                [&layout.registry_node_config()],
            ),
        )?;
        let probe_net = net.clone();
        self.wait_for(
            &format!("registry in {}", n.netns),
            Duration::from_secs(30),
            || {
                Ok(cmd::succeeds(&mut cmd(
                    "nsenter",
                    [
                        probe_net.as_str(),
                        "/bin/busybox",
                        "wget",
                        "-q",
                        "-O",
                        "/dev/null",
                        "http://127.0.0.1:5000/v2/",
                    ],
                )))
            },
        )?;

        fs::write(
            &n.containerd_config,
            config::containerd(
                n,
                &layout.cni_bin_dir(),
                &Image::Pause.reference(NODE_REGISTRY_PORT),
            ),
        )?;
        self.start(
            &format!("containerd/{}", n.name),
            &n.daemon_cgroup,
            argv(
                ["nsenter", &net, "/usr/bin/containerd", "--config"],
                [&n.containerd_config],
            ),
        )?;
        let sock = n.cri_socket.clone();
        self.wait_for(
            &format!("containerd of {}", n.name),
            Duration::from_secs(30),
            || Ok(sock.exists()),
        )
    }

    /// The node's weir-agent; it enters the node netns itself (setns before its runtime starts).
    fn start_agent(&mut self, n: &NodeLayout, bins: &Binaries) -> Result<()> {
        step(format!("starting the agent of {}", n.name));
        let argv = agent_argv(self.layout, n, &bins.agent(), self.state.routing);
        self.start(&format!("agent/{}", n.name), &n.daemon_cgroup, argv)
    }
}

/// The command line of node `n`'s weir-agent.
pub(crate) fn agent_argv(
    layout: &Layout,
    n: &NodeLayout,
    agent: &Path,
    routing: Routing,
) -> Vec<String> {
    vec![
        agent.display().to_string(),
        "--node-name".into(),
        n.name.clone(),
        "--server".into(),
        layout.agent_server_url(),
        "--netns".into(),
        topology::netns_path(&n.netns),
        "--node-ip".into(),
        n.ip.to_string(),
        "--cri-socket".into(),
        n.cri_socket.display().to_string(),
        "--state-dir".into(),
        n.state_dir.display().to_string(),
        "--bpffs-dir".into(),
        n.bpffs_dir.display().to_string(),
        "--cgroup-parent".into(),
        n.cgroup_parent.clone(),
        "--cni-conf-dir".into(),
        n.cni_conf_dir.display().to_string(),
        "--pod-log-dir".into(),
        n.pod_log_dir.display().to_string(),
        "--routing-mode".into(),
        routing.as_str().into(),
        "--cluster-cidr".into(),
        CLUSTER_CIDR.into(),
    ]
}

/// `cargo xtask restart-agent NODE`: kills the node's weir-agent with SIGKILL
/// (a crash, not a clean exit), found by the PID and start time the state
/// file recorded, and starts it again with the same flags in the same cgroup.
/// The state file then records the new process. Pods, their veths and the
/// pinned datapath are left as they are: that is what a restart must keep.
pub fn restart_agent(layout: &Layout, node: &str) -> Result<()> {
    cmd::require_root("restart-agent")?;
    let mut state = ClusterState::load(&layout.state_file())?
        .with_context(|| format!("cluster {:?} is not up", layout.name))?;
    let n = state
        .nodes
        .iter()
        .position(|s| s.name == node)
        .and_then(|i| u8::try_from(i + 1).ok())
        .map(|i| layout.node(i))
        .filter(|n| n.name == node)
        .with_context(|| {
            let names: Vec<&str> = state.nodes.iter().map(|n| n.name.as_str()).collect();
            format!(
                "cluster {:?} has no node {node:?} (nodes: {names:?})",
                layout.name
            )
        })?;
    let proc_name = format!("agent/{node}");
    let slot = state
        .processes
        .iter()
        .position(|p| p.name == proc_name)
        .with_context(|| format!("the state file records no process {proc_name}"))?;
    let old = state.processes[slot].clone();
    if procs::is_alive(&old) {
        step(format!("killing {proc_name} (pid {})", old.pid));
        procs::kill_all(&[old.pid], Duration::from_secs(10))?;
    } else {
        info(format!("{proc_name} (pid {}) was not running", old.pid));
    }
    let agent = state.bin_dir.join("weir-agent");
    let argv = agent_argv(layout, &n, &agent, state.routing);
    step(format!("starting {proc_name} again"));
    let d = procs::spawn(&proc_name, &n.daemon_cgroup, &argv, &old.log)?;
    info(format!("{proc_name}: new pid {}", d.record.pid));
    state.processes[slot] = d.record;
    state.save(&layout.state_file())
}

fn argv<const N: usize, const M: usize>(head: [&str; N], paths: [&Path; M]) -> Vec<String> {
    head.iter()
        .map(|s| s.to_string())
        .chain(paths.iter().map(|p| p.display().to_string()))
        .collect()
}

/// The CNI bin dir: weir-cni (a link to the built binary, so rebuilding updates it) and loopback.
pub(crate) fn link_cni_plugins(layout: &Layout, weir_cni: Option<&Path>) -> Result<()> {
    let dir = layout.cni_bin_dir();
    let mut plugins = vec![("loopback", PathBuf::from("/usr/lib/cni/loopback"))];
    plugins.extend(weir_cni.map(|p| ("weir-cni", p.to_path_buf())));
    for (name, target) in plugins {
        if !target.is_file() {
            bail!(
                "{} is missing (cargo xtask deps installs containernetworking-plugins; cargo xtask build builds weir-cni)",
                target.display()
            );
        }
        let link = dir.join(name);
        let _ = fs::remove_file(&link);
        std::os::unix::fs::symlink(&target, &link)
            .with_context(|| format!("cannot link {}", link.display()))?;
        info(format!("{} -> {}", link.display(), target.display()));
    }
    Ok(())
}

fn check_ports_free(layout: &Layout) -> Result<()> {
    let p = layout.ports;
    for (port, what) in [
        (p.api, "API server"),
        (p.etcd, "etcd client"),
        (p.etcd + 1, "etcd peer"),
        (p.registry, "registry"),
    ] {
        if TcpListener::bind(("127.0.0.1", port)).is_err() {
            bail!(
                "port 127.0.0.1:{port} ({what} of cluster {:?}) is in use by another process; \
                 stop it (Debian's etcd.service or docker-registry.service?) or run `cargo xtask down --name {}`",
                layout.name,
                layout.name
            );
        }
    }
    Ok(())
}

fn port_open(port: u16) -> bool {
    std::net::TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(300))
        .is_ok()
}

/// Runs a future on a throwaway runtime (xtask is synchronous elsewhere).
pub fn block_on<F: std::future::Future>(f: F) -> Result<F::Output> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    Ok(rt.block_on(f))
}

fn api_answers(server: &str) -> bool {
    block_on(async {
        let Ok(c) = weir_client::Client::connect(server).await else {
            return false;
        };
        c.list::<Node>("", &Default::default()).await.is_ok()
    })
    .unwrap_or(false)
}

/// Readiness of each expected node: `Ok(ready)` or a short reason.
pub fn node_readiness(nodes: &[Node], name: &str) -> Result<(), String> {
    let Some(n) = nodes
        .iter()
        .find(|n| n.metadata.name.as_deref() == Some(name))
    else {
        return Err("not registered".into());
    };
    let conds = n.status.as_ref().and_then(|s| s.conditions.as_ref());
    match conds.and_then(|c| c.iter().find(|c| c.type_ == "Ready")) {
        Some(c) if c.status == "True" => Ok(()),
        Some(c) => Err(format!(
            "Ready={} {}",
            c.status,
            c.reason.as_deref().unwrap_or("")
        )),
        None => Err("no Ready condition yet".into()),
    }
}

fn wait_nodes_ready(s: &mut Starting<'_>, nodes: &[NodeLayout]) -> Result<()> {
    step(format!("waiting for {} node(s) to be Ready", nodes.len()));
    let server = s.layout.server_url();
    let names: Vec<String> = nodes.iter().map(|n| n.name.clone()).collect();
    let mut last_report = Instant::now() - Duration::from_secs(10);
    s.wait_for("nodes", Duration::from_secs(180), || {
        let listed = block_on(async {
            let c = weir_client::Client::connect(&server).await?;
            c.list::<Node>("", &Default::default()).await
        })?;
        let items = match listed {
            Ok(l) => l.items,
            Err(e) => {
                info(format!("listing nodes: {e}"));
                return Ok(false);
            }
        };
        let status: Vec<(String, Result<(), String>)> = names
            .iter()
            .map(|n| (n.clone(), node_readiness(&items, n)))
            .collect();
        let all = status.iter().all(|(_, r)| r.is_ok());
        if !all && last_report.elapsed() >= Duration::from_secs(5) {
            last_report = Instant::now();
            let line: Vec<String> = status
                .iter()
                .map(|(n, r)| format!("{n}: {}", r.as_ref().err().map_or("Ready", |e| e.as_str())))
                .collect();
            info(line.join(", "));
        }
        Ok(all)
    })
}

/// Points the `weir` CLI at this cluster (`~/.weir/config.yaml`).
fn write_cli_config(server: &str) -> Result<()> {
    let home = std::env::var_os("HOME").context("HOME is not set")?;
    let dir = Path::new(&home).join(".weir");
    fs::create_dir_all(&dir)?;
    let path = dir.join("config.yaml");
    let old = fs::read_to_string(&path).unwrap_or_default();
    fs::write(&path, with_server(&old, server))?;
    info(format!("{}: server: {server}", path.display()));
    Ok(())
}

/// The CLI config with its top-level `server:` set to `server`; anything else
/// the user keeps there (contexts, current-context) stays as it is.
fn with_server(config: &str, server: &str) -> String {
    let line = format!("server: {server}");
    let mut replaced = false;
    let mut out: Vec<String> = config
        .lines()
        .map(|l| {
            if l.starts_with("server:") && !replaced {
                replaced = true;
                line.clone()
            } else {
                l.to_string()
            }
        })
        .collect();
    if !replaced {
        out.insert(0, line);
    }
    out.join("\n") + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{NodeCondition, NodeStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn node(name: &str, ready: Option<&str>) -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            status: ready.map(|r| NodeStatus {
                conditions: Some(vec![NodeCondition {
                    type_: "Ready".into(),
                    status: r.into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn cli_config_keeps_user_content() {
        let s = "http://127.0.0.1:6443";
        let cases = [
            ("", "server: http://127.0.0.1:6443\n"),
            ("server: http://old:1\n", "server: http://127.0.0.1:6443\n"),
            (
                "current-context: prod\ncontexts:\n- name: prod\n  server: http://prod:6443\n",
                "server: http://127.0.0.1:6443\ncurrent-context: prod\ncontexts:\n- name: prod\n  server: http://prod:6443\n",
            ),
            (
                "# mine\nserver: http://old:1\ncontexts: []\n",
                "# mine\nserver: http://127.0.0.1:6443\ncontexts: []\n",
            ),
        ];
        for (old, want) in cases {
            assert_eq!(with_server(old, s), want, "{old:?}");
        }
    }

    #[test]
    fn node_readiness_table() {
        let nodes = vec![
            node("node1", Some("True")),
            node("node2", Some("False")),
            node("node3", None),
        ];
        assert_eq!(node_readiness(&nodes, "node1"), Ok(()));
        assert!(
            node_readiness(&nodes, "node2")
                .unwrap_err()
                .contains("Ready=False")
        );
        assert_eq!(
            node_readiness(&nodes, "node3"),
            Err("no Ready condition yet".into())
        );
        assert_eq!(
            node_readiness(&nodes, "node4"),
            Err("not registered".into())
        );
    }
}
