//! weir-control: the API server (gRPC over etcd) plus the scheduler and the
//! controllers in one process, k3s-style. Without `--etcd` it runs its own
//! single-member etcd under `--state-dir`.
//!
//! A write flows: `service` (gRPC) -> `registry` (read, decide, write, retry)
//! -> `lifecycle` (pure: server-owned metadata, update merge, delete plan,
//! allocation keys) + `admission` (typed defaulting and validation from
//! `weir_api`) + `allocation` (cluster IPs, node ports, pod CIDRs) ->
//! `storage` (the only module that talks to etcd; one transaction per write;
//! a create reads nothing first, an update or delete of an object this
//! replica wrote last reads nothing first either: `written`).
//! Reads: `registry::list` with `filter` (label and field selectors); the
//! `ListStream` RPC sends a list one etcd page at a time. Watches:
//! `watch_cache` (one etcd watch per kind, fanned out; old revisions go
//! straight to etcd) -> `watch` (selector semantics, bookmarks).
//! `etcd_supervisor` runs the embedded etcd. `leader` elects one replica
//! (a Lease in kube-system) to run the scheduler and controllers; every
//! replica serves the API. `ttl` expires Events through etcd leases.
#![forbid(unsafe_code)]

mod admission;
mod allocation;
mod controllers;
mod decode;
mod error;
mod etcd_supervisor;
mod filter;
mod leader;
mod lifecycle;
mod object;
mod registry;
mod scheduler;
mod service;
mod storage;
mod ttl;
mod watch;
mod watch_cache;
mod written;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use ipnet::Ipv4Net;
use tokio::net::{TcpListener, UnixListener};
use tokio_stream::wrappers::{TcpListenerStream, UnixListenerStream};
use weir_client::ResourcesServer;

use crate::allocation::Ranges;
use crate::etcd_supervisor::{EtcdConfig, Supervisor};
use crate::registry::Registry;
use crate::storage::Storage;
use crate::watch_cache::WatchCache;

/// Command-line configuration.
#[derive(Debug, Parser)]
#[command(
    name = "weir-control",
    version,
    about = "weir API server, scheduler and controllers"
)]
struct Args {
    /// Directory for the embedded etcd's data and the default socket.
    #[arg(long)]
    state_dir: PathBuf,
    /// etcd endpoints (comma-separated). Empty: run an embedded etcd.
    #[arg(long, value_delimiter = ',')]
    etcd: Vec<String>,
    /// Client port of the embedded etcd (its peer port is this + 1).
    #[arg(long, default_value_t = 2379)]
    embedded_etcd_port: u16,
    /// TCP address of the API (CLI, tests).
    #[arg(long, default_value = "127.0.0.1:6443")]
    listen: SocketAddr,
    /// Unix socket of the API (agents in node network namespaces). Default: STATE_DIR/weir.sock.
    #[arg(long)]
    unix_socket: Option<PathBuf>,
    /// Range for Service cluster IPs.
    #[arg(long, default_value = "10.96.0.0/16")]
    service_cidr: Ipv4Net,
    /// Range split into per-node pod CIDRs.
    #[arg(long, default_value = "10.244.0.0/16")]
    cluster_cidr: Ipv4Net,
    /// Prefix length of each node's pod CIDR.
    #[arg(long, default_value_t = 24)]
    node_cidr_mask_size: u8,
    /// Addresses for LoadBalancer Services (status.loadBalancer.ingress);
    /// the default lies on the local cluster's node underlay (172.30.0.0/24).
    #[arg(long, default_value = "172.30.0.200/29")]
    lb_pool: Ipv4Net,
    /// How long an Event is kept after its last write (kube-apiserver's --event-ttl).
    #[arg(long, default_value_t = 3600)]
    event_ttl_seconds: u64,
    /// Run the scheduler and controllers only while holding the leader
    /// Lease (kube-system/weir-control), so replicas can share one etcd.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    leader_elect: bool,
    /// Followers take over this long after the leader's last renewal.
    #[arg(long, default_value_t = 15)]
    leader_elect_lease_duration_seconds: u64,
    /// A leader that cannot renew for this long stops leading.
    #[arg(long, default_value_t = 10)]
    leader_elect_renew_deadline_seconds: u64,
    /// How often to try to acquire or renew the Lease.
    #[arg(long, default_value_t = 2)]
    leader_elect_retry_period_seconds: u64,
}

