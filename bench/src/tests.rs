//! Privileged end-to-end checks of the harness itself: the topology carries
//! traffic, an untranslated VIP fails fast, and the generated kube-proxy
//! rules really translate (through conntrack) when `iptables-legacy-restore`
//! loads them, and so do the kube-proxy nftables-mode rules `nft -f` loads
//! (full load and partial-sync addition). The weir variant needs release binaries and a control plane;
//! `cargo xtask bench` exercises it.

use std::net::SocketAddrV4;
use std::time::Duration;

use crate::client::{self, ClientConfig};
use crate::datapath::load_iptables;
use crate::netns::Topology;
use crate::plan::{self, TargetKind};
use crate::{change, netns, nftables, server};

/// Runs the server and a short client in `topo`, then `check` while the
/// server still runs; returns the client's report.
fn short_run(
    topo: &Topology,
    kind: TargetKind,
    services: u32,
    check: impl FnOnce(),
) -> client::ClientReport {
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
    let server_ns = topo.server.clone();
    let server = std::thread::spawn(move || {
        netns::enter(&server_ns).expect("enter the server netns");
        server::run_until(
            plan::TARGET_PORT,
            1,
            stop_rx,
            Duration::from_secs(60),
            || {},
        )
    });
    let first_backend = SocketAddrV4::new(plan::backend(0, 0), plan::TARGET_PORT);
    change::wait_reachable(&topo.client, first_backend, Duration::from_secs(10))
        .expect("server up");
    let client_ns = topo.client.clone();
    let report = std::thread::spawn(move || {
        netns::enter(&client_ns).expect("enter the client netns");
        client::run(ClientConfig {
            targets: plan::targets(kind, services),
            concurrency: 4,
            workers: 1,
            warmup: Duration::from_millis(200),
            duration: Duration::from_millis(500),
            timeout: Duration::from_secs(1),
            max_connections: 100_000,
        })
    })
    .join()
    .expect("client thread")
    .expect("client run");
    check();
    let _ = stop_tx.send(());
    server.join().expect("server thread").expect("server run");
    report
}

#[test]
#[ignore = "privileged: creates network namespaces (root, iproute2)"]
fn direct_topology_carries_connections_and_vips_fail_fast() {
    let topo = Topology::create("tdir").expect("topology");
    let report = short_run(&topo, TargetKind::Backends, 3, || {});
    assert!(report.connections > 50, "{report:?}");
    assert_eq!(report.errors + report.timeouts, 0, "{report:?}");
    // Nothing translates VIPs here: the node's unreachable route answers at once.
    let vip = SocketAddrV4::new(plan::vip(0), plan::SERVICE_PORT);
    let started = std::time::Instant::now();
    assert!(change::wait_reachable(&topo.client, vip, Duration::from_millis(300)).is_err());
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[test]
#[ignore = "privileged: network namespaces and iptables-legacy rules (root, iproute2, iptables)"]
fn kube_proxy_rules_translate_every_vip() {
    let topo = Topology::create("tipt").expect("topology");
    load_iptables(&topo, 3).expect("iptables-legacy-restore");
    let report = short_run(&topo, TargetKind::Vips, 3, || {
        for i in 0..3 {
            let vip = SocketAddrV4::new(plan::vip(i), plan::SERVICE_PORT);
            change::wait_reachable(&topo.client, vip, Duration::from_secs(2))
                .expect("every VIP translated");
        }
    });
    assert!(report.connections > 50, "{report:?}");
    assert_eq!(report.errors + report.timeouts, 0, "{report:?}");
    let conntrack = topo.node_conntrack_count().unwrap_or(0);
    assert!(conntrack > 0, "DNAT goes through conntrack");
}

/// Whether `nft` is installed (the nftables tests say so and pass without it:
/// `cargo xtask bench` installs it, tier 2 does not need it).
fn have_nft() -> bool {
    std::process::Command::new("nft")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
#[ignore = "privileged: network namespaces and nft --check (root, iproute2, nftables)"]
fn nftables_rules_parse_with_nft_check() {
    if !have_nft() {
        eprintln!("nft not installed (apt-get install nftables): skipped");
        return;
    }
    // A throwaway netns: `nft -c` talks to the kernel, so keep it away from the host's tables.
    let topo = Topology::create("tnfc").expect("topology");
    for (what, text) in [
        ("ruleset(1000)", nftables::ruleset(1000)),
        ("ruleset_nodeport(2)", nftables::ruleset_nodeport(2)),
    ] {
        let out = std::process::Command::new("ip")
            .args(["netns", "exec", &topo.node, "nft", "-c", "-f", "-"])
            .stdin(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut child| {
                use std::io::Write;
                child
                    .stdin
                    .take()
                    .expect("stdin")
                    .write_all(text.as_bytes())?;
                child.wait_with_output()
            })
            .expect("run nft -c");
        assert!(
            out.status.success(),
            "{what}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
#[ignore = "privileged: network namespaces and nftables rules (root, iproute2, nftables)"]
fn kube_proxy_nftables_rules_translate_every_vip_and_a_partial_sync_adds_one() {
    if !have_nft() {
        eprintln!("nft not installed (apt-get install nftables): skipped");
        return;
    }
    let topo = Topology::create("tnft").expect("topology");
    let (table, _) =
        nftables::Table::load(&topo.node, &nftables::ruleset(3)).expect("nft -f ruleset");
    crate::datapath::check_isolation(&topo, crate::datapath::Variant::Nftables)
        .expect("only nftables rules on the node");
    let report = short_run(&topo, TargetKind::Vips, 3, || {
        for i in 0..3 {
            let vip = SocketAddrV4::new(plan::vip(i), plan::SERVICE_PORT);
            change::wait_reachable(&topo.client, vip, Duration::from_secs(2))
                .expect("every VIP translated");
        }
        // Service 3 is not there yet; the partial sync adds it.
        let new_vip = SocketAddrV4::new(plan::vip(3), plan::SERVICE_PORT);
        assert!(change::wait_reachable(&topo.client, new_vip, Duration::from_millis(200)).is_err());
        nftables::load(&topo.node, &nftables::add_service(4)).expect("partial sync");
        change::wait_reachable(&topo.client, new_vip, Duration::from_secs(2))
            .expect("the added VIP translated");
    });
    assert!(report.connections > 50, "{report:?}");
    assert_eq!(report.errors + report.timeouts, 0, "{report:?}");
    assert!(
        topo.node_conntrack_count().unwrap_or(0) > 0,
        "DNAT goes through conntrack"
    );
    drop(table);
    let tables = std::process::Command::new("ip")
        .args(["netns", "exec", &topo.node, "nft", "list", "tables"])
        .output()
        .expect("nft list tables");
    assert!(
        String::from_utf8_lossy(&tables.stdout).trim().is_empty(),
        "the guard deleted the table"
    );
}
