//! weir-agent: the node agent. Registers its Node, runs the node's pods
//! through containerd's CRI, and runs the eBPF datapath (service maps, pod
//! veth programs).
//!
//! Start-up order matters: enter the node's network namespace while the
//! process is single-threaded (before the tokio runtime exists), then talk to
//! the API server over its unix socket, register, wait for the pod CIDR,
//! write the CNI configuration, load the datapath, and only then start pods.
//!
//! Modules:
//! - `config`: flags -> plain `Config`.
//! - `sys`: the process-level syscalls (setns into the node netns, bpffs mount).
//! - `node`: Node registration, heartbeats (Ready follows containerd's health),
//!   the CNI conflist, ip_forward.
//! - `cri`: a typed CRI (runtime.v1) client over containerd's unix socket.
//! - `pods`: watch this node's Pods -> store -> one worker per pod uid:
//!   observe (CRI) -> `plan` (pure) -> execute -> `status` (pure) -> update_status.
//! - `cgroup`: pod-level cgroup parents in every hierarchy.
//! - `routes`: routes to the other nodes' pod CIDRs (watch Nodes, pure plan,
//!   rtnetlink), natively or through VXLAN (`overlay`: the pure decisions),
//!   and masquerade's non-masqueraded destinations.
//! - `clock`: the wall clock, read only by the I/O loops.
//! - `api`: the node API (flows for `weir observe`, datapath views for
//!   `weir datapath`) and the Prometheus endpoint.
//!
//! The eBPF datapath (loading BPF, pinned maps, Service sync) is the
//! `weir-datapath` crate in agent/datapath; this binary only wires it in.
#![forbid(unsafe_code)]

mod api;
mod cgroup;
mod clock;
mod config;
mod cri;
mod node;
mod overlay;
mod pods;
mod routes;
mod sys;

use std::fmt::Display;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use tracing::{error, info, warn};
use weir_datapath as datapath;

use config::{Args, Config};
use pods::spec::NodeEnv;
use pods::{NetworkHook, WorkerContext};

fn main() -> anyhow::Result<()> {
    let cfg = Config::try_from(Args::parse())?;
    tracing_subscriber::fmt()
        // Colour codes only on a terminal: daemons usually log to files.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    if let Some(netns) = &cfg.netns {
        sys::enter_netns(netns)?;
        info!(netns = %netns.display(), "entered the node's network namespace");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("weir-agent")
        .build()
        .context("cannot start the tokio runtime")?;
    runtime.block_on(run(cfg))
}

