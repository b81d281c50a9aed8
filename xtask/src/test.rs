//! `cargo xtask test`: the three test tiers.
//!
//! 1. `cargo test --workspace`: unit tests, no root, no services.
//! 2. `cargo test --workspace --exclude weir-e2e -- --ignored`: the privileged
//!    tests (netns, BPF, containerd), each `#[ignore = "privileged: ..."]`.
//! 3. end-to-end: the `weirtest` cluster is brought up, `weir-e2e` runs against
//!    it, and the cluster is always torn down again (logs are kept in
//!    target/xtask/logs-weirtest and their tails printed on failure).

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Result, bail};

use crate::build;
use crate::cluster::state::Routing;
use crate::cluster::{cleanup, procs, up};
use crate::cmd::{self, info, step};
use crate::deps;
use crate::layout::Layout;

/// The e2e cluster's name (fixed: its ports and paths are known to the tests).
pub const E2E_CLUSTER: &str = "weirtest";

#[derive(Debug, Clone)]
pub struct TestOptions {
    /// Tiers to run (1, 2, 3); empty means all.
    pub tiers: Vec<u8>,
    /// Leave the e2e cluster running after the tests (for debugging).
    pub keep_cluster: bool,
    /// Nodes of the e2e cluster.
    pub nodes: u8,
    /// Routing mode of the e2e cluster.
    pub routing: crate::cluster::state::Routing,
    /// Extra arguments for the e2e test binary (e.g. a test name filter).
    pub e2e_args: Vec<String>,
}

pub fn run(opts: &TestOptions) -> Result<()> {
    let t0 = Instant::now();
    let want = |t: u8| opts.tiers.is_empty() || opts.tiers.contains(&t);
    deps::run()?;
    let mut results: Vec<(&str, Result<()>)> = Vec::new();
    if want(1) {
        step("tier 1: unit tests (cargo test --workspace)");
        results.push((
            "tier 1 (unit)",
            cmd::run(
                cmd::cargo()
                    .args(["test", "--workspace", "--no-fail-fast"])
                    .current_dir(cmd::workspace_root()),
            ),
        ));
    }
    if want(2) {
        step("tier 2: privileged tests (cargo test --workspace --exclude weir-e2e -- --ignored)");
        // Some privileged tests drive the built binaries (weir-control, weir-cni).
        let r = cmd::require_root("test")
            .and_then(|()| cmd::ensure_bpffs())
            .and_then(|()| build::run(false))
            .and_then(|_| {
                cmd::run(
                    cmd::cargo()
                        .args([
                            "test",
                            "--workspace",
                            "--no-fail-fast",
                            "--exclude",
                            "weir-e2e",
                            "--",
                            "--ignored",
                        ])
                        .current_dir(cmd::workspace_root()),
                )
            });
        results.push(("tier 2 (privileged)", r));
    }
    if want(3) {
        for (routing, args) in e2e_runs(opts) {
            step(format!(
                "tier 3: end-to-end tests on the weirtest cluster ({} routing)",
                routing.as_str()
            ));
            let label = match routing {
                Routing::Native => "tier 3 (e2e)",
                Routing::Vxlan => "tier 3 (e2e, VXLAN)",
            };
            results.push((label, e2e(opts, routing, &args)));
        }
    }
    step(format!("test summary ({:.0}s)", t0.elapsed().as_secs_f32()));
    let mut failed = Vec::new();
    for (name, r) in &results {
        match r {
            Ok(()) => info(format!("{name}: ok")),
            Err(e) => {
                info(format!("{name}: FAILED: {e:#}"));
                failed.push(*name);
            }
        }
    }
    if !failed.is_empty() {
        bail!("failed: {}", failed.join(", "));
    }
    Ok(())
}

/// The e2e runs of tier 3: the whole suite with the requested routing; and,
/// when nothing narrower was asked for (no test filter, native routing, no
/// kept cluster), the multi-node suite again over VXLAN, so the
/// encapsulation mode is tested on every run too.
fn e2e_runs(opts: &TestOptions) -> Vec<(Routing, Vec<String>)> {
    let mut runs = vec![(opts.routing, opts.e2e_args.clone())];
    if opts.e2e_args.is_empty() && opts.routing == Routing::Native && !opts.keep_cluster {
        runs.push((Routing::Vxlan, vec!["e2e_multinode".to_string()]));
    }
    runs
}

