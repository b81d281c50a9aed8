//! `cargo xtask build`: builds the binaries a cluster runs. The agent's
//! build.rs compiles the eBPF programs itself, so this is one cargo call.

use std::path::PathBuf;

use anyhow::{Result, bail};

use crate::cmd::{self, step};

/// The packages whose binaries make up a cluster.
pub const PACKAGES: &[&str] = &["weir-control", "weir-cli", "weir-agent", "weir-cni"];

/// The binaries (and where `up` expects them).
#[derive(Debug, Clone)]
pub struct Binaries {
    pub dir: PathBuf,
}

impl Binaries {
    pub fn new(release: bool) -> Binaries {
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| cmd::workspace_root().join("target"));
        Binaries {
            dir: target.join(if release { "release" } else { "debug" }),
        }
    }
    pub fn control(&self) -> PathBuf {
        self.dir.join("weir-control")
    }
    pub fn cli(&self) -> PathBuf {
        self.dir.join("weir")
    }
    pub fn agent(&self) -> PathBuf {
        self.dir.join("weir-agent")
    }
    pub fn cni(&self) -> PathBuf {
        self.dir.join("weir-cni")
    }

    /// Fails naming the binaries that are not built.
    pub fn check(&self) -> Result<()> {
        let missing: Vec<String> = [self.control(), self.cli(), self.agent(), self.cni()]
            .into_iter()
            .filter(|p| !p.is_file())
            .map(|p| p.display().to_string())
            .collect();
        if !missing.is_empty() {
            bail!(
                "missing binaries: {} (run `cargo xtask build`)",
                missing.join(", ")
            );
        }
        Ok(())
    }
}

pub fn run(release: bool) -> Result<Binaries> {
    step(format!(
        "building {} ({})",
        PACKAGES.join(", "),
        if release { "release" } else { "debug" }
    ));
    let mut c = cmd::cargo();
    c.arg("build").current_dir(cmd::workspace_root());
    for p in PACKAGES {
        c.args(["-p", p]);
    }
    c.arg("--bins");
    if release {
        c.arg("--release");
    }
    cmd::run(&mut c)?;
    let bins = Binaries::new(release);
    bins.check()?;
    Ok(bins)
}