/// Retries `f` until it succeeds, logging each failure (the API server and
/// containerd may start after the agent).
async fn retry<T, E, F, Fut>(what: &str, mut f: F) -> T
where
    E: Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut delay = Duration::from_millis(200);
    loop {
        match f().await {
            Ok(v) => return v,
            Err(error) => {
                warn!(error = %error, retry_in = ?delay, "{what} failed");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

async fn run(cfg: Config) -> anyhow::Result<()> {
    node::enable_ip_forward().context("cannot enable IPv4 forwarding in the node's namespace")?;

    let api = retry("connecting to the API server", || {
        weir_client::Client::connect(&cfg.server)
    })
    .await;
    let cri = retry("connecting to containerd", || {
        cri::CriClient::connect(&cfg.cri_socket)
    })
    .await;
    let version = retry("querying the CRI version", || cri.version()).await;
    info!(runtime = %version.runtime_name, version = %version.runtime_version, "connected to the container runtime");

    let facts = node::NodeFacts::gather(
        &cfg.node_name,
        &cfg.node_ip.to_string(),
        cfg.max_pods,
        &version,
    );
    retry("registering the node", || node::register(&api, &facts)).await;
    tokio::spawn(node::heartbeat(
        api.clone(),
        cri.clone(),
        facts,
        cfg.heartbeat,
    ));

    let pod_cidr = node::wait_for_pod_cidr(&api, &cfg.node_name).await?;
    // Pods get the node network's MTU minus what encapsulation adds.
    let conflist = node::cni_conflist(pod_cidr, &cfg.ipam_dir(), cfg.routing_mode.pod_mtu(cfg.mtu));
    let path = node::write_cni_conflist(&cfg.cni_conf_dir, &conflist)?;
    info!(pod_cidr = %pod_cidr, path = %path.display(), "CNI configuration written");

    let cgroups = cgroup::Cgroups::detect(&cfg.cgroup_root)?;
    // Policy names for flow records; the policy sync publishes into it.
    let policy_names = datapath::flows::PolicyNames::default();
    let (network, datapath) = start_datapath(&cfg, &cgroups, &api, &policy_names)?;
    api::start(
        api::ApiConfig {
            node_name: cfg.node_name.clone(),
            bpffs_dir: cfg.bpffs_dir.clone(),
            api_addr: cfg.api_addr,
            metrics_addr: cfg.metrics_addr,
        },
        api.clone(),
        policy_names.clone(),
    );
    let routes_api = api.clone();
    let route_cfg = routes::RouteConfig {
        self_name: cfg.node_name.clone(),
        mode: cfg.routing_mode,
        node_ip: cfg.node_ip,
        pod_cidr,
    };
    let masq = routes::MasqueradeSync {
        datapath,
        pod_cidr: cfg.masquerade.then_some(pod_cidr),
        configured: cfg.non_masquerade_cidrs.clone(),
    };
    tokio::spawn(async move {
        if let Err(error) = routes::run_route_sync(routes_api, route_cfg, Some(masq)).await {
            error!(error = %error, "cannot manage routes to other nodes' pods");
        }
    });

    let ctx = Arc::new(WorkerContext {
        cri,
        api,
        cgroups,
        env: NodeEnv {
            cgroup_parent: cfg.cgroup_parent.clone(),
            pod_log_dir: cfg.pod_log_dir.clone(),
        },
        node_ip: cfg.node_ip.to_string(),
        network,
        poll: cfg.pod_poll,
    });
    tokio::spawn(pods::reconcile_ipam(
        ctx.cri.clone(),
        cfg.ipam_dir(),
        pod_cidr,
    ));
    let pods = tokio::spawn(pods::run(ctx, cfg.node_name.clone(), cfg.resync));

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => info!("interrupted; exiting (pods keep running)"),
        _ = term.recv() => info!("terminated; exiting (pods keep running)"),
        r = pods => {
            error!(result = ?r, "the pod manager stopped");
            anyhow::bail!("the pod manager stopped");
        }
    }
    Ok(())
}

/// Where the bpf file system is conventionally mounted.
const BPFFS_ROOT: &str = "/sys/fs/bpf";

/// Attaches the datapath's pod programs to new pod veths, and hands pod
/// workers the NetworkPolicy sync (when policy is enforced).
struct DatapathHook {
    dp: Arc<Mutex<datapath::Datapath>>,
    policy: Option<datapath::policy::PolicyHandle>,
}

impl NetworkHook for DatapathHook {
    fn sandbox_network_ready(&self) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        // A panic while holding the lock cannot leave the attach bookkeeping
        // half-written in a way a later attach does not repair, so keep going.
        let mut dp = self.dp.lock().unwrap_or_else(PoisonError::into_inner);
        dp.attach_pod_interfaces().map_err(Into::into)
    }

    fn policy(&self) -> Option<&datapath::policy::PolicyHandle> {
        self.policy.as_ref()
    }
}

/// The loaded datapath, shared by the pod hook, the Service sync and masquerade.
type SharedDatapath = Arc<Mutex<datapath::Datapath>>;

/// Loads the eBPF datapath, attaches it to the pod veths that already exist
/// (pods that survived an agent restart) and starts the Service sync.
/// Without a datapath Services cannot work, so a load failure is fatal.
/// Returns the hook for new pods and the datapath (for masquerade).
fn start_datapath(
    cfg: &Config,
    cgroups: &cgroup::Cgroups,
    api: &weir_client::Client,
    policy_names: &datapath::flows::PolicyNames,
) -> anyhow::Result<(Arc<dyn NetworkHook>, SharedDatapath)> {
    let bpffs = std::path::Path::new(BPFFS_ROOT);
    if cfg.bpffs_dir.starts_with(bpffs) && sys::ensure_bpffs(bpffs)? {
        info!(path = BPFFS_ROOT, "mounted the bpf file system");
    }
    // The node's cgroup2 subtree holds every pod's processes: attaching there
    // gives all of them socket-level load balancing. It must exist first.
    cgroups.create(&cfg.cgroup_parent)?;
    let cgroup_dir = cgroups.cgroup2_dir(&cfg.cgroup_parent);
    if cgroup_dir.is_none() {
        warn!("no cgroup2 hierarchy: services use the per-packet tc path only");
    }
    let node = match node::interface_with_address(cfg.node_ip) {
        Ok(Some(interface)) => Some(datapath::NodeConfig {
            name: cfg.node_name.clone(),
            ip: cfg.node_ip,
            interface,
            xdp_mode: cfg.xdp_mode,
        }),
        Ok(None) => {
            warn!(node_ip = %cfg.node_ip, "no interface carries --node-ip: NodePort is off");
            None
        }
        Err(error) => {
            warn!(error = %error, "cannot list interfaces: NodePort is off");
            None
        }
    };
    let full = datapath::DatapathConfig {
        bpffs_dir: cfg.bpffs_dir.clone(),
        cgroup_dir,
        node,
    };
    let limits = &cfg.policy_limits;
    let mut dp = match datapath::Datapath::load_with_policy_limits(&full, limits) {
        Ok(dp) => dp,
        // Socket-level load balancing and NodePort add to the per-packet tc
        // path, which alone still serves every ClusterIP: degrade, loudly,
        // rather than leave the node without a datapath.
        Err(error) if full.cgroup_dir.is_some() || full.node.is_some() => {
            let error = anyhow::Error::new(error);
            warn!(
                error = format!("{error:#}"),
                "socket-level load balancing and NodePort unavailable; ClusterIPs use the per-packet tc path only"
            );
            let tc_only = datapath::DatapathConfig {
                cgroup_dir: None,
                node: None,
                ..full
            };
            datapath::Datapath::load_with_policy_limits(&tc_only, limits)
                .context("cannot load the eBPF datapath")?
        }
        Err(error) => {
            return Err(anyhow::Error::new(error).context("cannot load the eBPF datapath"));
        }
    };
    // The pod fast path; its registrations follow the pod attachments.
    if let Err(error) = dp.set_pod_redirect(cfg.pod_redirect) {
        let error = anyhow::Error::new(error);
        warn!(
            error = format!("{error:#}"),
            "cannot switch the pod fast path; local pod traffic takes the node's stack"
        );
    }
    // The NetworkPolicy sync owns its maps (no lock shared with the Service
    // sync, so policy changes never wait for a service update).
    let policy = match dp.take_policy_maps() {
        Ok(Some((maps, actual))) => Some(start_policy_sync(cfg, api, maps, actual, policy_names)),
        Ok(None) => {
            warn!("the eBPF programs have no NetworkPolicy maps: NetworkPolicy is not enforced");
            None
        }
        Err(error) => {
            let error = anyhow::Error::new(error);
            error!(
                error = format!("{error:#}"),
                "cannot open the NetworkPolicy maps: NetworkPolicy is not enforced"
            );
            None
        }
    };
    let dp = Arc::new(Mutex::new(dp));
    let hook = DatapathHook {
        dp: dp.clone(),
        policy,
    };
    let handle = dp.clone();
    if let Err(error) = hook.sandbox_network_ready() {
        warn!(error = %error, "cannot attach the datapath to existing pod interfaces");
    }
    let api = api.clone();
    let forwarding = datapath::plan::Forwarding {
        default: cfg.lb_mode,
        dsr_possible: cfg.routing_mode == crate::overlay::RoutingMode::Native,
    };
    tokio::spawn(async move {
        if let Err(error) = datapath::run_service_sync(api, dp, forwarding).await {
            error!(error = %error, "the service sync stopped; Services are no longer updated");
        }
    });
    Ok((Arc::new(hook), handle))
}

/// Spawns the NetworkPolicy sync over the maps taken from the datapath
/// (`actual`: their kernel capacities) and returns the pod workers' handle.
fn start_policy_sync(
    cfg: &Config,
    api: &weir_client::Client,
    maps: datapath::policy::PolicyKernelMaps,
    actual: datapath::policy::PolicyLimits,
    names: &datapath::flows::PolicyNames,
) -> datapath::policy::PolicyHandle {
    if actual != cfg.policy_limits {
        warn!(
            configured = ?cfg.policy_limits,
            actual = ?actual,
            "the pinned NetworkPolicy maps keep the sizes they were created with (remove the node's bpffs directory to resize them)"
        );
    }
    let (handle, admissions) = datapath::policy::PolicyHandle::channel();
    let sync_cfg = datapath::policy::PolicySyncConfig {
        node_name: cfg.node_name.clone(),
        cluster_cidr: cfg.cluster_cidr,
        conntrack_pin_dir: Some(cfg.bpffs_dir.clone()),
    };
    let (api, names) = (api.clone(), names.clone());
    tokio::spawn(async move {
        let publish = move |ids| names.replace(ids);
        let sync =
            datapath::policy::run_policy_sync(api, maps, actual, sync_cfg, admissions, publish);
        if let Err(error) = sync.await {
            error!(error = %error, "the NetworkPolicy sync stopped; policy changes are no longer applied");
        }
    });
    info!(limits = ?actual, "NetworkPolicy sync started");
    handle
}
