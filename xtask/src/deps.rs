//! `cargo xtask deps`: installs every system dependency of the build and of
//! the local cluster. Idempotent and fast when everything is present: it
//! checks first (`dpkg-query`, `rustup ... list`, PATH) and only then calls
//! `apt-get update`/`install`, `rustup` or `cargo install`.

use anyhow::{Context, Result};

use crate::cmd::{self, cmd, info, step};

/// Debian packages, each with why weir needs it.
pub const APT_PACKAGES: &[(&str, &str)] = &[
    (
        "etcd-server",
        "the API server's store (weir-control runs it embedded)",
    ),
    (
        "containerd",
        "the container runtime, one per node, driven through CRI",
    ),
    ("runc", "containerd's OCI runtime"),
    (
        "libprotobuf-dev",
        "google/protobuf/*.proto, which etcd-client's build needs beside protoc",
    ),
    (
        "protobuf-compiler",
        "protoc, for the etcd-client and CRI stubs",
    ),
    (
        "llvm-22-dev",
        "bpf-linker links the eBPF programs against LLVM 22",
    ),
    ("umoci", "builds the test OCI images"),
    ("skopeo", "pushes the test images into the local registry"),
    ("docker-registry", "the local image registry"),
    ("busybox-static", "the userland of the test images"),
    ("bpftool", "inspecting loaded eBPF programs and maps"),
    ("iproute2", "ip: bridge, veths, network namespaces"),
    (
        "containernetworking-plugins",
        "the reference `loopback` CNI plugin",
    ),
    (
        "util-linux",
        "nsenter: starts containerd inside a node's netns",
    ),
    ("gcc", "builds the static pause binary"),
    ("libc6-dev", "static libc for the pause binary"),
];

/// Extra packages only the benchmarks need (kept out of `deps`: installing
/// iptables can switch the system's `iptables` alternative).
pub const BENCH_APT_PACKAGES: &[(&str, &str)] = &[
    (
        "iptables",
        "the kube-proxy (iptables-legacy) baseline of the benchmarks",
    ),
    (
        "nftables",
        "nft: the kube-proxy nftables-mode baseline of weir-bench datapath",
    ),
    (
        "ethtool",
        "weir-bench nodeport: GRO on veths (NAPI for XDP frames) and veth XDP counters",
    ),
];

/// The LLVM that bpf-linker is built against (matches `llvm-22-dev`).
const LLVM_PREFIX: &str = "/usr/lib/llvm-22";

/// Parses `dpkg-query -W -f '${Package} ${Status}\n'` output into installed package names.
fn installed_packages(dpkg_output: &str) -> Vec<&str> {
    dpkg_output
        .lines()
        .filter_map(|l| {
            let (pkg, status) = l.split_once(' ')?;
            status.ends_with("install ok installed").then_some(pkg)
        })
        .collect()
}

/// The packages of `wanted` that are not installed, given dpkg-query's output.
fn missing_packages<'a>(wanted: &[&'a str], dpkg_output: &str) -> Vec<&'a str> {
    let installed = installed_packages(dpkg_output);
    wanted
        .iter()
        .copied()
        .filter(|p| !installed.contains(p))
        .collect()
}

pub fn run() -> Result<()> {
    step("checking system dependencies");
    apt(APT_PACKAGES)?;
    rust_toolchain()?;
    bpf_linker()?;
    info("all dependencies present");
    Ok(())
}

/// The benchmarks' extra packages.
pub fn bench() -> Result<()> {
    apt(BENCH_APT_PACKAGES)
}

fn apt(packages: &[(&str, &str)]) -> Result<()> {
    let wanted: Vec<&str> = packages.iter().map(|(p, _)| *p).collect();
    // dpkg-query exits non-zero when some package is unknown; its stdout still lists the known ones.
    let out = cmd("dpkg-query", ["-W", "-f", "${Package} ${Status}\n"])
        .args(&wanted)
        .stderr(std::process::Stdio::null())
        .output()
        .context("cannot run dpkg-query (is this Debian?)")?;
    let missing = missing_packages(&wanted, &String::from_utf8_lossy(&out.stdout));
    if missing.is_empty() {
        info(format!("apt packages: all {} installed", wanted.len()));
        return Ok(());
    }
    for p in &missing {
        let why = APT_PACKAGES
            .iter()
            .find(|(n, _)| n == p)
            .map(|(_, w)| *w)
            .unwrap_or("");
        info(format!("missing {p}: {why}"));
    }
    cmd::require_root("deps")?;
    cmd::run(cmd("apt-get", ["update"]).env("DEBIAN_FRONTEND", "noninteractive"))?;
    cmd::run(
        cmd("apt-get", ["install", "-y", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )?;
    Ok(())
}

fn rust_toolchain() -> Result<()> {
    let toolchains = cmd::output(&mut cmd("rustup", ["toolchain", "list"]))?;
    let has_nightly = String::from_utf8_lossy(&toolchains.stdout)
        .lines()
        .any(|l| l.starts_with("nightly"));
    if !has_nightly {
        info("missing the nightly toolchain (the eBPF programs build with -Z build-std)");
        cmd::run(&mut cmd(
            "rustup",
            ["toolchain", "install", "nightly", "--profile", "minimal"],
        ))?;
    }
    let comps = cmd::output(&mut cmd(
        "rustup",
        ["component", "list", "--toolchain", "nightly", "--installed"],
    ))?;
    if !String::from_utf8_lossy(&comps.stdout)
        .lines()
        .any(|l| l.starts_with("rust-src"))
    {
        info("missing rust-src for nightly (needed by -Z build-std=core)");
        cmd::run(&mut cmd(
            "rustup",
            ["component", "add", "rust-src", "--toolchain", "nightly"],
        ))?;
    } else {
        info("rust: nightly with rust-src installed");
    }
    Ok(())
}

fn bpf_linker() -> Result<()> {
    if let Some(p) = cmd::which("bpf-linker") {
        info(format!("bpf-linker: {}", p.display()));
        return Ok(());
    }
    info(
        "missing bpf-linker (links the eBPF programs); building it against LLVM 22 (a few minutes)",
    );
    // Plain `cargo install bpf-linker` defaults to LLVM 23, which Debian 12 does not have.
    cmd::run(
        cmd::cargo()
            .args([
                "install",
                "bpf-linker",
                "--no-default-features",
                "--features",
                "llvm-22",
            ])
            .env("LLVM_PREFIX", LLVM_PREFIX),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_missing_packages_from_dpkg_output() {
        let out = "etcd-server install ok installed\n\
                   runc deinstall ok config-files\n\
                   umoci install ok installed\n";
        let cases: [(&[&str], &[&str]); 3] = [
            (&["etcd-server", "umoci"], &[]),
            (&["etcd-server", "runc", "skopeo"], &["runc", "skopeo"]),
            (&[], &[]),
        ];
        for (wanted, missing) in cases {
            assert_eq!(missing_packages(wanted, out), missing, "{wanted:?}");
        }
    }

    #[test]
    fn every_package_says_why() {
        assert!(
            APT_PACKAGES
                .iter()
                .all(|(p, why)| !p.is_empty() && !why.is_empty())
        );
    }
}
