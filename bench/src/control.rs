//! `weir-bench control` (`cargo xtask bench control`): the control plane
//! against a real etcd, issue 4's four numbers:
//! - mutating API p99 at a sustained, open-loop 100 writes/s;
//! - p99 of listing 10k pods;
//! - p99 of event delivery to 1000 concurrent watchers;
//! - weir-control's resident memory holding 10k pods and 1000 nodes.
//!
//! One process of each: a stand-alone etcd and weir-control (API server,
//! scheduler and controllers, leader) on loopback; the load comes from this
//! process through `weir_client`, like any client. Results go to
//! `target/bench/control.{md,json}`; BENCHMARKS.md discusses them.

mod etcd_metrics;
mod latency;
mod load;
pub(crate) mod procs;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use serde::Serialize;
use serde_json::json;

use etcd_metrics::DiskSummary;
use latency::{Summary, summarize};
use procs::{Memory, System};

#[derive(Debug, clap::Args)]
pub struct ControlArgs {
    /// Nodes to register.
    #[arg(long, default_value_t = 1000)]
    nodes: usize,
    /// Pods to create (bound, running).
    #[arg(long, default_value_t = 10_000)]
    pods: usize,
    /// Offered write rate (create/update/delete of ConfigMaps), per second.
    #[arg(long, default_value_t = 100.0)]
    write_rate: f64,
    /// How long the write rate is sustained, seconds.
    #[arg(long, default_value_t = 60.0)]
    write_seconds: f64,
    /// How many times all pods are listed.
    #[arg(long, default_value_t = 20)]
    lists: usize,
    /// Concurrent watchers.
    #[arg(long, default_value_t = 1000)]
    watchers: usize,
    /// Watch streams per HTTP/2 connection (many clients, not one).
    #[arg(long, default_value_t = 50)]
    watchers_per_connection: usize,
    /// Events delivered to every watcher.
    #[arg(long, default_value_t = 100)]
    watch_events: usize,
    /// Rate of those events, per second.
    #[arg(long, default_value_t = 20.0)]
    watch_event_rate: f64,
    /// Requests in flight while populating.
    #[arg(long, default_value_t = 32)]
    populate_concurrency: usize,
    /// The weir-control binary (default: next to weir-bench, built if missing).
    #[arg(long)]
    weir_control: Option<PathBuf>,
    #[arg(long, default_value = "/usr/bin/etcd")]
    etcd: PathBuf,
    /// Do not start the second (follower) replica used to split memory.
    #[arg(long)]
    no_follower: bool,
    /// Where control.md and control.json go.
    #[arg(long, default_value = "target/bench")]
    out_dir: PathBuf,
}

/// Everything one run measured.
#[derive(Debug, Serialize)]
struct Report {
    machine: Machine,
    nodes: usize,
    pods: usize,
    populate_seconds: f64,
    write_rate_offered: f64,
    write_rate_achieved: f64,
    writes: Summary,
    /// The write samples by call: create, update, delete.
    writes_by_call: [Summary; 3],
    write_errors: usize,
    /// etcd's WAL fsync durations during the write phase (its /metrics).
    etcd_wal_fsync: Option<DiskSummary>,
    /// etcd's backend (bbolt) commit durations during the write phase.
    etcd_backend_commit: Option<DiskSummary>,
    lists: Summary,
    watchers: usize,
    watch_events: usize,
    watch_delivery: Summary,
    watch_missing: usize,
    control_memory_populated: Memory,
    control_memory_after_writes: Memory,
    control_memory_after_lists: Memory,
    control_memory_end: Memory,
    /// The non-leading replica: API server without scheduler and controllers.
    follower_memory_populated: Option<Memory>,
    follower_memory_end: Option<Memory>,
    etcd_memory_end: Memory,
}

#[derive(Debug, Serialize)]
struct Machine {
    nproc: usize,
    kernel: String,
    /// `/proc/loadavg`'s 1-minute figure when the run started and ended:
    /// on a shared machine, the p99s move with it.
    load_start: f64,
    load_end: f64,
}

fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}

fn machine(load_start: f64) -> Machine {
    Machine {
        load_start,
        load_end: load_average(),
        nproc: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_default(),
    }
}

const GOALS: (f64, f64, f64, u64) = (50.0, 500.0, 100.0, 150 << 20);

fn verdict(ok: bool) -> &'static str {
    if ok { "met" } else { "**missed**" }
}

