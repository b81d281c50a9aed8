//! `cargo xtask bench [ARGS...]`: the benchmarks (weir-bench, release build).
//! Arguments go to weir-bench unchanged; with none it runs `datapath`.

use anyhow::Result;

use crate::cmd::{self, step};
use crate::deps;

pub fn run(args: &[String]) -> Result<()> {
    cmd::require_root("bench")?;
    deps::run()?;
    deps::bench()?;
    // weir-bench runs the release weir-control and weir-agent next to it.
    crate::build::run(true)?;
    let args: Vec<String> = if args.is_empty() {
        vec!["datapath".into()]
    } else {
        args.to_vec()
    };
    step(format!("weir-bench {}", args.join(" ")));
    cmd::run(
        cmd::cargo()
            .args(["run", "--release", "--quiet", "-p", "weir-bench", "--"])
            .args(&args)
            .current_dir(cmd::workspace_root()),
    )
}
