//! The agent's only contact with raw process-level syscalls.
//!
//! `setns(2)` switches the *calling thread's* network namespace. The agent calls
//! [`enter_netns`] from `main` before the tokio runtime exists, so every worker
//! thread the runtime spawns later inherits the node's namespace. Entering it
//! with `ip netns exec` instead would remount /sys and hide /sys/fs/bpf and
//! /sys/fs/cgroup (see shared/ENVIRONMENT.md), which the datapath needs.
//!
//! `nix` wraps setns(2) safely (it takes a borrowed fd), so this module needs
//! no `unsafe` block of its own.

use std::fs::File;
use std::path::{Path, PathBuf};

use nix::sched::{CloneFlags, setns};

/// Why entering a network namespace failed.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("cannot open network namespace {path}: {source} (does `ip netns add` exist for it?)")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("setns({path}, CLONE_NEWNET) failed: {source}")]
    Setns {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
}

/// Moves the calling thread into the network namespace bound at `path`
/// (for example `/run/netns/weir-node1`).
///
/// Must run while the process is still single-threaded: threads created
/// earlier would stay in the old namespace.
pub fn enter_netns(path: &Path) -> Result<(), NetnsError> {
    let file = File::open(path).map_err(|source| NetnsError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    setns(&file, CloneFlags::CLONE_NEWNET).map_err(|source| NetnsError::Setns {
        path: path.to_path_buf(),
        source,
    })
}

/// The bpf file system could not be checked or mounted.
#[derive(Debug, thiserror::Error)]
pub enum BpffsError {
    #[error("cannot inspect {path}: {source}")]
    Statfs {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("cannot mount the bpf file system on {path}: {source}")]
    Mount {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
}

/// Mounts the bpf file system on `root` (normally /sys/fs/bpf) unless one is
/// there already, like cilium-agent does: pinned maps need it, and a freshly
/// booted machine may not have it. Returns whether it mounted.
///
/// The agent only setns()es its network namespace, so this is the host's
/// mount namespace and the mount outlives the agent (as it should: pins
/// survive agent restarts).
pub fn ensure_bpffs(root: &Path) -> Result<bool, BpffsError> {
    use nix::mount::{MsFlags, mount};
    use nix::sys::statfs::{BPF_FS_MAGIC, statfs};
    let st = statfs(root).map_err(|source| BpffsError::Statfs {
        path: root.to_path_buf(),
        source,
    })?;
    if st.filesystem_type() == BPF_FS_MAGIC {
        return Ok(false);
    }
    mount(
        Some("bpf"),
        root,
        Some("bpf"),
        MsFlags::empty(),
        None::<&str>,
    )
    .map_err(|source| BpffsError::Mount {
        path: root.to_path_buf(),
        source,
    })?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn ip(args: &[&str]) {
        let status = Command::new("ip").args(args).status().expect("run ip");
        assert!(status.success(), "ip {args:?}");
    }

    #[test]
    #[ignore = "privileged: creates a network namespace (root)"]
    fn enters_a_named_netns() {
        let name = format!("wagent-sys-{}", std::process::id());
        ip(&["netns", "add", &name]);
        let path = PathBuf::from(format!("/run/netns/{name}"));
        // setns affects only the calling thread: check from a throwaway one.
        let (before, after, entered) = std::thread::spawn(move || {
            let before = std::fs::read_link("/proc/thread-self/ns/net").expect("ns link");
            let entered = enter_netns(&path);
            let after = std::fs::read_link("/proc/thread-self/ns/net").expect("ns link");
            (before, after, entered)
        })
        .join()
        .expect("thread");
        ip(&["netns", "del", &name]);
        entered.expect("setns");
        assert_ne!(before, after, "the thread moved to the new namespace");
    }

    #[test]
    #[ignore = "privileged: mounts a bpf file system (root)"]
    fn mounts_bpffs_once() {
        let dir = std::env::temp_dir().join(format!("wagent-bpffs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let first = ensure_bpffs(&dir);
        let second = ensure_bpffs(&dir);
        let unmounted = nix::mount::umount2(&dir, nix::mount::MntFlags::MNT_DETACH);
        std::fs::remove_dir(&dir).expect("cleanup");
        assert!(first.expect("mount"), "mounted the first time");
        assert!(!second.expect("check"), "already a bpffs the second time");
        unmounted.expect("umount");
    }

    #[test]
    fn missing_netns_is_a_clear_error() {
        let err =
            enter_netns(Path::new("/run/netns/wagent-does-not-exist")).expect_err("must fail");
        assert!(matches!(err, NetnsError::Open { .. }), "{err}");
    }
}