fn markdown(r: &Report) -> String {
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    let (gw, gl, gd, gm) = GOALS;
    let mut s = String::new();
    s.push_str(&format!(
        "Machine: {} CPUs, kernel {}, 1-minute load average {:.1} at the start, {:.1} at the end. {} nodes, {} pods (populated in {:.1} s).\n\n",
        r.machine.nproc,
        r.machine.kernel,
        r.machine.load_start,
        r.machine.load_end,
        r.nodes,
        r.pods,
        r.populate_seconds
    ));
    s.push_str("| measurement | p50 | p90 | p99 | max | samples | goal | |\n|---|---|---|---|---|---|---|---|\n");
    let row = |name: &str, x: &Summary, goal: f64| {
        format!(
            "| {name} | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} ms | {} | p99 ≤ {goal} ms | {} |\n",
            x.p50_ms,
            x.p90_ms,
            x.p99_ms,
            x.max_ms,
            x.count,
            verdict(x.p99_ms <= goal)
        )
    };
    s.push_str(&row(
        &format!(
            "mutating call at {:.0}/s offered ({:.1}/s achieved, {} errors)",
            r.write_rate_offered, r.write_rate_achieved, r.write_errors
        ),
        &r.writes,
        gw,
    ));
    s.push_str(&row(&format!("list of {} pods", r.pods), &r.lists, gl));
    s.push_str(&row(
        &format!(
            "event delivery to {} watchers ({} events each, {} missing)",
            r.watchers, r.watch_events, r.watch_missing
        ),
        &r.watch_delivery,
        gd,
    ));
    let calls = ["create", "update", "delete"];
    s.push_str("\nThe write phase by call, and etcd's own disk timings over the same phase (its `/metrics` histograms, scraped before and after; quantiles interpolated inside etcd's power-of-two buckets, so read them as ranges; the mean is exact):\n\n| | p50 | p90 | p99 | max | mean | samples |\n|---|---|---|---|---|---|---|\n");
    for (name, x) in calls.iter().zip(&r.writes_by_call) {
        s.push_str(&format!(
            "| weir {name} | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} ms | | {} |\n",
            x.p50_ms, x.p90_ms, x.p99_ms, x.max_ms, x.count
        ));
    }
    for (name, d) in [
        ("etcd WAL fsync", &r.etcd_wal_fsync),
        ("etcd backend commit", &r.etcd_backend_commit),
    ] {
        match d {
            Some(d) => s.push_str(&format!(
                "| {name} | {:.1} ms | | {:.1} ms | | {:.1} ms | {} |\n",
                d.p50_ms, d.p99_ms, d.mean_ms, d.count
            )),
            None => s.push_str(&format!("| {name} | not scraped | | | | | |\n")),
        }
    }
    s.push_str(&format!(
        "\n| weir-control (leader) by phase | RSS | peak so far (VmHWM) |\n|---|---|---|\n\
         | after populating (+10 s) | {:.0} MiB | {:.0} MiB |\n\
         | after the writes | {:.0} MiB | {:.0} MiB |\n\
         | after the lists | {:.0} MiB | {:.0} MiB |\n\
         | after the watchers (end) | {:.0} MiB | {:.0} MiB |\n",
        mib(r.control_memory_populated.rss),
        mib(r.control_memory_populated.peak_rss),
        mib(r.control_memory_after_writes.rss),
        mib(r.control_memory_after_writes.peak_rss),
        mib(r.control_memory_after_lists.rss),
        mib(r.control_memory_after_lists.peak_rss),
        mib(r.control_memory_end.rss),
        mib(r.control_memory_end.peak_rss),
    ));
    s.push_str(&format!(
        "\n| process | RSS after populating | RSS at the end | peak RSS | goal | |\n|---|---|---|---|---|---|\n\
         | weir-control | {:.0} MiB | {:.0} MiB | {:.0} MiB | ≤ {} MiB | {} (steady) / {} (peak) |\n\
         | etcd (context) | | {:.0} MiB | {:.0} MiB | | |\n",
        mib(r.control_memory_populated.rss),
        mib(r.control_memory_end.rss),
        mib(r.control_memory_end.peak_rss),
        gm >> 20,
        verdict(r.control_memory_populated.rss <= gm),
        verdict(r.control_memory_end.peak_rss <= gm),
        mib(r.etcd_memory_end.rss),
        mib(r.etcd_memory_end.peak_rss),
    ));
    if let (Some(p), Some(e)) = (r.follower_memory_populated, r.follower_memory_end) {
        s.push_str(&format!(
            "| weir-control follower (API server only, idle) | {:.0} MiB | {:.0} MiB | {:.0} MiB | | |\n",
            mib(p.rss),
            mib(e.rss),
            mib(e.peak_rss)
        ));
    }
    s
}

pub fn run(args: ControlArgs) -> Result<()> {
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(run_async(args))
}

