//! The benchmark's TCP client: short connections (connect, send 16 bytes,
//! read 64, reset) from several source addresses to a target set, for a
//! warm-up and then a measured window. Bounded in time and in count.

use std::net::{SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;

use crate::plan;
use crate::server::{REQUEST_LEN, RESPONSE_LEN};
use crate::stats;

#[derive(Clone, Debug)]
pub struct ClientConfig {
    pub targets: Vec<SocketAddrV4>,
    pub concurrency: usize,
    pub workers: usize,
    pub warmup: Duration,
    pub duration: Duration,
    pub timeout: Duration,
    /// Hard cap on connections over warm-up + measurement.
    pub max_connections: u64,
}

/// What one measured window produced.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ClientReport {
    /// Transactions started and completed inside the measured window.
    pub connections: u64,
    /// Failed transactions in the window (refused, reset, short read).
    pub errors: u64,
    /// Transactions that hit the timeout in the window.
    pub timeouts: u64,
    pub seconds: f64,
    pub per_second: f64,
    pub p50_us: u32,
    pub p99_us: u32,
    /// Fraction of all CPUs busy during the window (whole machine).
    pub cpu_busy: f64,
    /// Fraction of all CPUs in user space during the window (client, server
    /// and anything else running); the rest of `cpu_busy` is the kernel.
    #[serde(default)]
    pub cpu_user: f64,
    pub concurrency: usize,
}

/// xorshift64*: a tiny deterministic generator for target choice (no
/// dependency, seeded per task so tasks do not move in lockstep).
struct Rng(u64);

impl Rng {
    fn next(&mut self, bound: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % bound.max(1)
    }
}

#[derive(Default)]
struct TaskResult {
    latencies_us: Vec<u32>,
    errors: u64,
    timeouts: u64,
}

enum Outcome {
    Done,
    Error,
    Timeout,
}

async fn transaction(source: SocketAddr, target: SocketAddrV4, timeout: Duration) -> Outcome {
    let attempt = async {
        let socket = TcpSocket::new_v4()?;
        socket.bind(source)?;
        let mut stream = socket.connect(SocketAddr::V4(target)).await?;
        stream.set_nodelay(true)?;
        stream.write_all(&[b'q'; REQUEST_LEN]).await?;
        let mut response = [0u8; RESPONSE_LEN];
        stream.read_exact(&mut response).await?;
        // Reset instead of FIN: no TIME_WAIT on either side (see server.rs).
        socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO))?;
        Ok::<_, std::io::Error>(())
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(Ok(())) => Outcome::Done,
        Ok(Err(_)) => Outcome::Error,
        Err(_) => Outcome::Timeout,
    }
}

fn read_cpu() -> Option<stats::CpuTimes> {
    stats::parse_proc_stat(&std::fs::read_to_string("/proc/stat").ok()?)
}

pub fn run(cfg: ClientConfig) -> Result<ClientReport> {
    anyhow::ensure!(!cfg.targets.is_empty(), "no targets");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cfg.workers)
        .enable_all()
        .build()
        .context("cannot build the tokio runtime")?;
    runtime.block_on(drive(cfg))
}

async fn drive(cfg: ClientConfig) -> Result<ClientReport> {
    let targets = Arc::new(cfg.targets.clone());
    let started = Instant::now();
    let window_start = started + cfg.warmup;
    let window_end = window_start + cfg.duration;
    let budget = Arc::new(AtomicU64::new(cfg.max_connections));

    let cpu = tokio::spawn(async move {
        tokio::time::sleep_until(window_start.into()).await;
        let before = read_cpu();
        tokio::time::sleep_until(window_end.into()).await;
        let after = read_cpu();
        before
            .zip(after)
            .and_then(|(b, a)| stats::busy_fraction(b, a))
    });

    let mut tasks = Vec::with_capacity(cfg.concurrency);
    for t in 0..cfg.concurrency {
        let targets = targets.clone();
        let budget = budget.clone();
        let timeout = cfg.timeout;
        let source = SocketAddr::from((plan::source(t as u32 % plan::SOURCES), 0));
        tasks.push(tokio::spawn(async move {
            let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ ((t as u64 + 1) << 17));
            let mut result = TaskResult::default();
            loop {
                let begin = Instant::now();
                let granted = budget
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
                        left.checked_sub(1)
                    })
                    .is_ok();
                if begin >= window_end || !granted {
                    break;
                }
                let target = targets[rng.next(targets.len())];
                let outcome = transaction(source, target, timeout).await;
                let end = Instant::now();
                if begin < window_start || end > window_end {
                    continue;
                }
                match outcome {
                    Outcome::Done => {
                        let us = u32::try_from(end.duration_since(begin).as_micros())
                            .unwrap_or(u32::MAX);
                        result.latencies_us.push(us);
                    }
                    Outcome::Error => result.errors += 1,
                    Outcome::Timeout => result.timeouts += 1,
                }
            }
            result
        }));
    }
    let mut latencies = Vec::new();
    let (mut errors, mut timeouts) = (0, 0);
    for task in tasks {
        let r = task.await.context("client task panicked")?;
        latencies.extend(r.latencies_us);
        errors += r.errors;
        timeouts += r.timeouts;
    }
    let (cpu_busy, cpu_user) = cpu.await.ok().flatten().unwrap_or((f64::NAN, f64::NAN));
    latencies.sort_unstable();
    let seconds = cfg.duration.as_secs_f64();
    Ok(ClientReport {
        connections: latencies.len() as u64,
        errors,
        timeouts,
        seconds,
        per_second: latencies.len() as f64 / seconds,
        p50_us: stats::quantile(&latencies, 0.50).unwrap_or(0),
        p99_us: stats::quantile(&latencies, 0.99).unwrap_or(0),
        cpu_busy,
        cpu_user,
        concurrency: cfg.concurrency,
    })
}