impl Args {
    /// The election timing, checked like kube-controller-manager checks it.
    fn election(&self) -> anyhow::Result<leader::Config> {
        let cfg = leader::Config {
            namespace: "kube-system".into(),
            name: "weir-control".into(),
            identity: leader::identity(),
            lease_duration: Duration::from_secs(self.leader_elect_lease_duration_seconds),
            renew_deadline: Duration::from_secs(self.leader_elect_renew_deadline_seconds),
            retry_period: Duration::from_secs(self.leader_elect_retry_period_seconds),
        };
        anyhow::ensure!(
            cfg.renew_deadline < cfg.lease_duration,
            "--leader-elect-renew-deadline-seconds must be less than --leader-elect-lease-duration-seconds"
        );
        anyhow::ensure!(
            !cfg.retry_period.is_zero() && cfg.retry_period < cfg.renew_deadline,
            "--leader-elect-retry-period-seconds must be at least 1 and less than --leader-elect-renew-deadline-seconds"
        );
        Ok(cfg)
    }
}

/// How often etcd history is compacted (as kube-apiserver's default).
const COMPACTION_INTERVAL: Duration = Duration::from_secs(300);

/// How long open calls get to finish at shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        // Colour codes only on a terminal: daemons usually log to files.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    let election = args.election()?;
    std::fs::create_dir_all(&args.state_dir)
        .with_context(|| format!("cannot create state dir {}", args.state_dir.display()))?;

    let (endpoints, supervisor) = if args.etcd.is_empty() {
        let cfg = EtcdConfig {
            binary: "/usr/bin/etcd".into(),
            data_dir: args.state_dir.join("etcd"),
            log_file: args.state_dir.join("etcd.log"),
            client_port: args.embedded_etcd_port,
            peer_port: args
                .embedded_etcd_port
                .checked_add(1)
                .context("--embedded-etcd-port too large")?,
        };
        // An etcd our crashed predecessor left running holds the ports.
        etcd_supervisor::stop_stale(&cfg).await;
        // A busy port would make us talk to somebody else's etcd: refuse.
        for port in [cfg.client_port, cfg.peer_port] {
            std::net::TcpListener::bind(("127.0.0.1", port)).with_context(|| {
                format!("embedded etcd port 127.0.0.1:{port} is not free (another etcd running?)")
            })?;
        }
        let url = cfg.client_url();
        (vec![url], Some(Supervisor::spawn(cfg)))
    } else {
        (args.etcd.clone(), None)
    };

    let result = run(&args, &endpoints, election).await;
    if let Some(s) = supervisor {
        s.shutdown().await;
    }
    result
}

async fn run(args: &Args, endpoints: &[String], election: leader::Config) -> anyhow::Result<()> {
    let storage = connect_etcd(endpoints).await?;
    tokio::spawn(storage::run_compactor(storage.clone(), COMPACTION_INTERVAL));
    let ranges = Ranges {
        service_cidr: args.service_cidr,
        cluster_cidr: args.cluster_cidr,
        node_cidr_mask: args.node_cidr_mask_size,
        lb_pool: args.lb_pool,
    };
    let registry = Registry::new(
        storage,
        ranges,
        Duration::from_secs(args.event_ttl_seconds.max(1)),
    );
    for ns in ["default", "kube-system"] {
        registry
            .ensure_namespace(ns)
            .await
            .with_context(|| format!("cannot create namespace {ns}"))?;
    }
    registry
        .resume_namespace_deletions()
        .await
        .context("cannot resume namespace deletions")?;

    let socket = args
        .unix_socket
        .clone()
        .unwrap_or_else(|| args.state_dir.join("weir.sock"));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let servers = serve(registry, args.listen, &socket, stop_rx).await?;
    tracing::info!(listen = %args.listen, socket = %socket.display(), "API server ready");

    let client = weir_client::Client::connect(&format!("unix://{}", socket.display()))
        .await
        .context("cannot connect to our own API socket")?;
    let (leading_tx, leading_rx) = tokio::sync::watch::channel(false);
    let (elect_stop_tx, elect_stop_rx) = tokio::sync::watch::channel(false);
    let elector = if args.leader_elect {
        tracing::info!(identity = %election.identity, "leader election on");
        Some(tokio::spawn(leader::run(
            client.clone(),
            election,
            leading_tx,
            elect_stop_rx,
        )))
    } else {
        let _ = leading_tx.send(true);
        None
    };
    let components = tokio::spawn(run_while_leading(client, leading_rx));

    shutdown_signal().await?;
    tracing::info!("shutting down");
    // In-process clients first, so they do not retry against a closing
    // server; then the elector releases the Lease while the API still serves.
    components.abort();
    let _ = components.await;
    let _ = elect_stop_tx.send(true);
    if let Some(e) = elector
        && tokio::time::timeout(SHUTDOWN_GRACE, e).await.is_err()
    {
        tracing::warn!("leader lease not released in time; followers wait for it to expire");
    }
    let _ = stop_tx.send(true);
    for mut s in servers {
        // Graceful shutdown waits for open streams; watches never end by
        // themselves, so give in-flight calls a moment and then cut them.
        match tokio::time::timeout(SHUTDOWN_GRACE, &mut s).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(error))) => tracing::warn!(%error, "server ended with an error"),
            Ok(Err(error)) => tracing::warn!(%error, "server task failed"),
            Err(_) => s.abort(),
        }
    }
    let _ = std::fs::remove_file(&socket);
    Ok(())
}

