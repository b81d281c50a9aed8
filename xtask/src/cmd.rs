//! Running external commands, loudly: every command xtask runs is printed
//! first, so a failing step can be re-run by hand.

use std::ffi::OsStr;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use anyhow::{Context, Result, bail};

/// Prints a step header.
pub fn step(msg: impl std::fmt::Display) {
    eprintln!("==> {msg}");
}

/// Prints a detail line under a step.
pub fn info(msg: impl std::fmt::Display) {
    eprintln!("    {msg}");
}

fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        let a = a.to_string_lossy();
        if a.contains(' ') || a.is_empty() {
            s.push_str(&format!(" '{a}'"));
        } else {
            s.push(' ');
            s.push_str(&a);
        }
    }
    s
}

/// Runs a command with inherited stdio; fails if it exits non-zero.
pub fn run(cmd: &mut Command) -> Result<()> {
    let d = describe(cmd);
    info(format!("$ {d}"));
    let status = cmd
        .status()
        .with_context(|| format!("cannot start `{d}`"))?;
    if !status.success() {
        bail!("`{d}` failed: {status}");
    }
    Ok(())
}

/// Runs a command quietly and returns its output; fails with its stderr if it exits non-zero.
pub fn output(cmd: &mut Command) -> Result<Output> {
    let d = describe(cmd);
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot start `{d}`"))?;
    if !out.status.success() {
        bail!(
            "`{d}` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out)
}

/// Like `output`, but prints the command first.
pub fn run_quiet(cmd: &mut Command) -> Result<Output> {
    info(format!("$ {}", describe(cmd)));
    output(cmd)
}

/// Runs a command and reports only whether it succeeded (for probes).
pub fn succeeds(cmd: &mut Command) -> bool {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Shorthand for `Command::new(prog).args(args)`.
pub fn cmd<I, S>(prog: &str, args: I) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut c = Command::new(prog);
    c.args(args);
    c
}

/// The cargo that runs us (so `cargo +toolchain xtask` keeps its toolchain).
pub fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

/// The workspace root (xtask lives one level below it).
pub fn workspace_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}

/// Finds a program on PATH (and in ~/.cargo/bin, where `cargo install` puts things).
pub fn which(prog: &str) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    if let Some(home) = std::env::var_os("HOME") {
        dirs.push(PathBuf::from(home).join(".cargo/bin"));
    }
    dirs.into_iter().map(|d| d.join(prog)).find(|p| p.is_file())
}

/// Fails unless we run as root (the cluster needs netns, cgroups, mounts, BPF).
pub fn require_root(what: &str) -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!(
            "`cargo xtask {what}` needs root (network namespaces, cgroups, mounts, BPF); run it with sudo"
        );
    }
    Ok(())
}

/// The bpf file system the datapath pins its maps in.
pub const BPFFS: &str = "/sys/fs/bpf";

/// True when `mounts` (the text of /proc/self/mounts) has a bpf file system on `dir`.
fn bpffs_mounted(mounts: &str, dir: &str) -> bool {
    mounts.lines().any(|l| {
        let mut f = l.split_whitespace();
        let (_src, target, fstype) = (f.next(), f.next(), f.next());
        target == Some(dir) && fstype == Some("bpf")
    })
}

/// Mounts the bpf file system on /sys/fs/bpf when it is missing. Most machines
/// mount it at boot, but not all (seen on a fresh machine of ours): the
/// privileged datapath tests and the agents pin maps there.
pub fn ensure_bpffs() -> Result<()> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    if bpffs_mounted(&mounts, BPFFS) {
        return Ok(());
    }
    info(format!("mounting the bpf file system on {BPFFS}"));
    std::fs::create_dir_all(BPFFS).ok();
    run(&mut cmd("mount", ["-t", "bpf", "bpf", BPFFS]))
}

#[cfg(test)]
mod bpffs_tests {
    use super::bpffs_mounted;

    #[test]
    fn finds_only_a_bpf_mount_on_the_dir() {
        let cases = [
            ("bpf /sys/fs/bpf bpf rw,relatime 0 0\n", true),
            ("none /sys/fs/bpf tmpfs rw 0 0\n", false),
            ("bpf /sys/fs/bpf/x bpf rw 0 0\n", false),
            ("", false),
        ];
        for (mounts, want) in cases {
            assert_eq!(bpffs_mounted(mounts, "/sys/fs/bpf"), want, "{mounts:?}");
        }
    }
}