fn e2e(opts: &TestOptions, routing: Routing, e2e_args: &[String]) -> Result<()> {
    cmd::require_root("test")?;
    let bins = build::run(false)?;
    let layout = Layout::new(E2E_CLUSTER)?;
    // Always a fresh cluster: one kept from an earlier run may run older binaries.
    if layout.state_dir().exists() {
        cleanup::down(&layout)?;
    }
    let up_opts = up::UpOptions {
        nodes: opts.nodes,
        demo: false,
        write_cli_config: false,
        routing,
    };
    let result = up::up(&layout, &bins, &up_opts).and_then(|_| {
        step("running weir-e2e");
        // Build the test binary first so its compile time is not mistaken for a hang.
        cmd::run(
            cmd::cargo()
                .args(["test", "-p", "weir-e2e", "--no-run"])
                .current_dir(cmd::workspace_root()),
        )?;
        cmd::run(
            cmd::cargo()
                .args([
                    "test",
                    "-p",
                    "weir-e2e",
                    "--",
                    "--ignored",
                    "--test-threads=1",
                ])
                .args(e2e_args)
                .env("WEIR_E2E_CLUSTER_FILE", layout.state_file())
                .env("WEIR_BIN", bins.cli())
                // The multi-node suite restarts an agent through `xtask restart-agent`.
                .env("WEIR_XTASK", std::env::current_exe()?)
                .current_dir(cmd::workspace_root()),
        )
    });
    let kept = keep_logs(&layout, routing);
    if result.is_err() {
        print_log_tails(&kept, 50);
        print_cluster_objects(&layout, &bins);
    }
    if opts.keep_cluster {
        info(format!(
            "--keep-cluster: cluster {E2E_CLUSTER:?} left running; `cargo xtask down --name {E2E_CLUSTER}` removes it"
        ));
        return result;
    }
    let down = cleanup::down(&layout);
    result?;
    down
}

/// Copies the cluster's logs out of its state dir (which `down` removes).
fn keep_logs(layout: &Layout, routing: Routing) -> PathBuf {
    let suffix = match routing {
        Routing::Native => "",
        Routing::Vxlan => "-vxlan",
    };
    let dest = cmd::workspace_root()
        .join("target")
        .join("xtask")
        .join(format!("logs-{}{suffix}", layout.name));
    let _ = fs::remove_dir_all(&dest);
    if fs::create_dir_all(&dest).is_ok() {
        if let Ok(rd) = fs::read_dir(layout.logs_dir()) {
            for e in rd.flatten() {
                let _ = fs::copy(e.path(), dest.join(e.file_name()));
            }
        }
        info(format!("cluster logs kept in {}", dest.display()));
    }
    dest
}

/// What the API server holds, as the CLI shows it (best effort: it may be down).
fn print_cluster_objects(layout: &Layout, bins: &build::Binaries) {
    for kind in [
        "nodes",
        "pods",
        "services",
        "endpointslices",
        "deployments",
        "replicasets",
    ] {
        eprintln!("\n----- weir get {kind} -A -o wide -----");
        let out = cmd::cmd(
            &bins.cli().display().to_string(),
            ["get", kind, "-A", "-o", "wide"],
        )
        .env("WEIR_SERVER", layout.server_url())
        .output();
        match out {
            Ok(o) => eprintln!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            ),
            Err(e) => eprintln!("cannot run weir: {e}"),
        }
    }
}

fn print_log_tails(dir: &Path, n: usize) {
    let Ok(rd) = fs::read_dir(dir) else { return };
    let mut logs: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
    logs.sort();
    for log in logs {
        eprintln!("\n----- last {n} lines of {} -----", log.display());
        eprintln!("{}", procs::tail(&log, n));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(args: &[&str], routing: Routing, keep_cluster: bool) -> TestOptions {
        TestOptions {
            tiers: vec![3],
            keep_cluster,
            nodes: 3,
            routing,
            e2e_args: args.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn tier3_runs_vxlan_too_unless_narrowed() {
        let multinode = vec!["e2e_multinode".to_string()];
        let cases = [
            (
                "default",
                opts(&[], Routing::Native, false),
                vec![
                    (Routing::Native, vec![]),
                    (Routing::Vxlan, multinode.clone()),
                ],
            ),
            (
                "a filter",
                opts(&["e2e_bad"], Routing::Native, false),
                vec![(Routing::Native, vec!["e2e_bad".to_string()])],
            ),
            (
                "vxlan asked",
                opts(&[], Routing::Vxlan, false),
                vec![(Routing::Vxlan, vec![])],
            ),
            (
                "kept cluster",
                opts(&[], Routing::Native, true),
                vec![(Routing::Native, vec![])],
            ),
        ];
        for (name, o, want) in cases {
            assert_eq!(e2e_runs(&o), want, "{name}");
        }
    }
}
