//! Privileged tests of the conntrack sweep after a policy change: the real
//! object with a private pin directory, policy maps written by the real
//! compiler and executor, packets through from-pod with
//! BPF_PROG_TEST_RUN, and [`policy::sweep_conntrack`] on the pinned
//! `WEIR_CT`, as the agent's sync runs it.
//!
//! Run with `cargo test -p weir-datapath policy_sweep -- --ignored
//! --nocapture` as root (the second test prints the sweep's cost).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::Path;

use aya::maps::{HashMap, LpmTrie, Map, MapData};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use serde_json::{Value, json};
use weir_ebpf_common::policy::map_names as policy_maps;
use weir_ebpf_common::{
    CT_DIR_FORWARD, CT_DIR_REVERSE, CT_FLAG_NO_NAT, CtKey, CtValue, IPPROTO_UDP, program_names,
};

use super::policy::{
    self, Allocations, Compiled, NamespaceInfo, NodeNetwork, ObjectRef, PodInfo, PolicyInput,
    PolicyKernelMaps, PolicyLimits, PolicyMaps, apply_ops, compile, diff,
};
use super::tests::{TC_ACT_OK, TC_ACT_SHOT, ct_key, load, udp};

const XA: [u8; 4] = [10, 244, 1, 10];
const XB: [u8; 4] = [10, 244, 1, 11];
const YA: [u8; 4] = [10, 244, 1, 20];
const NODE1: [u8; 4] = [172, 30, 0, 11];
const GATEWAY: [u8; 4] = [10, 244, 1, 1];

fn pod(ns: &str, name: &str, ip: [u8; 4]) -> PodInfo {
    PodInfo {
        pod: ObjectRef::new(ns, name),
        labels: BTreeMap::from([("pod".to_string(), name.to_string())]),
        ip: Some(Ipv4Addr::from(ip)),
        node: Some("node1".to_string()),
        host_network: false,
        named_ports: Vec::new(),
    }
}

fn np(ns: &str, name: &str, spec: Value) -> NetworkPolicy {
    serde_json::from_value(json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"namespace": ns, "name": name},
        "spec": spec,
    }))
    .expect("valid NetworkPolicy")
}

/// Node1's maps for `policies` (pods x/a, x/b, y/a), numbers kept from `prev`.
fn compile_node1(policies: &[NetworkPolicy], prev: &Allocations) -> Compiled {
    let namespaces: Vec<NamespaceInfo> = ["x", "y"]
        .iter()
        .map(|ns| NamespaceInfo::new(*ns, BTreeMap::from([("ns".to_string(), ns.to_string())])))
        .collect();
    let node = NodeNetwork {
        name: "node1".into(),
        host_ips: vec![NODE1.into(), GATEWAY.into()],
        remote_node_ips: Vec::new(),
        cluster_cidr: Some("10.244.0.0/16".parse().expect("cidr")),
    };
    let pods = vec![pod("x", "a", XA), pod("x", "b", XB), pod("y", "a", YA)];
    let input = PolicyInput {
        policies,
        pods: &pods,
        namespaces: &namespaces,
        node: &node,
    };
    compile(input, prev, &PolicyLimits::default()).expect("compiles")
}

fn pinned(dir: &Path, name: &str) -> MapData {
    MapData::from_pin(dir.join(name)).unwrap_or_else(|e| panic!("open pinned {name}: {e}"))
}

fn kernel_maps(dir: &Path) -> PolicyKernelMaps {
    PolicyKernelMaps {
        ipcache: LpmTrie::try_from(Map::LpmTrie(pinned(dir, policy_maps::IPCACHE)))
            .expect("ipcache"),
        endpoints: HashMap::try_from(Map::HashMap(pinned(dir, policy_maps::POLICY_ENDPOINTS)))
            .expect("endpoints"),
        policy: LpmTrie::try_from(Map::LpmTrie(pinned(dir, policy_maps::POLICY))).expect("policy"),
    }
}

