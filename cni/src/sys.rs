//! Every system call and kernel knob the plugin uses, in one place.
//!
//! All of it goes through `nix`'s safe wrappers, so this crate needs no
//! `unsafe` at all (`#![forbid(unsafe_code)]` holds crate-wide); what needs
//! care here is not memory safety but which thread is in which network
//! namespace.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use nix::sched::{CloneFlags, setns};

/// An exclusive advisory lock, released when dropped.
#[derive(Debug)]
pub struct FileLock {
    _lock: Flock<File>,
}

/// Takes an exclusive `flock` on `path` (created if missing), retrying for
/// up to `timeout`. `Ok(None)` when the lock stayed busy that long.
///
/// Polling with LOCK_NB instead of a blocking LOCK_EX lets the caller turn a
/// stuck peer into CNI's "try again later" instead of hanging the runtime.
pub fn lock_exclusive(path: &Path, timeout: Duration) -> io::Result<Option<FileLock>> {
    let deadline = Instant::now() + timeout;
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)?;
    loop {
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => return Ok(Some(FileLock { _lock: lock })),
            Err((f, Errno::EWOULDBLOCK)) => {
                if Instant::now() >= deadline {
                    return Ok(None);
                }
                file = f;
                std::thread::sleep(Duration::from_millis(5));
            }
            Err((_, errno)) => return Err(io::Error::from(errno)),
        }
    }
}

/// Why a closure could not be run inside a network namespace.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("cannot open {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("setns({path}) failed (is it a network namespace?): {source}")]
    Enter {
        path: PathBuf,
        #[source]
        source: Errno,
    },
    #[error("the thread working in {path} panicked")]
    Panicked { path: PathBuf },
}

/// Opens a network namespace file (e.g. `/run/netns/x` or `/proc/<pid>/ns/net`).
pub fn open_netns(path: &Path) -> Result<File, NetnsError> {
    File::open(path).map_err(|source| NetnsError::Open {
        path: path.to_path_buf(),
        source,
    })
}

/// Runs `f` on a new thread that has joined the network namespace at `path`.
///
/// setns(CLONE_NEWNET) only changes the calling thread, and a netlink socket
/// belongs to the namespace of the thread that created it, so `f` must create
/// its sockets itself. The thread ends with `f`, so no thread of this process
/// stays in the pod namespace and the caller's own namespace is untouched.
pub fn run_in_netns<T, F>(path: &Path, f: F) -> Result<T, NetnsError>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let ns = open_netns(path)?;
    let owned_path = path.to_path_buf();
    let handle = std::thread::Builder::new()
        .name("weir-cni-netns".into())
        .spawn(move || -> Result<T, NetnsError> {
            setns(&ns, CloneFlags::CLONE_NEWNET).map_err(|source| NetnsError::Enter {
                path: owned_path,
                source,
            })?;
            Ok(f())
        })
        .map_err(|source| NetnsError::Open {
            path: path.to_path_buf(),
            source,
        })?;
    handle.join().map_err(|_| NetnsError::Panicked {
        path: path.to_path_buf(),
    })?
}

const IP_FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";

/// Turns on IPv4 forwarding in the calling thread's network namespace (the
/// node's). /proc/sys/net resolves to the namespace of the opener, so this
/// must run on a thread that is in the node namespace. Returns whether it
/// had to change the value.
pub fn ensure_ip_forward() -> io::Result<bool> {
    let current = std::fs::read_to_string(IP_FORWARD)?;
    if current.trim() == "1" {
        return Ok(false);
    }
    std::fs::write(IP_FORWARD, "1\n")?;
    Ok(true)
}
