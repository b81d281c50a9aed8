//! The cluster's processes: started detached into a cgroup we own (so that
//! every descendant — etcd, containerd shims, containers — can be found and
//! stopped later without guessing by name), recorded with their start time
//! (so a recycled PID is never killed by mistake).

use std::fs::{self, OpenOptions};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use crate::cmd::info;

/// One recorded process.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Process {
    pub name: String,
    pub pid: i32,
    /// Field 22 of /proc/PID/stat (start time in clock ticks since boot).
    pub start_time: u64,
    pub log: PathBuf,
}

/// A started daemon with its child handle (to notice an early exit).
pub struct Daemon {
    pub record: Process,
    pub child: Child,
}

impl Daemon {
    /// `Some(status)` if the daemon already exited.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }
}

/// Parses the start time (field 22) out of /proc/PID/stat. The command name
/// (field 2) may contain spaces and parentheses, so fields are counted after
/// the last ')'.
pub fn parse_start_time(stat: &str) -> Option<u64> {
    let after = &stat[stat.rfind(')')? + 1..];
    // after: " S ppid ..." -> field 3 is the first token; field 22 is the 20th.
    after.split_whitespace().nth(19)?.parse().ok()
}

/// Parses the state letter (field 3) of /proc/PID/stat.
pub fn parse_state(stat: &str) -> Option<char> {
    stat[stat.rfind(')')? + 1..]
        .split_whitespace()
        .next()?
        .chars()
        .next()
}

fn read_stat(pid: i32) -> Option<String> {
    fs::read_to_string(format!("/proc/{pid}/stat")).ok()
}

/// Whether the recorded process still runs (same PID *and* start time, not a zombie).
pub fn is_alive(p: &Process) -> bool {
    read_stat(p.pid)
        .is_some_and(|s| parse_start_time(&s) == Some(p.start_time) && parse_state(&s) != Some('Z'))
}

/// Whether a bare PID runs (not a zombie).
pub fn pid_alive(pid: i32) -> bool {
    read_stat(pid).is_some_and(|s| parse_state(&s) != Some('Z'))
}

/// Starts `argv` detached (own process group, stdio to `log`) inside the cgroup2
/// directory `cgroup`: a tiny shell moves itself there and then execs the
/// program, so the PID we record is the daemon's own and all its children
/// inherit the cgroup.
pub fn spawn(name: &str, cgroup: &Path, argv: &[String], log: &Path) -> Result<Daemon> {
    fs::create_dir_all(cgroup)
        .with_context(|| format!("cannot create cgroup {}", cgroup.display()))?;
    let out = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("cannot open {}", log.display()))?;
    let err = out.try_clone()?;
    info(format!("$ {} >{} 2>&1 &", argv.join(" "), log.display()));
    let mut c = Command::new("sh");
    c.arg("-c")
        .arg(r#"echo $$ > "$0/cgroup.procs" && exec "$@""#)
        .arg(cgroup)
        .args(argv)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        // Own process group: a Ctrl-C at the terminal that ran `up` must not stop the cluster.
        .process_group(0);
    let child = c.spawn().with_context(|| format!("cannot start {name}"))?;
    let pid = child.id() as i32;
    let start_time = read_stat(pid)
        .and_then(|s| parse_start_time(&s))
        .context("cannot read the new process's start time")?;
    Ok(Daemon {
        record: Process {
            name: name.to_string(),
            pid,
            start_time,
            log: log.to_path_buf(),
        },
        child,
    })
}

/// Sends SIGTERM to the live ones of `procs`, waits up to `grace`, then SIGKILLs the rest.
pub fn terminate(procs: &[Process], grace: Duration) {
    let live: Vec<&Process> = procs.iter().filter(|p| is_alive(p)).collect();
    for p in &live {
        info(format!("stopping {} (pid {})", p.name, p.pid));
        let _ = kill(Pid::from_raw(p.pid), Signal::SIGTERM);
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline && live.iter().any(|p| is_alive(p)) {
        std::thread::sleep(Duration::from_millis(100));
    }
    for p in live.iter().filter(|p| is_alive(p)) {
        info(format!(
            "{} (pid {}) ignored SIGTERM for {grace:?}: SIGKILL",
            p.name, p.pid
        ));
        let _ = kill(Pid::from_raw(p.pid), Signal::SIGKILL);
    }
}

/// Reaps every child of this process that has exited, without blocking.
/// The daemons `up` starts are children of the xtask process that started
/// them (tier 3 runs `up`, the tests and `down` in one process); one that
/// died unreaped stays a zombie, listed in its cgroup's `cgroup.procs`.
pub fn reap_children() {
    use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
    while let Ok(status) = waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
        if status == WaitStatus::StillAlive {
            break;
        }
    }
}

/// SIGKILLs `pids` and waits until they are gone (or `timeout` passes).
pub fn kill_all(pids: &[i32], timeout: Duration) -> Result<()> {
    for pid in pids {
        let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
    }
    let deadline = Instant::now() + timeout;
    while pids.iter().any(|p| pid_alive(*p)) {
        if Instant::now() > deadline {
            let left: Vec<i32> = pids.iter().copied().filter(|p| pid_alive(*p)).collect();
            bail!("processes {left:?} survived SIGKILL for {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// The last `n` lines of a log file (empty if unreadable).
pub fn tail(path: &Path, n: usize) -> String {
    let text = fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_stat() {
        let cases = [
            (
                "1234 (containerd) S 1 1234 1234 0 -1 4194560 100 0 0 0 5 3 0 0 20 0 12 0 987654 123 456",
                Some(987654),
                Some('S'),
            ),
            // A command name with spaces and a ')' must not shift the fields.
            (
                "77 (a b) c) Z 1 77 77 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 42 0 0",
                Some(42),
                Some('Z'),
            ),
            ("garbage", None, None),
            ("5 (x) R 1", None, Some('R')),
        ];
        for (stat, start, state) in cases {
            assert_eq!(parse_start_time(stat), start, "{stat}");
            assert_eq!(parse_state(stat), state, "{stat}");
        }
    }

    #[test]
    fn our_own_process_is_alive_and_a_wrong_start_time_is_not() {
        let pid = std::process::id() as i32;
        let start = read_stat(pid).and_then(|s| parse_start_time(&s)).unwrap();
        let me = Process {
            name: "me".into(),
            pid,
            start_time: start,
            log: PathBuf::new(),
        };
        assert!(is_alive(&me));
        assert!(!is_alive(&Process {
            start_time: start + 1,
            ..me
        }));
    }
}