/// Connects to etcd, waiting up to 60 s for it to answer (a fresh embedded
/// etcd needs a moment to elect itself).
async fn connect_etcd(endpoints: &[String]) -> anyhow::Result<Storage> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        match Storage::connect(endpoints).await {
            Ok(s) => {
                tracing::info!(?endpoints, "connected to etcd");
                return Ok(s);
            }
            Err(error) if tokio::time::Instant::now() < deadline => {
                tracing::debug!(%error, "etcd not ready yet");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(error) => {
                return Err(error)
                    .context(format!("etcd at {endpoints:?} did not answer within 60s"));
            }
        }
    }
}

type ServerTask = tokio::task::JoinHandle<Result<(), tonic::transport::Error>>;

/// Serves the API on TCP and on the unix socket until `stop` turns true.
async fn serve(
    registry: Registry,
    listen: SocketAddr,
    socket: &std::path::Path,
    stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<Vec<ServerTask>> {
    let tcp = TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    if let Some(dir) = socket.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    match std::fs::remove_file(socket) {
        Ok(()) => tracing::info!(socket = %socket.display(), "removed stale socket"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(e)
                .with_context(|| format!("cannot remove stale socket {}", socket.display()));
        }
    }
    let unix = UnixListener::bind(socket)
        .with_context(|| format!("cannot listen on {}", socket.display()))?;

    let cache = Arc::new(WatchCache::new(registry.storage().clone(), stop.clone()));
    let svc = || {
        ResourcesServer::new(service::ResourcesService::new(
            registry.clone(),
            cache.clone(),
            stop.clone(),
        ))
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(256 << 20)
    };
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let tcp_task = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(svc())
            .serve_with_incoming_shutdown(
                nodelay(TcpListenerStream::new(tcp)),
                stopped(stop.clone()),
            ),
    );
    let unix_task = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(svc())
            .serve_with_incoming_shutdown(UnixListenerStream::new(unix), stopped(stop)),
    );
    Ok(vec![tcp_task, unix_task])
}

/// Accepted TCP connections with Nagle's algorithm off. tonic applies its
/// own `tcp_nodelay` (default on) only to listeners it binds itself; without
/// it, a gRPC response written in parts (data, then the trailers) can wait
/// for the client's delayed ACK.
fn nodelay(
    incoming: TcpListenerStream,
) -> impl futures::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    use futures::StreamExt;
    incoming.map(|conn| {
        let conn = conn?;
        if let Err(error) = conn.set_nodelay(true) {
            tracing::warn!(%error, "cannot set TCP_NODELAY on an API connection");
        }
        Ok(conn)
    })
}

/// Runs the scheduler and the controllers while `leading` is true and stops
/// them when it turns false. Aborting this task stops them too (dropping the
/// JoinSet aborts its tasks).
async fn run_while_leading(
    client: weir_client::Client,
    mut leading: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        if leading.wait_for(|l| *l).await.is_err() {
            return;
        }
        tracing::info!("leading: starting scheduler and controllers");
        let mut components = tokio::task::JoinSet::new();
        // One cache of every watched kind for the whole process: the
        // scheduler reads the controllers' Pods and Nodes.
        let cache = Arc::new(std::sync::RwLock::new(controllers::Cache::default()));
        let sched = scheduler::Scheduler::new(client.clone(), cache.clone());
        let hooks = sched.hooks();
        components.spawn(component(
            "controllers",
            controllers::run(client.clone(), cache, hooks),
        ));
        components.spawn(component("scheduler", sched.run()));
        let lost = leading.wait_for(|l| !*l).await.is_err();
        components.shutdown().await;
        if lost {
            return;
        }
        tracing::info!("not leading: scheduler and controllers stopped");
    }
}

/// Runs a background component; its failure is logged, not fatal, so the API
/// stays up for the agents.
async fn component(name: &'static str, fut: impl Future<Output = anyhow::Result<()>>) {
    match fut.await {
        Ok(()) => tracing::info!(component = name, "stopped"),
        Err(error) => tracing::error!(component = name, error = format!("{error:#}"), "failed"),
    }
}

async fn shutdown_signal() -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r?,
        _ = term.recv() => {}
    }
    Ok(())
}