/// x/b admits namespace y (any port).
fn admit_y() -> NetworkPolicy {
    np(
        "x",
        "b-ingress",
        json!({"podSelector": {"matchLabels": {"pod": "b"}}, "ingress": [
            {"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}]}]}),
    )
}

/// x/b admits nothing.
fn deny_all() -> NetworkPolicy {
    np(
        "x",
        "b-ingress",
        json!({"podSelector": {"matchLabels": {"pod": "b"}}, "policyTypes": ["Ingress"]}),
    )
}

#[test]
#[ignore = "privileged: loads BPF programs (root, CAP_BPF)"]
fn a_policy_change_cuts_the_udp_flows_it_denies_and_keeps_the_others() {
    let (dp, dir) = load();
    let from_pod = program_names::FROM_POD;
    let mut kernel = kernel_maps(&dir.0);
    let mut state = PolicyMaps::default();
    let limits = PolicyLimits::default();

    let v1 = compile_node1(&[admit_y()], &Allocations::default());
    apply_ops(&mut kernel, &diff(&state, &v1.maps, &limits), &mut state).expect("apply v1");
    // y/a -> x/b:80 (to be denied) and y/a -> x/a:80 (never isolated).
    let denied_later = udp(YA, 5353, XB, 80, true);
    let kept = udp(YA, 5354, XA, 80, true);
    assert_eq!(dp.run_program(from_pod, &denied_later).0, TC_ACT_OK);
    assert_eq!(dp.run_program(from_pod, &kept).0, TC_ACT_OK);
    let fwd = ct_key((YA, 5353), (XB, 80), IPPROTO_UDP);
    let rev = ct_key((XB, 80), (YA, 5353), IPPROTO_UDP);
    for k in [fwd, rev] {
        let v = dp.conntrack().get(&k, 0).expect("tracked for policy");
        assert_ne!(v.flags & CT_FLAG_NO_NAT, 0);
    }

    // x/b now admits nothing. Without the sweep the old flow's tuple still
    // passes on its entries (the e2e flake).
    let v2 = compile_node1(&[deny_all()], &v1.alloc);
    let ops = diff(&state, &v2.maps, &limits);
    apply_ops(&mut kernel, &ops, &mut state).expect("apply v2");
    assert_eq!(
        dp.run_program(from_pod, &denied_later).0,
        TC_ACT_OK,
        "before the sweep the conntrack entry lets it through"
    );

    let mut ct = policy::open_conntrack(&dir.0).expect("open WEIR_CT");
    // As the sync runs it: only the connections of the addresses the
    // change affects.
    assert!(policy::may_deny(&ops));
    let only = policy::affected(&ops, &state).expect("no CIDR change");
    let stats = policy::sweep_conntrack(&mut ct, &state, Some(&only)).expect("sweep");
    assert_eq!(
        stats.deleted, 2,
        "{stats:?}: both entries of the denied flow"
    );
    for k in [fwd, rev] {
        assert!(dp.conntrack().get(&k, 0).is_err(), "{k:?} deleted");
    }
    assert_eq!(
        dp.run_program(from_pod, &denied_later).0,
        TC_ACT_SHOT,
        "the same 5-tuple's next packet is judged afresh and dropped"
    );
    assert!(
        dp.conntrack().get(&fwd, 0).is_err(),
        "a denied packet creates no entry"
    );
    assert_eq!(
        dp.run_program(from_pod, &kept).0,
        TC_ACT_OK,
        "the allowed flow stays"
    );
    assert!(
        dp.conntrack()
            .get(&ct_key((YA, 5354), (XA, 80), IPPROTO_UDP), 0)
            .is_ok()
    );
    // A second sweep finds nothing more to cut.
    let again = policy::sweep_conntrack(&mut ct, &state, None).expect("sweep");
    assert_eq!(again.deleted, 0, "{again:?}");
}

/// The sweep's cost at a realistic table size: 100 000 entries (50 000
/// policy-only connections between the three pods and 1 000 client ports,
/// half of them into x/b), swept after x/b stops admitting anything.
/// Prints the time (no assertion on it: timing is for the bench, not CI).
#[test]
#[ignore = "privileged: loads BPF programs (root, CAP_BPF)"]
fn sweep_cost_at_100k_entries() {
    let (_dp, dir) = load();
    let mut kernel = kernel_maps(&dir.0);
    let mut state = PolicyMaps::default();
    let limits = PolicyLimits::default();
    let v1 = compile_node1(&[admit_y()], &Allocations::default());
    apply_ops(&mut kernel, &diff(&state, &v1.maps, &limits), &mut state).expect("apply v1");
    let mut ct = policy::open_conntrack(&dir.0).expect("open WEIR_CT");
    let connections = 50_000u32;
    for i in 0..connections {
        let server = if i % 2 == 0 { XB } else { XA };
        let (sport, dport) = (10_000 + (i / 50) as u16, 80 + (i % 50) as u16);
        let fwd = ct_key((YA, sport), (server, dport), IPPROTO_UDP);
        let rev = ct_key((server, dport), (YA, sport), IPPROTO_UDP);
        let value = CtValue {
            frontend_addr: fwd.daddr,
            backend_addr: fwd.daddr,
            frontend_port: fwd.dport,
            backend_port: fwd.dport,
            direction: CT_DIR_FORWARD,
            flags: CT_FLAG_NO_NAT,
            ..CtValue::default()
        };
        let reverse = CtValue {
            direction: CT_DIR_REVERSE,
            ..value
        };
        ct.insert(fwd, value, 0).expect("insert forward");
        ct.insert(rev, reverse, 0).expect("insert reverse");
    }
    let v2 = compile_node1(&[deny_all()], &v1.alloc);
    apply_ops(&mut kernel, &diff(&state, &v2.maps, &limits), &mut state).expect("apply v2");

    let started = std::time::Instant::now();
    let entries: Vec<(CtKey, CtValue)> = ct.iter().map(|e| e.expect("entry")).collect();
    let read = started.elapsed();
    let judge = std::time::Instant::now();
    let cut = policy::cut_keys(&entries, &policy::SweepView::new(&state));
    let judged = judge.elapsed();
    assert_eq!(entries.len(), 2 * connections as usize);
    assert_eq!(cut.len(), connections as usize, "x/b's half");
    // As the sync does: only the connections of the addresses the change
    // affects (x/b), found by a key walk.
    let ops = diff(&v1.maps, &v2.maps, &limits);
    let only = policy::affected(&ops, &state).expect("no CIDR change");
    let started = std::time::Instant::now();
    let stats = policy::sweep_conntrack(&mut ct, &state, Some(&only)).expect("sweep");
    let restricted = started.elapsed();
    assert_eq!(stats.deleted, connections as usize, "{only:?}");
    // A full sweep that finds nothing left to cut.
    let started = std::time::Instant::now();
    let stats = policy::sweep_conntrack(&mut ct, &state, None).expect("sweep");
    let full = started.elapsed();
    assert_eq!(stats.deleted, 0);
    eprintln!(
        "sweep of {} entries: read {read:?}, judge {judged:?}; restricted to {} address(es) \
         with {} deletions {restricted:?}; full sweep of the {} left, nothing to cut, {full:?}",
        entries.len(),
        only.len(),
        connections,
        stats.entries,
    );
}
