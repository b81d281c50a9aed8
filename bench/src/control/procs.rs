//! The system under test: a stand-alone etcd and one weir-control (API server,
//! scheduler, controllers) against it, on free loopback ports in a temp dir.
//! Both are stopped on drop (SIGTERM, then SIGKILL).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// A child process stopped on drop.
pub struct Proc {
    child: Child,
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub(crate) fn spawn(name: &'static str, cmd: &mut Command) -> Result<Proc> {
        let child = cmd
            .stdin(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot start {name}"))?;
        Ok(Proc { child })
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.child.id()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A free loopback port whose successor is free too (etcd takes client
/// port + 1 for peers).
pub(crate) fn free_port_pair() -> Result<u16> {
    for _ in 0..100 {
        let p = free_port()?;
        if p < u16::MAX && TcpListener::bind(("127.0.0.1", p + 1)).is_ok() {
            return Ok(p);
        }
    }
    bail!("no two consecutive free ports on 127.0.0.1")
}

/// etcd + weir-control, running.
pub struct System {
    // Field order: weir-control stops before etcd.
    pub control: Proc,
    pub follower: Option<Proc>,
    pub etcd: Proc,
    pub api: String,
    /// etcd's client URL (its `/metrics` too).
    pub etcd_url: String,
}

/// Finds weir-control next to this binary (both are release builds of the
/// workspace), building it when it is missing.
pub fn weir_control_binary(explicit: Option<PathBuf>) -> Result<PathBuf> {
    if let Some(p) = explicit {
        return Ok(p);
    }
    let exe = std::env::current_exe().context("cannot find weir-bench's own path")?;
    let dir = exe.parent().context("weir-bench has no parent directory")?;
    let bin = dir.join("weir-control");
    if !bin.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "--release", "--quiet", "-p", "weir-control"])
            .status()
            .context("cannot run cargo to build weir-control")?;
        if !status.success() || !bin.exists() {
            bail!(
                "weir-control is not at {} and could not be built (cargo build --release -p weir-control)",
                bin.display()
            );
        }
    }
    Ok(bin)
}

impl System {
    pub async fn start(
        dir: &Path,
        weir_control: &Path,
        etcd: &Path,
        with_follower: bool,
    ) -> Result<System> {
        let port = free_port_pair()?;
        let etcd_url = format!("http://127.0.0.1:{port}");
        let peer = format!("http://127.0.0.1:{}", port + 1);
        let etcd = Proc::spawn(
            "etcd",
            Command::new(etcd)
                .args(["--name", "bench", "--data-dir"])
                .arg(dir.join("etcd"))
                .args([
                    "--listen-client-urls",
                    &etcd_url,
                    "--advertise-client-urls",
                    &etcd_url,
                ])
                .args([
                    "--listen-peer-urls",
                    &peer,
                    "--initial-advertise-peer-urls",
                    &peer,
                ])
                .args(["--initial-cluster", &format!("bench={peer}")])
                // 10k pods and 1000 nodes are ~40 MB of values plus history.
                .args(["--quota-backend-bytes", &(4u64 << 30).to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        )?;
        let (control, api) = spawn_control(weir_control, dir, "leader", &etcd_url).await?;
        // A second replica against the same etcd: it serves the API but does
        // not lead, so its memory is the API server's alone (no scheduler or
        // controller caches) — the split of the leader's number.
        let (follower, _) = if with_follower {
            let (p, a) = spawn_control(weir_control, dir, "follower", &etcd_url).await?;
            (Some(p), a)
        } else {
            (None, String::new())
        };
        Ok(System {
            control,
            follower,
            etcd,
            api,
            etcd_url,
        })
    }
}

/// Starts one weir-control against `etcd_url` and waits until it answers.
async fn spawn_control(
    weir_control: &Path,
    dir: &Path,
    name: &str,
    etcd_url: &str,
) -> Result<(Proc, String)> {
    let api_port = free_port()?;
    let api = format!("http://127.0.0.1:{api_port}");
    let log = dir.join(format!("weir-control-{name}.log"));
    let control = Proc::spawn(
        "weir-control",
        Command::new(weir_control)
            .arg("--state-dir")
            .arg(dir.join(name))
            .args([
                "--etcd",
                etcd_url,
                "--listen",
                &format!("127.0.0.1:{api_port}"),
            ])
            // Room for 1000 nodes' /24 pod CIDRs (the default /16 holds 255).
            .args(["--cluster-cidr", "10.128.0.0/9"])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(
                std::fs::File::create(&log)
                    .map(Stdio::from)
                    .unwrap_or_else(|_| Stdio::null()),
            ),
    )?;
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if let Ok(c) = weir_client::Client::connect(&api).await
            && c.get_json("Namespace", "", "default").await.is_ok()
        {
            return Ok((control, api));
        }
        if Instant::now() > deadline {
            bail!(
                "weir-control did not answer on {api} within 90 s (log: {})",
                log.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Resident and peak resident memory of a process, in bytes (`/proc/PID/status`).
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Memory {
    pub rss: u64,
    pub peak_rss: u64,
}

pub fn memory(pid: u32) -> Result<Memory> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("cannot read /proc/{pid}/status"))?;
    Ok(parse_status(&status))
}

/// Pure parser of `/proc/PID/status` (VmRSS, VmHWM in kB).
pub fn parse_status(status: &str) -> Memory {
    let kb = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0)
            * 1024
    };
    Memory {
        rss: kb("VmRSS:"),
        peak_rss: kb("VmHWM:"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_parsing() {
        let s = "Name:\tweir-control\nVmHWM:\t  120000 kB\nVmRSS:\t   98765 kB\nThreads:\t4\n";
        let m = parse_status(s);
        assert_eq!(m.rss, 98765 * 1024);
        assert_eq!(m.peak_rss, 120000 * 1024);
        assert_eq!(parse_status("").rss, 0);
    }
}
