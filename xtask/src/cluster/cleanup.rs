//! `cargo xtask down`: removes a cluster completely. Safe to run twice and
//! after a crash: everything except the recorded PIDs is found from the
//! cluster name alone (cgroups, netns, links, mounts, bpffs pins, dirs).

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use nix::mount::{MntFlags, umount2};

use super::procs;
use super::state::ClusterState;
use crate::cmd::{self, cmd, info, step};
use crate::layout::{Layout, cgroup_hierarchies};

pub fn down(layout: &Layout) -> Result<()> {
    cmd::require_root("down")?;
    step(format!("tearing down cluster {:?}", layout.name));
    let mut problems = Vec::new();
    let mut note = |what: &str, r: Result<()>| {
        if let Err(e) = r {
            info(format!("warning: {what}: {e:#}"));
            problems.push(format!("{what}: {e:#}"));
        }
    };

    // 1. Our daemons, politely, agents first so they stop touching containerd.
    if let Some(state) = ClusterState::load(&layout.state_file()).unwrap_or(None) {
        let mut order = state.processes.clone();
        order.sort_by_key(|p| stop_rank(&p.name));
        procs::terminate(&order, Duration::from_secs(10));
    }
    // 2. Whatever is left in our cgroups (shims, containers, etcd) or netns.
    note("kill leftover processes", kill_leftovers(layout));
    // 3. Mounts (container rootfs, pod netns, shm) under the cluster's dirs.
    note(
        "unmount",
        unmount_under(&[layout.state_dir(), layout.run_dir()]),
    );
    // 4. Network namespaces and links.
    note("delete netns", delete_netns(layout));
    note("delete links", delete_links(layout));
    // 5. cgroups, deepest first, in every hierarchy, once no task is left in them.
    note(
        "wait for the cgroups to empty",
        wait_cgroups_empty(layout, Duration::from_secs(60)),
    );
    note("remove cgroups", remove_cgroups(layout));
    // 6. bpffs pins and state.
    for dir in [layout.bpffs_dir(), layout.state_dir(), layout.run_dir()] {
        note(&format!("remove {}", dir.display()), remove_dir(&dir));
    }
    // Check, rather than trust, that nothing of the cluster is left.
    for left in leftovers(layout) {
        problems.push(format!("left behind: {left}"));
    }
    if problems.is_empty() {
        info(format!("cluster {:?} removed", layout.name));
        Ok(())
    } else {
        anyhow::bail!(
            "cluster {:?} partly removed: {}",
            layout.name,
            problems.join("; ")
        )
    }
}

/// Whatever of the cluster still exists: processes, mounts, netns, links,
/// cgroups, bpffs pins, directories. Empty after a complete `down`.
pub fn leftovers(layout: &Layout) -> Vec<String> {
    let mut left = Vec::new();
    let cgroups = owned_cgroups(layout);
    let pids: Vec<i32> = cgroups
        .iter()
        .flat_map(|c| pids_in_cgroup_tree(c))
        .collect();
    if !pids.is_empty() {
        left.push(format!("processes {pids:?}"));
    }
    left.extend(cgroups.iter().map(|c| format!("cgroup {}", c.display())));
    let roots = [layout.state_dir(), layout.run_dir()];
    let mi = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    left.extend(
        mounts_under(&mi, &roots)
            .iter()
            .map(|m| format!("mount {}", m.display())),
    );
    left.extend(owned_netns(layout).iter().map(|n| format!("netns {n}")));
    if let Ok(out) = cmd::output(&mut cmd("ip", ["-o", "link", "show"])) {
        let links = parse_link_names(&String::from_utf8_lossy(&out.stdout));
        left.extend(
            links
                .into_iter()
                .filter(|l| owned_link(layout, l))
                .map(|l| format!("link {l}")),
        );
    }
    for dir in [layout.bpffs_dir(), layout.state_dir(), layout.run_dir()] {
        if dir.exists() {
            left.push(format!("directory {}", dir.display()));
        }
    }
    left
}

/// The order daemons stop in: agents, containerd, registries, then the control plane.
fn stop_rank(name: &str) -> u8 {
    match name.split('/').next().unwrap_or(name) {
        "agent" => 0,
        "containerd" => 1,
        "registry" => 2,
        "control" => 3,
        _ => 4,
    }
}

/// The cluster's top-level cgroup directories, in every hierarchy.
fn owned_cgroups(layout: &Layout) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for h in cgroup_hierarchies() {
        let Ok(children) = fs::read_dir(&h) else {
            continue;
        };
        for c in children.flatten() {
            let is_dir = c.file_type().is_ok_and(|t| t.is_dir());
            if is_dir
                && c.file_name()
                    .to_str()
                    .is_some_and(|n| layout.owns_cgroup(n))
            {
                out.push(c.path());
            }
        }
    }
    out
}

