//! One core for forwarding: threaded NAPI and CPU accounting.
//!
//! A veth's receive processing (weir's XDP program, or the stack with
//! iptables/nftables, up to handing the forwarded frame to the peer) runs in
//! its NAPI poll. By default that poll runs in softirq on the CPU that
//! scheduled it — the generator's CPU, since the generator's
//! `ndo_xdp_xmit` schedules it. With threaded NAPI
//! (`/sys/class/net/<if>/threaded`, kernel ≥ 5.12) each poll runs in a
//! kthread `napi/<if>-<id>` that can be pinned like any task: the node's
//! `eth0` thread goes to the forward CPU, the segment's (the sink) to the
//! generator's CPU. RPS would not do: it steers skbs after the driver's poll,
//! i.e. after XDP has run. The threads are reniced to -19 like the benchmark
//! itself (kthreads do not inherit its niceness).

use std::collections::BTreeSet;
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::nodeport_topo::in_netns;

/// Per-CPU jiffies from a `/proc/stat` text: total, idle (+ iowait),
/// system + softirq (pure).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuTimes {
    pub total: u64,
    pub idle: u64,
    pub kernel: u64,
}

pub fn parse_cpu_times(stat: &str, cpu: usize) -> Option<CpuTimes> {
    let prefix = format!("cpu{cpu} ");
    let line = stat.lines().find(|l| l.starts_with(&prefix))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|x| x.parse().ok())
        .collect::<Option<_>>()?;
    if v.len() < 8 {
        return None;
    }
    // user nice system idle iowait irq softirq steal [guest guest_nice]:
    // guest time is already inside user.
    Some(CpuTimes {
        total: v.iter().take(8).sum(),
        idle: v[3] + v[4],
        kernel: v[2] + v[5] + v[6],
    })
}

pub fn cpu_times(cpu: usize) -> Result<CpuTimes> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    parse_cpu_times(&stat, cpu).with_context(|| format!("no cpu{cpu} line in /proc/stat"))
}

/// utime + stime (clock ticks, as `/proc/stat`) from a `/proc/<pid>/stat`
/// text (pure). The command name may contain spaces and parentheses: fields
/// are counted from the last `)`.
pub fn parse_task_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state(3) ... utime is field 14, stime 15 (1-based).
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

pub fn task_ticks(pid: i32) -> Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("task {pid} is gone"))?;
    parse_task_ticks(&stat).with_context(|| format!("cannot parse /proc/{pid}/stat"))
}

/// Every task's (pid, comm).
fn tasks() -> Result<Vec<(i32, String)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc")? {
        let entry = entry?;
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        if let Ok(comm) = std::fs::read_to_string(entry.path().join("comm")) {
            out.push((pid, comm.trim().to_owned()));
        }
    }
    Ok(out)
}

/// NAPI threads of device `dev` that appear in `after` but not in
/// `before` (pure). Thread names are global (`napi/<if>-<napi id>`) while
/// interface names are per netns, so the one that turning threading on for
/// a netns's `dev` created is found by difference.
pub fn new_napi_threads(before: &[(i32, String)], after: &[(i32, String)], dev: &str) -> Vec<i32> {
    let prefix = format!("napi/{dev}-");
    let old: BTreeSet<i32> = before.iter().map(|t| t.0).collect();
    after
        .iter()
        .filter(|(pid, comm)| comm.starts_with(&prefix) && !old.contains(pid))
        .map(|t| t.0)
        .collect()
}

/// Turns threaded NAPI on for `dev` in `netns`, pins its thread to `cpu` and
/// renices it to -19; returns the thread's pid.
pub fn thread_napi(netns: &str, dev: &str, cpu: usize) -> Result<i32> {
    let before = tasks()?;
    in_netns(
        netns,
        &[
            "sh",
            "-c",
            &format!("echo 1 > /sys/class/net/{dev}/threaded"),
        ],
    )
    .with_context(|| format!("cannot turn threaded NAPI on for {dev} in {netns}"))?;
    let mut found = Vec::new();
    for _ in 0..50 {
        found = new_napi_threads(&before, &tasks()?, dev);
        if !found.is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let [pid] = found[..] else {
        bail!(
            "expected one new napi/{dev}-* thread for {netns}, found {found:?} (does {dev} run NAPI?)"
        );
    };
    pin(pid, cpu)?;
    let status = Command::new("renice")
        .args(["-n", "-19", "-p", &pid.to_string()])
        .stdout(std::process::Stdio::null())
        .status()
        .context("cannot run renice")?;
    anyhow::ensure!(status.success(), "cannot renice napi thread {pid}");
    Ok(pid)
}

/// Pins task `pid` (0: the calling thread) to `cpu`.
pub fn pin(pid: i32, cpu: usize) -> Result<()> {
    let mut set = nix::sched::CpuSet::new();
    set.set(cpu).context("CPU number out of range")?;
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(pid), &set)
        .with_context(|| format!("cannot pin task {pid} to CPU {cpu}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lines_parse() {
        let stat = "cpu  10 0 10 100 0 0 0 0 0 0\ncpu0 1 2 3 4 5 6 7 8 9 10\ncpu1 100 0 50 800 50 0 25 0 0 0\n";
        let cases = [
            (
                0,
                Some(CpuTimes {
                    total: 36,
                    idle: 9,
                    kernel: 16,
                }),
            ),
            (
                1,
                Some(CpuTimes {
                    total: 1025,
                    idle: 850,
                    kernel: 75,
                }),
            ),
            (2, None),
        ];
        for (cpu, want) in cases {
            assert_eq!(parse_cpu_times(stat, cpu), want, "cpu{cpu}");
        }
        assert_eq!(parse_cpu_times("cpu0 1 2 3\n", 0), None, "short line");
    }

    #[test]
    fn task_stat_parses_past_odd_names() {
        let cases = [
            (
                "42 (napi/eth0-8201) R 2 0 0 0 -1 2129984 0 0 0 0 7 1234 0 0 20 0 1 0 5 0 0",
                Some(1241),
            ),
            (
                "43 (a b) c) S 1 1 1 0 -1 0 0 0 0 0 3 4 0 0 20 0 1 0 5 0 0",
                Some(7),
            ),
            ("44 (short) S 1", None),
        ];
        for (stat, want) in cases {
            assert_eq!(parse_task_ticks(stat), want, "{stat}");
        }
    }

    #[test]
    fn new_napi_threads_by_difference() {
        let before = vec![
            (10, "napi/eth0-8193".to_owned()),
            (11, "kworker/0:1".to_owned()),
        ];
        let after = vec![
            (10, "napi/eth0-8193".to_owned()),
            (11, "kworker/0:1".to_owned()),
            (12, "napi/eth0-8210".to_owned()),
            (13, "napi/wrsrv0-82".to_owned()),
        ];
        assert_eq!(new_napi_threads(&before, &after, "eth0"), vec![12]);
        assert_eq!(new_napi_threads(&after, &after, "eth0"), Vec::<i32>::new());
    }
}
