//! Things the tests do inside a cluster's network namespaces (node netns,
//! the external client netns): commands through `nsenter --net` and a small
//! TCP server that tells each client the address it saw the client come from.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context, Result};
use nix::sched::{CloneFlags, setns};

/// `/run/netns/<name>`.
pub fn netns_path(name: &str) -> String {
    format!("/run/netns/{name}")
}

/// Runs busybox `args` inside netns `name` (network namespace only); returns
/// stdout when it exits 0.
pub fn busybox_in(netns: &str, args: &[&str]) -> Result<Option<String>> {
    let out = Command::new("nsenter")
        .arg(format!("--net={}", netns_path(netns)))
        .args(["timeout", "5", "/bin/busybox"])
        .args(args)
        .output()
        .context("cannot run nsenter")?;
    Ok(out
        .status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string()))
}

/// A minimal HTTP/1.0 server inside a network namespace that answers every
/// request with the peer address it saw (`<ip>`), then closes. Used to check
/// source addresses (masquerade) without any tool in the target namespace.
/// Stops when dropped.
pub struct PeerEcho {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl PeerEcho {
    /// Binds `ip:port` in netns `netns` (a thread enters it with setns(2);
    /// the socket belongs to the namespace of the thread that created it).
    pub fn start(netns: &str, ip: Ipv4Addr, port: u16) -> Result<PeerEcho> {
        let path = netns_path(netns);
        let addr = SocketAddr::from((ip, port));
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = std::sync::mpsc::channel();
        let stop2 = stop.clone();
        let thread = std::thread::spawn(move || {
            let bound = (|| -> Result<TcpListener> {
                let f = std::fs::File::open(&path).with_context(|| format!("open {path}"))?;
                setns(f, CloneFlags::CLONE_NEWNET).with_context(|| format!("setns {path}"))?;
                let l = TcpListener::bind(addr).with_context(|| format!("bind {addr}"))?;
                l.set_nonblocking(true)?;
                Ok(l)
            })();
            let listener = match bound {
                Ok(l) => {
                    let _ = tx.send(Ok(()));
                    l
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            };
            while !stop2.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut s, peer)) => {
                        let _ = s.set_nonblocking(false);
                        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                        let mut buf = [0u8; 1024];
                        let _ = s.read(&mut buf);
                        let body = format!("{}\n", peer.ip());
                        let _ = write!(
                            s,
                            "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                            body.len()
                        );
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        rx.recv().context("the listener thread died")??;
        Ok(PeerEcho {
            addr,
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for PeerEcho {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
