//! Masquerade, the agent side: which pod traffic leaves the cluster with the
//! node's address, and the node-egress program that does it (kernel side:
//! `ebpf/programs/src/masq.rs`, ABI: `weir_ebpf_common::masq`).
//!
//! The agent says three things: this node's pod CIDR (the sources to
//! translate), whether masquerading is on, and the destination prefixes
//! never to translate (the cluster's pod CIDR, `--non-masquerade-cidr`s and
//! every node's address). [`skip_plan`] and [`config_value`] decide; the
//! `Datapath` methods below only write what they decided.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use aya::maps::lpm_trie::{Key, LpmTrie};
use aya::maps::{Array, MapData};
use aya::programs::SchedClassifier;
use ipnet::Ipv4Net;
use weir_ebpf_common::masq::{MasqConfig, map_names};

use super::{Datapath, DatapathError, NODE_LINKS_DIR, attach, program_mut};

/// What masquerade needs to know.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Masquerade {
    /// This node's pod CIDR: packets from it are translated.
    pub pod_cidr: Ipv4Net,
    /// Destinations that keep the pod address (pods, nodes, configured CIDRs).
    pub non_masquerade: BTreeSet<Ipv4Net>,
}

/// The config map value for `m` (`None`: masquerade off).
pub fn config_value(m: Option<&Masquerade>) -> MasqConfig {
    match m {
        Some(m) => MasqConfig {
            pod_net: be(m.pod_cidr.network()),
            pod_mask: be(m.pod_cidr.netmask()),
            enabled: 1,
            _pad: 0,
        },
        None => MasqConfig::default(),
    }
}

/// The address as the programs hold it (network byte order in a u32).
fn be(ip: Ipv4Addr) -> u32 {
    u32::from_ne_bytes(ip.octets())
}

/// What to insert into and delete from the non-masquerade trie so that it
/// holds `desired` (prefixes normalised to their network address).
pub fn skip_plan(
    desired: &BTreeSet<Ipv4Net>,
    observed: &BTreeSet<Ipv4Net>,
) -> (Vec<Ipv4Net>, Vec<Ipv4Net>) {
    let desired: BTreeSet<Ipv4Net> = desired.iter().map(Ipv4Net::trunc).collect();
    (
        desired.difference(observed).copied().collect(),
        observed.difference(&desired).copied().collect(),
    )
}

fn map_error(name: &'static str) -> impl Fn(aya::maps::MapError) -> DatapathError {
    move |source| DatapathError::Map { name, source }
}

impl Datapath {
    /// Sets masquerade (`None`: off): writes the config and the
    /// non-masqueraded prefixes, and attaches the node-egress program to the
    /// node interface the first time (when a node is configured; pinned
    /// under `node-links/` and adopted across restarts like node-ingress).
    pub fn set_masquerade(&mut self, m: Option<&Masquerade>) -> Result<(), DatapathError> {
        if m.is_some() && self.node_egress.is_none() {
            self.attach_node_egress()?;
        }
        let desired = m.map(|m| m.non_masquerade.clone()).unwrap_or_default();
        let name = map_names::MASQ_SKIP;
        let map = self
            .ebpf
            .map_mut(name)
            .ok_or(DatapathError::Missing { what: "map", name })?;
        let mut trie: LpmTrie<&mut MapData, u32, u8> =
            LpmTrie::try_from(map).map_err(map_error(name))?;
        let mut observed = BTreeSet::new();
        for key in trie.keys() {
            let key = key.map_err(map_error(name))?;
            let ip = Ipv4Addr::from(key.data().to_ne_bytes());
            if let Ok(net) = Ipv4Net::new(ip, key.prefix_len() as u8) {
                observed.insert(net);
            }
        }
        let (insert, delete) = skip_plan(&desired, &observed);
        // New prefixes first: a destination moving between prefixes is never
        // briefly masqueraded.
        for net in &insert {
            let key = Key::new(u32::from(net.prefix_len()), be(net.network()));
            trie.insert(&key, 1, 0).map_err(map_error(name))?;
        }
        for net in &delete {
            let key = Key::new(u32::from(net.prefix_len()), be(net.network()));
            trie.remove(&key).map_err(map_error(name))?;
        }
        if !insert.is_empty() || !delete.is_empty() {
            tracing::info!(?insert, ?delete, "non-masquerade prefixes updated");
        }
        let name = map_names::MASQ_CONFIG;
        let map = self
            .ebpf
            .map_mut(name)
            .ok_or(DatapathError::Missing { what: "map", name })?;
        let mut config: Array<&mut MapData, MasqConfig> =
            Array::try_from(map).map_err(map_error(name))?;
        config.set(0, config_value(m), 0).map_err(map_error(name))
    }

