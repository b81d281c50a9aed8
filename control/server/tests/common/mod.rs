//! Test support shared by the end-to-end tests: free loopback ports, child
//! processes stopped on drop, a weir-control with its embedded etcd, and
//! polling helpers.

#![allow(dead_code)] // each test crate uses a part

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, Node, NodeCondition, NodeStatus, Pod, PodStatus};
use weir_client::{Client, DeleteParams, ListParams};

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A free port whose successor is free too (etcd's peer port).
pub fn free_port_pair() -> u16 {
    loop {
        let p = free_port();
        if p < u16::MAX && TcpListener::bind(("127.0.0.1", p + 1)).is_ok() {
            return p;
        }
    }
}

/// A child process stopped on drop: SIGTERM, then SIGKILL after 15 s.
pub struct Proc(pub Child);

impl Proc {
    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        if let Ok(pid) = i32::try_from(self.0.id()) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig);
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        // Already reaped (killed by the test): its PID may belong to someone else now.
        if let Ok(Some(_)) = self.0.try_wait() {
            return;
        }
        self.signal(nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Proc {
    /// SIGKILL (a crash: no cleanup, no flush) and reap.
    pub fn crash(mut self) {
        self.signal(nix::sys::signal::Signal::SIGKILL);
        let _ = self.0.wait();
    }
}

/// A stand-alone etcd on free loopback ports, which a test can crash and
/// restart on the same data directory and ports.
pub struct Etcd {
    proc: Option<Proc>,
    dir: PathBuf,
    port: u16,
    pub url: String,
}

impl Etcd {
    pub fn start(dir: &Path) -> Etcd {
        let port = free_port_pair();
        let mut etcd = Etcd {
            proc: None,
            dir: dir.join("etcd"),
            port,
            url: format!("http://127.0.0.1:{port}"),
        };
        etcd.restart();
        etcd
    }

    /// Starts it again (after [`Etcd::crash`]) with the same data and ports.
    pub fn restart(&mut self) {
        let peer = format!("http://127.0.0.1:{}", self.port + 1);
        let child = Command::new("/usr/bin/etcd")
            .args(["--name", "t", "--data-dir"])
            .arg(&self.dir)
            .args(["--listen-client-urls", &self.url])
            .args(["--advertise-client-urls", &self.url])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("t={peer}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start etcd");
        self.proc = Some(Proc(child));
    }

    /// SIGKILL, like a power cut of the etcd process.
    pub fn crash(&mut self) {
        if let Some(p) = self.proc.take() {
            p.crash();
        }
    }
}

/// A weir-control against an external etcd on a fixed address, so a restart
/// after [`Proc::crash`] serves where clients already connect.
pub struct Replica {
    pub dir: PathBuf,
    pub addr: String,
    port: u16,
    /// `--etcd URL`, or `--embedded-etcd-port P` (fixed so a restart finds its data).
    etcd_flags: [String; 2],
    extra: Vec<String>,
}

impl Replica {
    pub fn new(dir: &Path, etcd: &str, extra: &[&str]) -> Replica {
        std::fs::create_dir_all(dir).expect("replica dir");
        let port = free_port();
        Replica {
            dir: dir.to_path_buf(),
            addr: format!("http://127.0.0.1:{port}"),
            port,
            etcd_flags: ["--etcd".into(), etcd.to_string()],
            extra: extra.iter().map(|s| s.to_string()).collect(),
        }
    }

    /// A weir-control running its own embedded etcd in `dir`.
    pub fn embedded(dir: &Path) -> Replica {
        let mut r = Replica::new(dir, "", &[]);
        r.etcd_flags = ["--embedded-etcd-port".into(), free_port_pair().to_string()];
        r
    }

    /// Starts the process and returns it with a client once it answers.
    pub async fn start(&self) -> (Proc, Client) {
        let child = Command::new(env!("CARGO_BIN_EXE_weir-control"))
            .arg("--state-dir")
            .arg(&self.dir)
            .args(&self.etcd_flags)
            .args(["--listen", &format!("127.0.0.1:{}", self.port)])
            .args(&self.extra)
            .env("RUST_LOG", "warn")
            .spawn()
            .expect("start weir-control");
        let proc = Proc(child);
        let client = connect_when_up(&self.addr).await;
        (proc, client)
    }
}

/// A client of the weir-control at `addr`, once it answers (60 s at most).
pub async fn connect_when_up(addr: &str) -> Client {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(c) = Client::connect(addr).await
            && c.get::<Namespace>("", "default").await.is_ok()
        {
            return c;
        }
        assert!(
            Instant::now() < deadline,
            "weir-control did not come up on {addr}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A running weir-control; stopped with SIGTERM (so it stops its etcd) on drop.
pub struct Server {
    // Dropped first: the process stops before its temp dir goes.
    _proc: Proc,
    pub client: Client,
    pub etcd_url: String,
    _dir: tempfile::TempDir,
}

impl Server {
    pub async fn start() -> Server {
        Self::start_with(&[]).await
    }

    /// Starts weir-control with extra flags.
    pub async fn start_with(extra: &[&str]) -> Server {
        let dir = tempfile::tempdir().expect("temp dir");
        let etcd_port = free_port_pair();
        let api_port = free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_weir-control"))
            .arg("--state-dir")
            .arg(dir.path())
            .args(["--embedded-etcd-port", &etcd_port.to_string()])
            .args(["--listen", &format!("127.0.0.1:{api_port}")])
            .args(extra)
            .env("RUST_LOG", "warn")
            .spawn()
            .expect("start weir-control");
        let proc = Proc(child);
        let client = connect_when_up(&format!("http://127.0.0.1:{api_port}")).await;
        Server {
            _proc: proc,
            client,
            etcd_url: format!("http://127.0.0.1:{etcd_port}"),
            _dir: dir,
        }
    }
}

/// Polls `f` every 200 ms until it returns Some, or fails the test with
/// `what` once `limit` has passed.
pub async fn eventually_within<T, F, Fut>(limit: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The pods of namespace default (none when the list fails).
pub async fn pods(c: &Client) -> Vec<Pod> {
    c.list::<Pod>("default", &ListParams::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default()
}

/// Creates `node` and reports it Ready, as its agent would.
pub async fn create_ready_node(c: &Client, node: &Node) {
    let mut n = c.create(node).await.expect("create node");
    n.status = Some(NodeStatus {
        conditions: Some(vec![NodeCondition {
            type_: "Ready".into(),
            status: "True".into(),
            ..Default::default()
        }]),
        ..Default::default()
    });
    c.update_status(&n).await.expect("node ready");
}

/// One pass of a fake kubelet over the pods of `namespace` ("" = all):
/// pods marked for deletion get the agent's final delete (grace period 0);
/// bound pods with no phase beyond Pending get the status `status_of`
/// makes for them.
pub async fn kubelet_tick(
    c: &Client,
    namespace: &str,
    status_of: &(dyn Fn(&Pod) -> PodStatus + Sync),
) {
    let all = c
        .list::<Pod>(namespace, &ListParams::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default();
    for p in all {
        let name = p.metadata.name.clone().unwrap_or_default();
        let ns = p.metadata.namespace.clone().unwrap_or_default();
        if p.metadata.deletion_timestamp.is_some() {
            let params = DeleteParams {
                grace_period_seconds: Some(0),
                ..Default::default()
            };
            let _ = c.delete::<Pod>(&ns, &name, &params).await;
            continue;
        }
        let bound = p
            .spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            .is_some_and(|n| !n.is_empty());
        let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
        if bound && matches!(phase, None | Some("Pending")) {
            let mut p = p.clone();
            p.status = Some(status_of(&p));
            let _ = c.update_status(&p).await;
        }
    }
}

/// A fake kubelet ([`kubelet_tick`] every 150 ms) running in the background
/// until dropped.
pub struct Kubelet(tokio::task::JoinHandle<()>);

impl Kubelet {
    pub fn start(
        c: &Client,
        namespace: &'static str,
        status_of: impl Fn(&Pod) -> PodStatus + Send + Sync + 'static,
    ) -> Self {
        let c = c.clone();
        Kubelet(tokio::spawn(async move {
            loop {
                kubelet_tick(&c, namespace, &status_of).await;
                tokio::time::sleep(Duration::from_millis(150)).await;
            }
        }))
    }
}

impl Drop for Kubelet {
    fn drop(&mut self) {
        self.0.abort();
    }
}