/// Every directory below (and including) `root`, deepest first.
fn dirs_deepest_first(root: &Path) -> Vec<PathBuf> {
    let mut all = vec![root.to_path_buf()];
    let mut i = 0;
    while i < all.len() {
        if let Ok(rd) = fs::read_dir(&all[i]) {
            for e in rd.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    all.push(e.path());
                }
            }
        }
        i += 1;
    }
    all.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    all
}

fn pids_in_cgroup_tree(root: &Path) -> Vec<i32> {
    dirs_deepest_first(root)
        .iter()
        .filter_map(|d| fs::read_to_string(d.join("cgroup.procs")).ok())
        .flat_map(|s| {
            s.lines()
                .filter_map(|l| l.trim().parse().ok())
                .collect::<Vec<i32>>()
        })
        .collect()
}

fn owned_netns(layout: &Layout) -> Vec<String> {
    let out = cmd::output(&mut cmd("ip", ["netns", "list"]))
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
    parse_netns_list(&out.unwrap_or_default())
        .into_iter()
        .filter(|n| layout.owns_netns(n))
        .collect()
}

/// Names from `ip netns list` ("name" or "name (id: 3)").
fn parse_netns_list(out: &str) -> Vec<String> {
    out.lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

fn kill_leftovers(layout: &Layout) -> Result<()> {
    for _ in 0..5 {
        let mut pids: Vec<i32> = owned_cgroups(layout)
            .iter()
            .flat_map(|c| pids_in_cgroup_tree(c))
            .collect();
        for ns in owned_netns(layout) {
            if let Ok(o) = cmd::output(&mut cmd("ip", ["netns", "pids", &ns])) {
                pids.extend(
                    String::from_utf8_lossy(&o.stdout)
                        .lines()
                        .filter_map(|l| l.trim().parse::<i32>().ok()),
                );
            }
        }
        let me = std::process::id() as i32;
        pids.retain(|p| *p != me && procs::pid_alive(*p));
        pids.sort_unstable();
        pids.dedup();
        if pids.is_empty() {
            return Ok(());
        }
        info(format!(
            "killing {} leftover processes (containers, shims, etcd)",
            pids.len()
        ));
        // Survivors (e.g. a process forked meanwhile) are caught by the next round.
        let _ = procs::kill_all(&pids, Duration::from_secs(5));
    }
    Ok(())
}

/// Decodes the octal escapes (`\040` for a space) of /proc/self/mountinfo paths.
fn unescape_mount_path(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Mount points (field 5 of mountinfo) at or below any of `roots`, deepest first.
fn mounts_under(mountinfo: &str, roots: &[PathBuf]) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(unescape_mount_path(p)))
        .filter(|p| roots.iter().any(|r| p.starts_with(r)))
        .collect();
    found.sort_by(|a, b| {
        b.components()
            .count()
            .cmp(&a.components().count())
            .then_with(|| a.cmp(b))
    });
    found.dedup();
    found
}

fn unmount_under(roots: &[PathBuf]) -> Result<()> {
    // Stacked mounts show up once per layer; loop until none are left.
    for _ in 0..10 {
        let mi = fs::read_to_string("/proc/self/mountinfo")?;
        let mounts = mounts_under(&mi, roots);
        if mounts.is_empty() {
            return Ok(());
        }
        for m in mounts {
            info(format!("umount {}", m.display()));
            // Lazy: a mount still referenced (e.g. a netns held by a dying process) goes when released.
            if let Err(e) = umount2(&m, MntFlags::MNT_DETACH) {
                info(format!("warning: umount {}: {e}", m.display()));
            }
        }
    }
    anyhow::bail!("mounts remain under {roots:?}")
}

fn delete_netns(layout: &Layout) -> Result<()> {
    for ns in owned_netns(layout) {
        cmd::run_quiet(&mut cmd("ip", ["netns", "delete", &ns]))?;
    }
    Ok(())
}

/// Links in the host netns that belong to the cluster: its bridge and the host ends of the veths.
fn owned_link(layout: &Layout, link: &str) -> bool {
    let Some(rest) = link.strip_prefix(&format!("{}-", layout.name)) else {
        return false;
    };
    rest == "br"
        || rest == "x"
        || rest
            .strip_prefix('n')
            .is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
}

/// Link names from `ip -o link show` ("3: name@peer: <...>").
fn parse_link_names(out: &str) -> Vec<String> {
    out.lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_string())
        .collect()
}

fn delete_links(layout: &Layout) -> Result<()> {
    let out = cmd::output(&mut cmd("ip", ["-o", "link", "show"]))?;
    for link in parse_link_names(&String::from_utf8_lossy(&out.stdout)) {
        if owned_link(layout, &link) {
            // A veth vanishes by itself once its peer's netns is gone; that race is fine.
            if let Err(e) = cmd::run_quiet(&mut cmd("ip", ["link", "delete", &link]))
                && Path::new("/sys/class/net").join(&link).exists()
            {
                return Err(e);
            }
        }
    }
    Ok(())
}

