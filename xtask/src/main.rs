//! `cargo xtask`: the project's developer tasks.
//!
//! - `deps`: install system dependencies (apt, nightly rust-src, bpf-linker)
//! - `build`: build the weir binaries (the agent's build.rs builds the eBPF programs)
//! - `up` / `down` / `status` / `exec`: a local cluster in network namespaces
//! - `test`: unit, privileged and end-to-end tiers
//! - `bench`: weir-bench (datapath benchmarks), release build
#![forbid(unsafe_code)]

mod bench;
mod build;
mod cluster;
mod cmd;
mod deps;
mod images;
mod layout;
mod test;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "cargo xtask", about = "weir developer tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Debug, Subcommand)]
enum Task {
    /// Install every system dependency (idempotent; quick when all is present).
    Deps,
    /// Build weir-control, weir, weir-agent and weir-cni (and the eBPF programs).
    Build {
        #[arg(long)]
        release: bool,
    },
    /// Build the test images (weir/hostname, weir/client, weir/pause) into target/xtask/images.
    Images,
    /// Start a local cluster: underlay bridge, node netns, control plane, containerd, agents.
    Up {
        /// Number of nodes.
        #[arg(long, default_value_t = 2)]
        nodes: u8,
        /// Cluster name (1-10 lower-case letters/digits).
        #[arg(long, default_value = "weir")]
        name: String,
        /// Run release binaries.
        #[arg(long)]
        release: bool,
        /// Do not apply the demo workload.
        #[arg(long)]
        no_demo: bool,
        /// How pod traffic crosses nodes: native routes or VXLAN.
        #[arg(long, value_enum, default_value_t = cluster::state::Routing::Native)]
        routing: cluster::state::Routing,
    },
    /// Remove a local cluster completely (safe to run twice, or after a crash).
    Down {
        #[arg(long, default_value = "weir")]
        name: String,
    },
    /// Show a cluster's processes, nodes and pods.
    Status {
        #[arg(long, default_value = "weir")]
        name: String,
    },
    /// Kill one node's weir-agent (SIGKILL, by its recorded PID) and start it
    /// again with the same flags; the state file records the new PID.
    RestartAgent {
        #[arg(long, default_value = "weir")]
        name: String,
        /// The node, e.g. node2.
        node: String,
    },
    /// Run a command in a pod's container: cargo xtask exec POD -- CMD [ARGS...]
    Exec {
        #[arg(long, default_value = "weir")]
        name: String,
        #[arg(short = 'n', long, default_value = "default")]
        namespace: String,
        pod: String,
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Run the benchmarks: cargo xtask bench [datapath|control] [weir-bench ARGS] (default: datapath).
    Bench {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Run the test tiers: 1 unit, 2 privileged, 3 end-to-end (default: all).
    Test {
        /// Run only these tiers (repeatable).
        #[arg(long = "tier", value_parser = clap::value_parser!(u8).range(1..=3))]
        tiers: Vec<u8>,
        /// Leave the e2e cluster running afterwards.
        #[arg(long)]
        keep_cluster: bool,
        /// Nodes of the e2e cluster (the multi-node suite needs 3).
        #[arg(long, default_value_t = 3)]
        nodes: u8,
        /// Routing mode of the e2e cluster's agents.
        #[arg(long, value_enum, default_value_t = cluster::state::Routing::Native)]
        routing: cluster::state::Routing,
        /// Passed to the e2e test binary (e.g. a test name).
        #[arg(last = true)]
        e2e_args: Vec<String>,
    },
}

fn main() -> std::process::ExitCode {
    match run(Cli::parse().task) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // The whole cause chain, without the backtrace RUST_BACKTRACE=1 would add.
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(task: Task) -> Result<()> {
    match task {
        Task::Deps => deps::run(),
        Task::Build { release } => build::run(release).map(|_| ()),
        Task::Images => images::build_all().map(|_| ()),
        Task::Up {
            nodes,
            name,
            release,
            no_demo,
            routing,
        } => {
            let layout = layout::Layout::new(&name)?;
            cmd::require_root("up")?;
            deps::run()?;
            let bins = build::run(release)?;
            let dev = name == "weir";
            let opts = cluster::up::UpOptions {
                nodes,
                demo: !no_demo,
                write_cli_config: dev,
                routing,
            };
            let state = cluster::up::up(&layout, &bins, &opts)?;
            println!("{}", cluster::demo::usage(&state, &layout, !no_demo));
            Ok(())
        }
        Task::Down { name } => cluster::cleanup::down(&layout::Layout::new(&name)?),
        Task::Status { name } => cluster::status(&layout::Layout::new(&name)?),
        Task::RestartAgent { name, node } => {
            cluster::up::restart_agent(&layout::Layout::new(&name)?, &node)
        }
        Task::Exec {
            name,
            namespace,
            pod,
            command,
        } => cluster::exec::exec(&layout::Layout::new(&name)?, &namespace, &pod, &command),
        Task::Bench { args } => bench::run(&args),
        Task::Test {
            tiers,
            keep_cluster,
            nodes,
            routing,
            e2e_args,
        } => test::run(&test::TestOptions {
            tiers,
            keep_cluster,
            nodes,
            routing,
            e2e_args,
        }),
    }
}
