//! Builds the eBPF programs (`ebpf/programs`, package `weir-ebpf`) and copies
//! the object to `$OUT_DIR/weir-ebpf.o`, which `src/lib.rs` embeds with
//! `aya::include_bytes_aligned!`.
//!
//! The programs target `bpfel-unknown-none`, which needs the nightly toolchain
//! (`-Z build-std=core`), its `rust-src` component and `bpf-linker`; the nested
//! build uses its own target dir (`ebpf/programs/target`) so it never waits on
//! the lock of the outer build's target dir (cargo#6412) and is shared across
//! the outer build's profiles. `rerun-if-changed` covers every input of the
//! programs, so `cargo build -p weir-datapath` (and so the agent) never embeds a stale object.

use std::{
    env,
    path::{Path, PathBuf},
    process::{Command, ExitCode},
};

const BPF_TARGET: &str = "bpfel-unknown-none";
const HINT: &str = "run `cargo xtask deps` to install the eBPF toolchain \
                    (nightly + rust-src, llvm-22-dev, bpf-linker)";

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("error: building the weir eBPF programs failed: {msg}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    let manifest_dir = PathBuf::from(env_var("CARGO_MANIFEST_DIR")?);
    let out_dir = PathBuf::from(env_var("OUT_DIR")?);
    // This crate lives at agent/datapath; the eBPF crates at ebpf/.
    let ebpf_dir = manifest_dir.join("..").join("..").join("ebpf");
    let programs = ebpf_dir.join("programs");
    let common = ebpf_dir.join("common");

    for input in [
        programs.join("src"),
        programs.join("Cargo.toml"),
        programs.join("Cargo.lock"),
        common.join("src"),
        common.join("Cargo.toml"),
    ] {
        println!("cargo:rerun-if-changed={}", input.display());
    }

    check_toolchain()?;

    let target_dir = programs.join("target");
    let mut cmd = Command::new("cargo");
    cmd.current_dir(&programs)
        .args([
            "+nightly",
            "build",
            "--release",
            "--target",
            BPF_TARGET,
            "-Z",
            "build-std=core",
        ])
        .arg("--target-dir")
        .arg(&target_dir);
    scrub_outer_cargo_env(&mut cmd);
    // BTF (from debug info, emitted by bpf-linker) lets bpftool and the
    // verifier's messages show types and source lines.
    cmd.env(
        "CARGO_TARGET_BPFEL_UNKNOWN_NONE_RUSTFLAGS",
        "-C debuginfo=2 -C link-arg=--btf",
    );

    let status = cmd
        .status()
        .map_err(|e| format!("cannot run `cargo +nightly`: {e}; {HINT}"))?;
    if !status.success() {
        return Err(format!(
            "`cargo +nightly build --target {BPF_TARGET}` in {} failed ({status}); \
             see the compiler output above. If the toolchain is missing, {HINT}",
            programs.display()
        ));
    }

    let object = target_dir
        .join(BPF_TARGET)
        .join("release")
        .join("weir-ebpf");
    let dest = out_dir.join("weir-ebpf.o");
    std::fs::copy(&object, &dest).map_err(|e| {
        format!(
            "cannot copy {} to {}: {e}",
            object.display(),
            dest.display()
        )
    })?;
    Ok(())
}

fn env_var(name: &str) -> Result<String, String> {
    env::var(name).map_err(|_| format!("cargo did not set {name}"))
}

/// Fails early with a clear message when a piece of the eBPF toolchain is
/// missing (otherwise the nested build fails with an obscure linker error).
fn check_toolchain() -> Result<(), String> {
    let sysroot = Command::new("rustc")
        .args(["+nightly", "--print", "sysroot"])
        .env_remove("RUSTC")
        .env_remove("RUSTUP_TOOLCHAIN")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .ok_or_else(|| format!("the nightly Rust toolchain is not installed; {HINT}"))?;
    let core_src = Path::new(&sysroot).join("lib/rustlib/src/rust/library/core");
    if !core_src.is_dir() {
        return Err(format!(
            "the nightly toolchain has no rust-src component ({} is missing); {HINT}",
            core_src.display()
        ));
    }
    let linker_ok = Command::new("bpf-linker")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !linker_ok {
        return Err(format!("`bpf-linker` is not on PATH; {HINT}"));
    }
    Ok(())
}

/// Removes what the outer cargo passes to build scripts, so the nested build
/// is configured only by its own manifest and the flags above: the outer
/// RUSTC (stable) would override `+nightly`, RUSTFLAGS meant for the host
/// would break the BPF target, and CARGO_TARGET_DIR would point the nested
/// build at the outer (locked) target dir. The jobserver (CARGO_MAKEFLAGS) is
/// kept so the nested build shares the outer build's job slots.
fn scrub_outer_cargo_env(cmd: &mut Command) {
    const EXACT: &[&str] = &[
        "RUSTC",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTC_LINKER",
        "RUSTFLAGS",
        "RUSTDOCFLAGS",
        "RUSTUP_TOOLCHAIN",
        "CARGO",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "CARGO_BUILD_TARGET_DIR",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_BUILD_RUSTFLAGS",
        "CARGO_MANIFEST_DIR",
        "CARGO_MANIFEST_PATH",
        "CARGO_PRIMARY_PACKAGE",
        "OUT_DIR",
        "TARGET",
        "HOST",
        "PROFILE",
        "OPT_LEVEL",
        "DEBUG",
        "NUM_JOBS",
    ];
    const PREFIXES: &[&str] = &[
        "CARGO_CFG_",
        "CARGO_FEATURE_",
        "CARGO_PKG_",
        "CARGO_PROFILE_",
    ];
    for (key, _) in env::vars_os() {
        let Some(key) = key.to_str() else { continue };
        if EXACT.contains(&key) || PREFIXES.iter().any(|p| key.starts_with(p)) {
            cmd.env_remove(key);
        }
    }
}
