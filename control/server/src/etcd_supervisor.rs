//! Runs and supervises the embedded etcd (used when no `--etcd` is given):
//! starts it, restarts it if it dies, and stops it by PID on shutdown.
//!
//! The PID of the running etcd is kept in `<data dir>.pid`. A weir-control
//! killed with SIGKILL cannot stop its etcd, which keeps running and holds
//! the data directory and ports; the next weir-control on the same state
//! directory finds it through that file and stops it (SIGTERM: etcd syncs
//! its WAL) before starting its own, instead of failing to start one forever.

use std::fs::OpenOptions;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::process::{Child, Command};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How the embedded etcd is run.
#[derive(Debug, Clone)]
pub struct EtcdConfig {
    pub binary: PathBuf,
    pub data_dir: PathBuf,
    pub log_file: PathBuf,
    pub client_port: u16,
    pub peer_port: u16,
}

impl EtcdConfig {
    pub fn client_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    /// The command line: one member, client and peer URLs on loopback only.
    pub fn args(&self) -> Vec<String> {
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let client = self.client_url();
        vec![
            "--name".into(),
            "weir".into(),
            "--data-dir".into(),
            self.data_dir.display().to_string(),
            "--listen-client-urls".into(),
            client.clone(),
            "--advertise-client-urls".into(),
            client,
            "--listen-peer-urls".into(),
            peer.clone(),
            "--initial-advertise-peer-urls".into(),
            peer.clone(),
            "--initial-cluster".into(),
            format!("weir={peer}"),
            "--initial-cluster-state".into(),
            "new".into(),
        ]
    }
}

/// A running supervisor; `shutdown` stops etcd and waits for it.
pub struct Supervisor {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Supervisor {
    pub fn spawn(cfg: EtcdConfig) -> Self {
        let (stop, rx) = watch::channel(false);
        let task = tokio::spawn(supervise(cfg, rx));
        Self { stop, task }
    }

    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        if let Err(error) = self.task.await {
            tracing::warn!(%error, "etcd supervisor task failed");
        }
    }
}

fn start(cfg: &EtcdConfig) -> std::io::Result<Child> {
    std::fs::create_dir_all(&cfg.data_dir)?;
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&cfg.log_file)?;
    let log2 = log.try_clone()?;
    Command::new(&cfg.binary)
        .args(cfg.args())
        .stdin(Stdio::null())
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(log2))
        // Safety net if this process panics; the normal path stops it by PID.
        .kill_on_drop(true)
        .spawn()
}

/// Where the PID of the etcd this supervisor runs is recorded.
fn pid_file(cfg: &EtcdConfig) -> PathBuf {
    cfg.data_dir.with_extension("pid")
}

/// Whether a NUL-separated `/proc/PID/cmdline` is an etcd serving `data_dir`
/// (so a recorded PID that was reused by another process is left alone).
pub fn is_etcd_on(cmdline: &[u8], data_dir: &Path) -> bool {
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    args.windows(2)
        .any(|w| w[0] == b"--data-dir" && w[1] == data_dir.as_os_str().as_bytes())
}

/// Whether `pid` is still the etcd of `data_dir` (a zombie has no cmdline).
fn still_ours(pid: i32, data_dir: &Path) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| is_etcd_on(&c, data_dir))
}

