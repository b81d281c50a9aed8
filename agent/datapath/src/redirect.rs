//! The pod fast path, the agent side (kernel side:
//! `ebpf/programs/src/redirect.rs`, ABI: `weir_ebpf_common::redirect`).
//!
//! from-pod delivers a packet for a pod of this node straight into that
//! pod's network namespace (`bpf_redirect_peer`) when both the veth it came
//! from and the veth the FIB routes it to are registered in
//! `WEIR_POD_IFS`. The agent registers exactly the pod veths it holds
//! attachments for while the fast path is on, and nothing while it is off
//! ([`plan`] decides; [`Datapath::sync_pod_ifaces`] writes). Like Cilium's
//! BPF host routing, redirected packets skip the node's netfilter
//! (FORWARD/POSTROUTING): `--pod-redirect=false` keeps every packet on the
//! stack's path.

use std::collections::BTreeSet;

use aya::maps::{HashMap, MapData};
use weir_ebpf_common::redirect::{POD_IFACE_ON, map_names};

use super::{Datapath, DatapathError};

/// The registrations to make and remove so that the map holds `attached`
/// when the fast path is `on`, and nothing when it is off.
pub fn plan(on: bool, attached: &BTreeSet<u32>, observed: &BTreeSet<u32>) -> (Vec<u32>, Vec<u32>) {
    let empty = BTreeSet::new();
    let desired = if on { attached } else { &empty };
    (
        desired.difference(observed).copied().collect(),
        observed.difference(desired).copied().collect(),
    )
}

impl Datapath {
    /// Turns the pod fast path on or off (off after [`Datapath::load`]):
    /// registers the attached pod veths, or removes every registration.
    /// Takes effect for the next packet; connections carry on either way.
    pub fn set_pod_redirect(&mut self, on: bool) -> Result<(), DatapathError> {
        self.pod_redirect = on;
        self.sync_pod_ifaces()?;
        tracing::info!(on, "pod fast path (bpf_redirect_peer between local pods)");
        Ok(())
    }

    /// Whether the pod fast path is on.
    pub fn pod_redirect(&self) -> bool {
        self.pod_redirect
    }

    /// Makes `WEIR_POD_IFS` match the attachments (see [`plan`]). Also
    /// clears what an earlier agent registered, at load.
    pub(crate) fn sync_pod_ifaces(&mut self) -> Result<(), DatapathError> {
        let attached: BTreeSet<u32> = self.attached.values().map(|a| a.index).collect();
        let on = self.pod_redirect;
        let name = map_names::POD_IFACES;
        let map_error = |source| DatapathError::Map { name, source };
        let map = self
            .ebpf
            .map_mut(name)
            .ok_or(DatapathError::Missing { what: "map", name })?;
        let mut map: HashMap<&mut MapData, u32, u32> = HashMap::try_from(map).map_err(map_error)?;
        let observed = map
            .keys()
            .collect::<Result<BTreeSet<u32>, _>>()
            .map_err(map_error)?;
        let (insert, delete) = plan(on, &attached, &observed);
        for index in insert {
            map.insert(index, POD_IFACE_ON, 0).map_err(map_error)?;
        }
        for index in delete {
            match map.remove(&index) {
                Ok(()) | Err(aya::maps::MapError::KeyNotFound) => {}
                Err(source) => return Err(map_error(source)),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_table() {
        let set = |v: &[u32]| v.iter().copied().collect::<BTreeSet<u32>>();
        struct Case {
            name: &'static str,
            on: bool,
            attached: &'static [u32],
            observed: &'static [u32],
            insert: &'static [u32],
            delete: &'static [u32],
        }
        let cases = [
            Case {
                name: "on: every attached veth is registered",
                on: true,
                attached: &[5, 7],
                observed: &[],
                insert: &[5, 7],
                delete: &[],
            },
            Case {
                name: "on: idempotent",
                on: true,
                attached: &[5, 7],
                observed: &[5, 7],
                insert: &[],
                delete: &[],
            },
            Case {
                name: "on: a vanished veth (or an earlier agent's) is removed",
                on: true,
                attached: &[7, 9],
                observed: &[5, 7],
                insert: &[9],
                delete: &[5],
            },
            Case {
                name: "off: everything is removed",
                on: false,
                attached: &[5, 7],
                observed: &[5, 7, 11],
                insert: &[],
                delete: &[5, 7, 11],
            },
            Case {
                name: "off and empty: nothing to do",
                on: false,
                attached: &[5],
                observed: &[],
                insert: &[],
                delete: &[],
            },
        ];
        for case in cases {
            let (insert, delete) = plan(case.on, &set(case.attached), &set(case.observed));
            assert_eq!(insert, case.insert, "{}: insert", case.name);
            assert_eq!(delete, case.delete, "{}: delete", case.name);
        }
    }
}