    /// Attaches the node-egress program at TCX egress of the node interface.
    fn attach_node_egress(&mut self) -> Result<(), DatapathError> {
        let Some((node, _)) = &self.node else {
            return Ok(());
        };
        let interface = node.interface.clone();
        let link = attach::list_links()?
            .into_iter()
            .find(|l| l.name == interface)
            .ok_or(DatapathError::NoInterface { interface })?;
        let links_dir = self
            .links_dir
            .parent()
            .map(|p| p.join(NODE_LINKS_DIR))
            .unwrap_or_else(|| NODE_LINKS_DIR.into());
        std::fs::create_dir_all(&links_dir).map_err(|source| DatapathError::PinDir {
            path: links_dir.clone(),
            source,
        })?;
        let hook = attach::Hook::NodeEgress;
        let program = program_mut::<SchedClassifier>(&mut self.ebpf, hook.program())?;
        let held = attach::attach(program, hook, &link, &links_dir)?;
        tracing::info!(interface = %link.name, "masquerade program attached");
        self.node_egress = Some(held);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(list: &[&str]) -> BTreeSet<Ipv4Net> {
        list.iter().map(|s| s.parse().expect("cidr")).collect()
    }

    #[test]
    fn skip_plan_table() {
        let cases = [
            ("empty", vec![], vec![], vec![], vec![]),
            (
                "first sync",
                vec!["10.244.0.0/16", "172.30.0.11/32"],
                vec![],
                vec!["10.244.0.0/16", "172.30.0.11/32"],
                vec![],
            ),
            (
                "node joins",
                vec!["10.244.0.0/16", "172.30.0.11/32", "172.30.0.12/32"],
                vec!["10.244.0.0/16", "172.30.0.11/32"],
                vec!["172.30.0.12/32"],
                vec![],
            ),
            (
                "node leaves",
                vec!["10.244.0.0/16"],
                vec!["10.244.0.0/16", "172.30.0.12/32"],
                vec![],
                vec!["172.30.0.12/32"],
            ),
            (
                "host bits are dropped",
                vec!["10.244.3.7/16"],
                vec!["10.244.0.0/16"],
                vec![],
                vec![],
            ),
        ];
        for (name, desired, observed, insert, delete) in cases {
            let (i, d) = skip_plan(&nets(&desired), &nets(&observed));
            assert_eq!(
                i,
                nets(&insert).into_iter().collect::<Vec<_>>(),
                "{name}: insert"
            );
            assert_eq!(
                d,
                nets(&delete).into_iter().collect::<Vec<_>>(),
                "{name}: delete"
            );
        }
    }

    #[test]
    fn config_value_is_in_network_order() {
        let m = Masquerade {
            pod_cidr: "10.244.2.0/24".parse().expect("cidr"),
            non_masquerade: BTreeSet::new(),
        };
        let v = config_value(Some(&m));
        assert_eq!(v.pod_net.to_ne_bytes(), [10, 244, 2, 0]);
        assert_eq!(v.pod_mask.to_ne_bytes(), [255, 255, 255, 0]);
        assert!(v.is_local_pod(u32::from_ne_bytes([10, 244, 2, 9])));
        assert!(!v.is_local_pod(u32::from_ne_bytes([10, 244, 1, 9])));
        assert_eq!(config_value(None), MasqConfig::default());
    }
}