/// Stops an etcd a previous, crashed weir-control left running on this data
/// directory (see the module doc).
pub async fn stop_stale(cfg: &EtcdConfig) {
    let file = pid_file(cfg);
    let Ok(text) = std::fs::read_to_string(&file) else {
        return;
    };
    if let Ok(pid) = text.trim().parse::<i32>()
        && pid > 0
        && still_ours(pid, &cfg.data_dir)
    {
        tracing::warn!(
            pid,
            "stopping the etcd a previous weir-control left running"
        );
        for (signal, wait) in [(Signal::SIGTERM, 100), (Signal::SIGKILL, 50)] {
            let _ = kill(Pid::from_raw(pid), signal);
            for _ in 0..wait {
                if !still_ours(pid, &cfg.data_dir) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            if !still_ours(pid, &cfg.data_dir) {
                break;
            }
        }
    }
    let _ = std::fs::remove_file(&file);
}

async fn supervise(cfg: EtcdConfig, mut stop: watch::Receiver<bool>) {
    loop {
        let mut child = match start(&cfg) {
            Ok(c) => c,
            Err(error) => {
                tracing::error!(%error, binary = %cfg.binary.display(), "cannot start etcd; retrying in 1s");
                if wait_or_stop(&mut stop, Duration::from_secs(1)).await {
                    return;
                }
                continue;
            }
        };
        tracing::info!(pid = child.id(), url = cfg.client_url(), log = %cfg.log_file.display(), "etcd started");
        if let Some(pid) = child.id()
            && let Err(error) = std::fs::write(pid_file(&cfg), pid.to_string())
        {
            tracing::warn!(%error, "cannot record the etcd PID");
        }
        tokio::select! {
            status = child.wait() => {
                tracing::error!(?status, "etcd exited; restarting in 1s");
                if wait_or_stop(&mut stop, Duration::from_secs(1)).await {
                    return;
                }
            }
            _ = stop.changed() => {
                terminate(&mut child).await;
                let _ = std::fs::remove_file(pid_file(&cfg));
                return;
            }
        }
    }
}

/// Sleeps for `d`; true if a stop was requested meanwhile.
async fn wait_or_stop(stop: &mut watch::Receiver<bool>, d: Duration) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => *stop.borrow(),
        _ = stop.changed() => true,
    }
}

/// SIGTERM (etcd flushes and exits), then SIGKILL after 10 s.
async fn terminate(child: &mut Child) {
    if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok())
        && let Err(error) = kill(Pid::from_raw(pid), Signal::SIGTERM)
    {
        tracing::warn!(%error, pid, "cannot signal etcd");
    }
    match tokio::time::timeout(Duration::from_secs(10), child.wait()).await {
        Ok(status) => tracing::info!(?status, "etcd stopped"),
        Err(_) => {
            tracing::warn!("etcd did not stop in 10s; killing it");
            let _ = child.kill().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etcd_listens_on_loopback_only() {
        let cfg = EtcdConfig {
            binary: "/usr/bin/etcd".into(),
            data_dir: "/tmp/x/etcd".into(),
            log_file: "/tmp/x/etcd.log".into(),
            client_port: 2379,
            peer_port: 2380,
        };
        let args = cfg.args();
        let value = |flag: &str| {
            args.iter()
                .position(|a| a == flag)
                .map(|i| args[i + 1].clone())
        };
        assert_eq!(
            value("--listen-client-urls").as_deref(),
            Some("http://127.0.0.1:2379")
        );
        assert_eq!(
            value("--listen-peer-urls").as_deref(),
            Some("http://127.0.0.1:2380")
        );
        assert_eq!(
            value("--initial-cluster").as_deref(),
            Some("weir=http://127.0.0.1:2380")
        );
        assert_eq!(value("--data-dir").as_deref(), Some("/tmp/x/etcd"));
    }

    #[test]
    fn recognises_only_an_etcd_on_its_own_data_dir() {
        let dir = Path::new("/var/lib/weir/a/etcd");
        let cmd = |args: &[&str]| args.join("\0").into_bytes();
        for (cmdline, ours) in [
            (
                cmd(&[
                    "/usr/bin/etcd",
                    "--name",
                    "weir",
                    "--data-dir",
                    "/var/lib/weir/a/etcd",
                ]),
                true,
            ),
            (
                cmd(&["/usr/bin/etcd", "--data-dir", "/var/lib/weir/b/etcd"]),
                false,
            ),
            (
                cmd(&["/usr/bin/etcd", "--data-dir", "/var/lib/weir/a/etcd2"]),
                false,
            ),
            // A reused PID: some other process mentioning the path.
            (cmd(&["cat", "/var/lib/weir/a/etcd"]), false),
            (cmd(&["/usr/bin/etcd", "--data-dir"]), false),
            (Vec::new(), false), // a zombie
        ] {
            assert_eq!(
                is_etcd_on(&cmdline, dir),
                ours,
                "{:?}",
                String::from_utf8_lossy(&cmdline)
            );
        }
    }
}
