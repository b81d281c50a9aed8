//! Direct server return's user side: the cluster's node addresses, which a
//! DSR option may name as a NodePort frontend (`WEIR_NODE_ADDRS`, see
//! `weir_ebpf_common::dsr`). The planner's part (which frontends get
//! `SERVICE_FLAG_DSR`) is in `plan.rs` ([`crate::plan::forwarding_mode`]).

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use aya::maps::{HashMap, MapData};
use weir_ebpf_common::dsr::map_names;

use super::{Datapath, DatapathError};

/// What to insert into and delete from the node address set so that it
/// holds `desired`.
pub fn node_addr_plan(
    desired: &BTreeSet<Ipv4Addr>,
    observed: &BTreeSet<Ipv4Addr>,
) -> (Vec<Ipv4Addr>, Vec<Ipv4Addr>) {
    (
        desired.difference(observed).copied().collect(),
        observed.difference(desired).copied().collect(),
    )
}

impl Datapath {
    /// Makes `WEIR_NODE_ADDRS` hold exactly `addrs` (the InternalIPs of the
    /// cluster's nodes, this one's included); new addresses first.
    pub fn set_node_addrs(&mut self, addrs: &BTreeSet<Ipv4Addr>) -> Result<(), DatapathError> {
        let name = map_names::NODE_ADDRS;
        let map = self
            .ebpf
            .map_mut(name)
            .ok_or(DatapathError::Missing { what: "map", name })?;
        let mut set: HashMap<&mut MapData, u32, u8> =
            HashMap::try_from(map).map_err(|source| DatapathError::Map { name, source })?;
        let mut observed = BTreeSet::new();
        for key in set.keys() {
            let key = key.map_err(|source| DatapathError::Map { name, source })?;
            observed.insert(Ipv4Addr::from(key.to_ne_bytes()));
        }
        let (insert, delete) = node_addr_plan(addrs, &observed);
        for ip in insert {
            set.insert(u32::from_ne_bytes(ip.octets()), 1, 0)
                .map_err(|source| DatapathError::Map { name, source })?;
        }
        for ip in delete {
            match set.remove(&u32::from_ne_bytes(ip.octets())) {
                Ok(()) | Err(aya::maps::MapError::KeyNotFound) => {}
                Err(source) => return Err(DatapathError::Map { name, source }),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_addr_plan_inserts_and_deletes_the_difference() {
        let ip = |s: &str| s.parse::<Ipv4Addr>().expect("ip");
        let cases = [
            (vec![], vec![], vec![], vec![]),
            (vec!["10.0.0.1"], vec![], vec!["10.0.0.1"], vec![]),
            (vec![], vec!["10.0.0.1"], vec![], vec!["10.0.0.1"]),
            (
                vec!["10.0.0.1", "10.0.0.2"],
                vec!["10.0.0.2", "10.0.0.3"],
                vec!["10.0.0.1"],
                vec!["10.0.0.3"],
            ),
        ];
        for (desired, observed, insert, delete) in cases {
            let set = |v: &[&str]| v.iter().map(|s| ip(s)).collect::<BTreeSet<_>>();
            let (i, d) = node_addr_plan(&set(&desired), &set(&observed));
            let list = |v: &[&str]| v.iter().map(|s| ip(s)).collect::<Vec<_>>();
            assert_eq!(
                (i, d),
                (list(&insert), list(&delete)),
                "{desired:?} vs {observed:?}"
            );
        }
    }
}
