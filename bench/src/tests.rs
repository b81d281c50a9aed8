//! Privileged end-to-end checks of the harness itself: the topology carries
//! traffic, an untranslated VIP fails fast, and the generated kube-proxy
//! rules really translate (through conntrack) when `iptables-legacy-restore`
//! loads them. The weir variant needs release binaries and a control plane;
//! `cargo xtask bench` exercises it.

use std::net::SocketAddrV4;
use std::time::Duration;

use crate::client::{self, ClientConfig};
use crate::datapath::load_iptables;
use crate::netns::Topology;
use crate::plan::{self, TargetKind};
use crate::{change, netns, server};

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