/// Waits until the cluster's cgroups list no task. A SIGKILLed
/// multi-threaded daemon (containerd) turns into a zombie as soon as its
/// main thread exits but stays in `cgroup.procs`, keeping `rmdir` busy,
/// until its last thread has left the kernel (seen taking over 10 s on a
/// loaded machine); our own dead children also stay there until reaped.
fn wait_cgroups_empty(layout: &Layout, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        procs::reap_children();
        let pids: Vec<i32> = owned_cgroups(layout)
            .iter()
            .flat_map(|c| pids_in_cgroup_tree(c))
            .collect();
        if pids.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            anyhow::bail!("processes {pids:?} still in the cluster's cgroups after {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn remove_cgroups(layout: &Layout) -> Result<()> {
    let mut last_err = None;
    for root in owned_cgroups(layout) {
        for dir in dirs_deepest_first(&root) {
            // A cgroup whose last process just died can stay busy for a moment.
            let mut r = fs::remove_dir(&dir);
            for _ in 0..20 {
                if !matches!(&r, Err(e) if e.raw_os_error() == Some(libc_ebusy())) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
                r = fs::remove_dir(&dir);
            }
            match r {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => last_err = Some(anyhow::anyhow!("rmdir {}: {e}", dir.display())),
            }
        }
    }
    last_err.map_or(Ok(()), Err)
}

fn libc_ebusy() -> i32 {
    nix::errno::Errno::EBUSY as i32
}

fn remove_dir(dir: &Path) -> Result<()> {
    match fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("cannot remove {}", dir.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_mounts_under_the_cluster_dirs_deepest_first() {
        let mi = "\
22 1 0:21 / /sys rw - sysfs sysfs rw
300 29 0:4 net:[4026532] /run/weir/weir/node1/containerd/io.containerd.grpc.v1.cri/netns/cni-1 rw - nsfs nsfs rw
301 29 0:50 / /run/weir/weir/node1/containerd/io.containerd.runtime.v2.task/k8s.io/abc/rootfs rw - overlay overlay rw
302 29 0:51 / /var/lib/weir/weir/with\\040space rw - tmpfs tmpfs rw
303 29 0:52 / /run/weir/weirtest/node1/x rw - tmpfs tmpfs rw
304 29 0:53 / /run/weir/weir rw - tmpfs tmpfs rw
";
        let roots = [
            PathBuf::from("/var/lib/weir/weir"),
            PathBuf::from("/run/weir/weir"),
        ];
        let got = mounts_under(mi, &roots);
        assert_eq!(
            got,
            vec![
                PathBuf::from(
                    "/run/weir/weir/node1/containerd/io.containerd.runtime.v2.task/k8s.io/abc/rootfs"
                ),
                PathBuf::from(
                    "/run/weir/weir/node1/containerd/io.containerd.grpc.v1.cri/netns/cni-1"
                ),
                PathBuf::from("/var/lib/weir/weir/with space"),
                PathBuf::from("/run/weir/weir"),
            ]
        );
    }

    #[test]
    fn unescapes_octal() {
        let cases = [
            ("a\\040b", "a b"),
            ("plain", "plain"),
            ("tab\\011", "tab\t"),
            ("bad\\09", "bad\\09"),
            ("end\\04", "end\\04"),
        ];
        for (input, want) in cases {
            assert_eq!(unescape_mount_path(input), want, "{input}");
        }
    }

    #[test]
    fn link_ownership() {
        let l = Layout::new("weir").unwrap();
        let cases = [
            ("weir-br", true),
            ("weir-n1", true),
            ("weir-n12", true),
            ("weir-x", true),
            ("weirtest-n1", false),
            ("weir-nx", false),
            ("eth0", false),
            ("wr0123456789ab", false),
        ];
        for (link, owned) in cases {
            assert_eq!(owned_link(&l, link), owned, "{link}");
        }
    }

    #[test]
    fn parses_ip_output() {
        let links = "1: lo: <LOOPBACK,UP> mtu 65536\n5: weir-n1@if2: <BROADCAST> mtu 1500\n6: weir-br: <BROADCAST>\n";
        assert_eq!(parse_link_names(links), vec!["lo", "weir-n1", "weir-br"]);
        let ns = "weir-node1 (id: 0)\nweir-ext\n";
        assert_eq!(parse_netns_list(ns), vec!["weir-node1", "weir-ext"]);
    }

    #[test]
    fn daemons_stop_agents_first_control_last() {
        let mut names = vec![
            "control",
            "registry/host",
            "containerd/node1",
            "agent/node1",
            "registry/node1",
        ];
        names.sort_by_key(|n| stop_rank(n));
        assert_eq!(
            names,
            vec![
                "agent/node1",
                "containerd/node1",
                "registry/host",
                "registry/node1",
                "control"
            ]
        );
    }
}
