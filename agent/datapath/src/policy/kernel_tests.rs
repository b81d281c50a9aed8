//! Privileged: the compiled maps written into real kernel maps
//! (`BPF_MAP_TYPE_LPM_TRIE` and `BPF_MAP_TYPE_HASH`, created standalone with
//! the ABI's layouts), looked up by the kernel, must decide every probe
//! exactly as the user-space emulation ([`verdict`] over [`PolicyMaps`])
//! does. This pins the LPM emulation and the key byte layouts (port in
//! network order, prefix lengths) to the kernel's behaviour.

use std::net::Ipv4Addr;

use aya::maps::lpm_trie::Key;
use aya::maps::{HashMap, LpmTrie, MapData};
use serde_json::json;
use weir_ebpf_common::policy::{
    EndpointKey, EndpointValue, IPPROTO_SCTP, IpcacheKey, IpcacheValue, POLICY_PREFIX_FULL,
    PolicyKey, PolicyLookup, PolicyValue,
};
use weir_ebpf_common::{IPPROTO_TCP, IPPROTO_UDP};

use super::tests::{compile_all, np, peers, pods};
use super::*;

/// `BPF_F_NO_PREALLOC`: the kernel requires it for LPM tries.
const BPF_F_NO_PREALLOC: u32 = 1;

struct KernelMaps {
    ipcache: LpmTrie<MapData, IpcacheKey, IpcacheValue>,
    endpoints: HashMap<MapData, EndpointKey, EndpointValue>,
    policy: LpmTrie<MapData, PolicyKey, PolicyValue>,
}

impl KernelMaps {
    fn create(limits: &PolicyLimits) -> Self {
        Self {
            ipcache: LpmTrie::create(limits.ipcache_max_entries, BPF_F_NO_PREALLOC)
                .expect("create ipcache trie"),
            endpoints: HashMap::create(limits.endpoints_max_entries, 0).expect("create endpoints"),
            policy: LpmTrie::create(limits.policy_max_entries, BPF_F_NO_PREALLOC)
                .expect("create policy trie"),
        }
    }

    fn apply(&mut self, op: PolicyMapOp) {
        let r = match op {
            PolicyMapOp::PolicyUpsert((len, k), v) => self.policy.insert(&Key::new(len, k), v, 0),
            PolicyMapOp::IpcacheUpsert((len, k), v) => self.ipcache.insert(&Key::new(len, k), v, 0),
            PolicyMapOp::EndpointUpsert(k, v) => self.endpoints.insert(k, v, 0),
            PolicyMapOp::EndpointDelete(k) => self.endpoints.remove(&k),
            PolicyMapOp::IpcacheDelete((len, k)) => self.ipcache.remove(&Key::new(len, k)),
            PolicyMapOp::PolicyDelete((len, k)) => self.policy.remove(&Key::new(len, k)),
        };
        r.unwrap_or_else(|e| panic!("{op:?}: {e}"));
    }
}

impl PolicyLookup for KernelMaps {
    fn policy(&self, key: &PolicyKey) -> Option<PolicyValue> {
        self.policy.get(&Key::new(POLICY_PREFIX_FULL, *key), 0).ok()
    }
}

impl PolicyView for KernelMaps {
    fn endpoint(&self, addr: Ipv4Addr) -> Option<EndpointValue> {
        let key = EndpointKey {
            addr: u32::from(addr).to_be(),
        };
        self.endpoints.get(&key, 0).ok()
    }

    fn ipcache(&self, addr: Ipv4Addr) -> Option<IpcacheValue> {
        let key = IpcacheKey {
            addr: u32::from(addr).to_be(),
        };
        self.ipcache.get(&Key::new(32, key), 0).ok()
    }
}

#[test]
#[ignore = "privileged: creates BPF maps (root, CAP_BPF)"]
fn kernel_lookups_agree_with_the_emulation() {
    // A mix exercising every entry shape: wildcards, protocols, single
    // ports, endPort blocks, named ports, ipBlocks with excepts around pod
    // addresses, selectors, egress.
    let policies = vec![
        np(
            "x",
            "ranges",
            json!({"podSelector": {}, "ingress": [
            {"ports": [{"port": 80, "endPort": 81}, {"protocol": "UDP", "port": 1000, "endPort": 2000}]},
            {"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}], "ports": [{"protocol": "SCTP"}]},
            {"from": [{"ipBlock": {"cidr": "10.244.2.0/24", "except": ["10.244.2.10/31"]}}],
             "ports": [{"port": "serve-81-udp", "protocol": "UDP"}]}]}),
        ),
        np(
            "y",
            "egress",
            json!({"podSelector": {"matchLabels": {"pod": "a"}}, "policyTypes": ["Egress"],
            "egress": [{"to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": ["10.244.0.0/16"]}}]},
                       {"to": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"pod": "b"}}}],
                        "ports": [{"port": "http"}]}]}),
        ),
    ];
    let compiled = compile_all(&policies, &pods());
    let limits = PolicyLimits::default();
    let probes: Vec<(u8, u16)> = [
        (IPPROTO_TCP, 79),
        (IPPROTO_TCP, 80),
        (IPPROTO_TCP, 81),
        (IPPROTO_TCP, 82),
        (IPPROTO_UDP, 81),
        (IPPROTO_UDP, 999),
        (IPPROTO_UDP, 1000),
        (IPPROTO_UDP, 1536),
        (IPPROTO_UDP, 2000),
        (IPPROTO_UDP, 2001),
        (IPPROTO_SCTP, 80),
        (IPPROTO_SCTP, 9999),
    ]
    .into();
    let all = peers();
    let (mut allowed, mut denied) = (0, 0);
    for (node, c) in &compiled {
        let mut kernel = KernelMaps::create(&limits);
        for op in diff(&PolicyMaps::default(), &c.maps, &limits) {
            kernel.apply(op);
        }
        for s in &all {
            for d in &all {
                for &(proto, port) in &probes {
                    let emulated = verdict(&c.maps, s.ip, d.ip, proto, port);
                    let real = verdict(&kernel, s.ip, d.ip, proto, port);
                    assert_eq!(
                        real, emulated,
                        "{node}: {} -> {} {proto}/{port}",
                        s.name, d.name
                    );
                    if emulated.allowed() {
                        allowed += 1;
                    } else {
                        denied += 1;
                    }
                }
            }
        }
        // Removing everything through a diff empties the kernel maps.
        for op in diff(&c.maps, &PolicyMaps::default(), &limits) {
            kernel.apply(op);
        }
        assert_eq!(kernel.endpoints.keys().count(), 0);
        assert_eq!(kernel.policy.keys().count(), 0);
        assert_eq!(kernel.ipcache.keys().count(), 0);
    }
    assert!(
        allowed > 100 && denied > 100,
        "{allowed} allowed, {denied} denied"
    );
}