async fn run_async(args: ControlArgs) -> Result<()> {
    let bin = procs::weir_control_binary(args.weir_control.clone())?;
    let dir = tempfile_dir()?;
    eprintln!(
        "weir-bench control: starting etcd and {} in {}",
        bin.display(),
        dir.display()
    );
    let sys = System::start(&dir, &bin, &args.etcd, !args.no_follower).await?;
    let result = measure(&args, &sys).await;
    drop(sys);
    let _ = std::fs::remove_dir_all(&dir);
    let report = result?;
    let md = markdown(&report);
    std::fs::create_dir_all(&args.out_dir)?;
    std::fs::write(args.out_dir.join("control.md"), &md)?;
    std::fs::write(
        args.out_dir.join("control.json"),
        serde_json::to_vec_pretty(&report)?,
    )?;
    println!("{md}");
    Ok(())
}

/// A fresh directory under the system temp dir.
fn tempfile_dir() -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("weir-bench-control-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    Ok(dir)
}

async fn measure(args: &ControlArgs, sys: &System) -> Result<Report> {
    let load_start = load_average();
    let client = weir_client::Client::connect(&sys.api).await?;
    for ns in [load::NS, load::WATCH_NS] {
        let body = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
        load::create_all(&client, "Namespace", vec![body], 1).await?;
    }
    eprintln!("populating {} nodes and {} pods", args.nodes, args.pods);
    let t = std::time::Instant::now();
    load::create_all(
        &client,
        "Node",
        (0..args.nodes).map(load::node).collect(),
        args.populate_concurrency,
    )
    .await?;
    load::create_all(
        &client,
        "Pod",
        (0..args.pods).map(|i| load::pod(i, args.nodes)).collect(),
        args.populate_concurrency,
    )
    .await?;
    let populate_seconds = t.elapsed().as_secs_f64();
    // Let the controllers' caches and the watch cache settle.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let control_memory_populated = procs::memory(sys.control.pid())?;
    let follower_memory = |sys: &System| {
        sys.follower
            .as_ref()
            .and_then(|f| procs::memory(f.pid()).ok())
    };
    let follower_memory_populated = follower_memory(sys);

    eprintln!("writes: {}/s for {} s", args.write_rate, args.write_seconds);
    let disk_before = etcd_metrics::scrape(&sys.etcd_url).await;
    let writes = load::sustained_writes(
        &client,
        args.write_rate,
        Duration::from_secs_f64(args.write_seconds),
    )
    .await?;
    let disk_after = etcd_metrics::scrape(&sys.etcd_url).await;
    let disk = match (disk_before, disk_after) {
        (Ok(b), Ok(a)) => Some((b, a)),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("cannot read etcd's /metrics: {e:#}");
            None
        }
    };
    let phase = |pick: fn(&etcd_metrics::Scrape) -> &etcd_metrics::Histogram| {
        disk.as_ref()
            .map(|(b, a)| etcd_metrics::summarize(&etcd_metrics::delta(pick(b), pick(a))))
    };
    let control_memory_after_writes = procs::memory(sys.control.pid())?;
    let write_rate_achieved =
        writes.latencies.len() as f64 / writes.elapsed.as_secs_f64().max(1e-9);

    eprintln!("lists: {} x {} pods", args.lists, args.pods);
    let lists = load::lists(&client, args.lists, args.pods).await?;
    let control_memory_after_lists = procs::memory(sys.control.pid())?;

    eprintln!("watchers: {} x {} events", args.watchers, args.watch_events);
    let fan = load::fanout(
        &sys.api,
        args.watchers,
        args.watchers_per_connection,
        args.watch_events,
        args.watch_event_rate,
    )
    .await?;

    Ok(Report {
        machine: machine(load_start),
        nodes: args.nodes,
        pods: args.pods,
        populate_seconds,
        write_rate_offered: args.write_rate,
        write_rate_achieved,
        writes_by_call: writes.by_call.map(summarize),
        writes: summarize(writes.latencies),
        write_errors: writes.errors,
        etcd_wal_fsync: phase(|s| &s.wal_fsync),
        etcd_backend_commit: phase(|s| &s.backend_commit),
        lists: summarize(lists),
        watchers: fan.watchers,
        watch_events: fan.events,
        watch_delivery: summarize(fan.latencies),
        watch_missing: fan.missing,
        control_memory_populated,
        control_memory_after_writes,
        control_memory_after_lists,
        control_memory_end: procs::memory(sys.control.pid())?,
        follower_memory_populated,
        follower_memory_end: follower_memory(sys),
        etcd_memory_end: procs::memory(sys.etcd.pid())?,
    })
}
