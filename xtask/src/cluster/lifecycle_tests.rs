//! Privileged test of the whole cluster life cycle: `up --nodes 3` with the
//! demo workload running, then `down` must leave the machine as it was:
//! no namespace, link, mount, cgroup, bpffs pin, directory or process of the
//! cluster. Compares snapshots of the machine taken before `up` and after
//! `down` (restricted to what names the cluster: other clusters may come and
//! go on a shared machine meanwhile).

use std::collections::BTreeSet;
use std::fs;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;

use super::cleanup;
use super::up::{self, UpOptions, block_on};
use crate::build::Binaries;
use crate::layout::{BPFFS_ROOT, Layout, cgroup_hierarchies};

/// Everything on the machine a cluster could leave behind, as one set of
/// `kind: name` lines.
fn snapshot() -> BTreeSet<String> {
    let mut s = BTreeSet::new();
    let run = |prog: &str, args: &[&str]| {
        std::process::Command::new(prog)
            .args(args)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    };
    for l in run("ip", &["netns", "list"]).lines() {
        s.insert(format!(
            "netns: {}",
            l.split_whitespace().next().unwrap_or("")
        ));
    }
    for l in run("ip", &["-o", "link", "show"]).lines() {
        if let Some(name) = l.split(": ").nth(1) {
            s.insert(format!("link: {}", name.split('@').next().unwrap_or(name)));
        }
    }
    for l in fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
    {
        if let Some(m) = l.split(' ').nth(4) {
            s.insert(format!("mount: {m}"));
        }
    }
    for h in cgroup_hierarchies() {
        for e in fs::read_dir(&h).into_iter().flatten().flatten() {
            s.insert(format!("cgroup: {}", e.path().display()));
        }
    }
    for e in fs::read_dir(BPFFS_ROOT).into_iter().flatten().flatten() {
        s.insert(format!("bpffs: {}", e.path().display()));
    }
    for e in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let pid = e.file_name().to_string_lossy().into_owned();
        if !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        // Zombies are this test's own unreaped children (the daemons `up`
        // started from this process): they hold nothing but a PID and go
        // when the test process exits, as they do when `cargo xtask up` exits.
        let stat = fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        if super::procs::parse_state(&stat) == Some('Z') {
            continue;
        }
        let cmdline = fs::read(e.path().join("cmdline"))
            .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
            .unwrap_or_default();
        let cgroup = fs::read_to_string(e.path().join("cgroup")).unwrap_or_default();
        s.insert(format!(
            "process: {pid} {} [{}]",
            cmdline.trim(),
            cgroup.replace('\n', ";")
        ));
    }
    s
}

/// The lines of `after` not in `before` that belong to `layout`'s cluster.
fn left_by(layout: &Layout, before: &BTreeSet<String>, after: &BTreeSet<String>) -> Vec<String> {
    let marks = [
        format!("{}-", layout.name),
        format!("/{}/", layout.name),
        format!("/{}", layout.name),
    ];
    after
        .difference(before)
        .filter(|l| marks.iter().any(|m| l.contains(m.as_str())))
        .cloned()
        .collect()
}

#[test]
fn cluster_lines_are_told_apart() {
    let l = Layout::new("mnclean").expect("layout");
    let before: BTreeSet<String> = ["netns: weir-node1".to_string()].into();
    let after: BTreeSet<String> = [
        "netns: weir-node1",
        "netns: mnclean-node1",
        "link: mnclean-br",
        "mount: /run/weir/mnclean/node1/containerd/x",
        "cgroup: /sys/fs/cgroup/unified/weir-mnclean-node2",
        "process: 7 /usr/bin/containerd --config /var/lib/weir/mnclean/node1/containerd.toml []",
        "process: 8 /usr/bin/containerd --config /var/lib/weir/weir/node1/containerd.toml []",
        "link: eth7",
    ]
    .map(String::from)
    .into();
    assert_eq!(left_by(&l, &before, &after).len(), 5);
}

#[test]
#[ignore = "privileged: runs a whole 3-node cluster (needs the built binaries: cargo xtask build)"]
fn up_three_nodes_then_down_leaves_the_machine_as_it_was() {
    let _one_at_a_time = super::CLUSTER_TESTS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let layout = Layout::new("mnclean").expect("layout");
    let bins = Binaries::new(false);
    bins.check().expect("binaries");
    let _ = cleanup::down(&layout);
    let before = snapshot();
    let opts = UpOptions {
        nodes: 3,
        demo: true,
        write_cli_config: false,
        routing: super::state::Routing::Native,
    };
    let result = std::panic::catch_unwind(|| {
        let state = up::up(&layout, &bins, &opts).expect("up --nodes 3");
        assert_eq!(state.nodes.len(), 3);
        // The demo's 4 pods running: sandboxes, netns mounts, veths, shims.
        let t0 = Instant::now();
        loop {
            let server = state.server.clone();
            let running = block_on(async move {
                let c = weir_client::Client::connect(&server).await.ok()?;
                let pods = c.list::<Pod>("", &Default::default()).await.ok()?;
                Some(
                    pods.items
                        .iter()
                        .filter(|p| {
                            p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
                        })
                        .count(),
                )
            })
            .expect("runtime")
            .unwrap_or(0);
            if running == 4 {
                break;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(240),
                "demo pods not running after 240s ({running} of 4)"
            );
            std::thread::sleep(Duration::from_millis(500));
        }
        let during = snapshot();
        assert!(
            left_by(&layout, &before, &during).len() > 20,
            "the snapshot does not see the running cluster"
        );
    });
    cleanup::down(&layout).expect("down");
    let after = snapshot();
    let left = left_by(&layout, &before, &after);
    cleanup::down(&layout).expect("down twice is fine");
    if let Err(p) = result {
        std::panic::resume_unwind(p);
    }
    assert_eq!(left, Vec::<String>::new(), "left behind by up + down");
}
