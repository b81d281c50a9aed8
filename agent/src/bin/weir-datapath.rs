//! weir-datapath: prints what a node's kernel datapath holds, read from the
//! maps weir-agent pinned under its `--bpffs-dir`. Nothing is loaded,
//! attached or written, so it is safe to run beside a live agent while
//! debugging a drop:
//!
//! ```text
//! weir-datapath --bpffs-dir /sys/fs/bpf/weir/weir/node1 services
//! weir-datapath --bpffs-dir /sys/fs/bpf/weir/weir/node1 conntrack
//! weir-datapath --bpffs-dir /sys/fs/bpf/weir/weir/node1 stats
//! ```
#![forbid(unsafe_code)]

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, ValueEnum};
use weir_datapath::inspect;

/// Prints a node's eBPF service and conntrack state.
#[derive(Debug, Parser)]
#[command(name = "weir-datapath", version)]
struct Args {
    /// The node's bpffs pin directory (weir-agent's --bpffs-dir).
    #[arg(long)]
    bpffs_dir: PathBuf,
    /// What to print.
    #[arg(value_enum)]
    what: What,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum What {
    /// Frontends (ClusterIP, NodePort, external and LoadBalancer IPs) with their backends.
    Services,
    /// Connections the datapath translated, both directions.
    Conntrack,
    /// Entry counts and drop counters by reason.
    Stats,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let snap = inspect::snapshot(&args.bpffs_dir).with_context(|| {
        format!(
            "cannot read the datapath maps pinned under {} (is it a weir-agent's --bpffs-dir?)",
            args.bpffs_dir.display()
        )
    })?;
    let out = match args.what {
        What::Services => inspect::render_services(&snap),
        What::Conntrack => inspect::render_conntrack(&snap),
        What::Stats => format!(
            "frontends\t{}\nconntrack entries\t{}\n\n{}",
            snap.services.len(),
            snap.conntrack.len(),
            inspect::render_drops(&snap)
        ),
    };
    print!("{out}");
    Ok(())
}
