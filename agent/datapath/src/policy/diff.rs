//! Compiled maps (before, after) -> map operations in a safe order.

use std::collections::BTreeMap;

use weir_ebpf_common::policy::{
    EndpointKey, EndpointValue, IpcacheKey, IpcacheValue, PolicyKey, PolicyValue,
};

use super::{LpmKey, PolicyLimits, PolicyMaps};

/// One write to one of the policy maps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PolicyMapOp {
    PolicyUpsert(LpmKey<PolicyKey>, PolicyValue),
    IpcacheUpsert(LpmKey<IpcacheKey>, IpcacheValue),
    EndpointUpsert(EndpointKey, EndpointValue),
    EndpointDelete(EndpointKey),
    IpcacheDelete(LpmKey<IpcacheKey>),
    PolicyDelete(LpmKey<PolicyKey>),
}

/// The ops turning `current` into `desired`.
///
/// Order: policy entries are written first, then ipcache entries, then
/// endpoints; deletions go the other way round (endpoints, ipcache, policy).
/// So an address only maps to an identity, and an endpoint only appears,
/// once the entries that decide for them exist; and an allow that both the
/// old and the new state grant never disappears in between. An allow only
/// the old state grants lasts until the final deletions (the change is not
/// atomic, as in every Kubernetes datapath).
///
/// If keeping the old entries until the end would overflow a map
/// (`|current ∪ desired| > capacity`), that map's deletions go first
/// instead: briefly stricter, never over capacity.
pub fn diff(current: &PolicyMaps, desired: &PolicyMaps, limits: &PolicyLimits) -> Vec<PolicyMapOp> {
    let mut first = Vec::new();
    let mut upserts = Vec::new();
    let mut deletes = Vec::new();
    let mut plan = |cap: u32, (ups, dels, peak): Changes| {
        if peak > cap as usize {
            first.extend(dels);
        } else {
            deletes.push(dels);
        }
        upserts.push(ups);
    };
    plan(
        limits.policy_max_entries,
        changes(
            &current.policy,
            &desired.policy,
            PolicyMapOp::PolicyUpsert,
            PolicyMapOp::PolicyDelete,
        ),
    );
    plan(
        limits.ipcache_max_entries,
        changes(
            &current.ipcache,
            &desired.ipcache,
            PolicyMapOp::IpcacheUpsert,
            PolicyMapOp::IpcacheDelete,
        ),
    );
    plan(
        limits.endpoints_max_entries,
        changes(
            &current.endpoints,
            &desired.endpoints,
            PolicyMapOp::EndpointUpsert,
            PolicyMapOp::EndpointDelete,
        ),
    );
    deletes.reverse();
    first
        .into_iter()
        .chain(upserts.into_iter().flatten())
        .chain(deletes.into_iter().flatten())
        .collect()
}

/// (upserts, deletes, size of `current ∪ desired`).
type Changes = (Vec<PolicyMapOp>, Vec<PolicyMapOp>, usize);

fn changes<K: Ord + Copy, V: PartialEq + Copy>(
    current: &BTreeMap<K, V>,
    desired: &BTreeMap<K, V>,
    upsert: impl Fn(K, V) -> PolicyMapOp,
    delete: impl Fn(K) -> PolicyMapOp,
) -> Changes {
    // One merge pass over the two sorted maps (no per-key lookups: the
    // policy map of a node with many policies holds tens of thousands of
    // entries, and this runs on every change).
    let (mut ups, mut dels) = (Vec::new(), Vec::new());
    let mut peak = current.len();
    let mut cur = current.iter().peekable();
    let mut des = desired.iter().peekable();
    loop {
        match (cur.peek(), des.peek()) {
            (Some((ck, _)), Some((dk, dv))) => match ck.cmp(dk) {
                std::cmp::Ordering::Less => {
                    dels.push(delete(**ck));
                    cur.next();
                }
                std::cmp::Ordering::Greater => {
                    ups.push(upsert(**dk, **dv));
                    peak += 1;
                    des.next();
                }
                std::cmp::Ordering::Equal => {
                    let (_, cv) = cur.next().expect("peeked");
                    if cv != *dv {
                        ups.push(upsert(**dk, **dv));
                    }
                    des.next();
                }
            },
            (Some((ck, _)), None) => {
                dels.push(delete(**ck));
                cur.next();
            }
            (None, Some((dk, dv))) => {
                ups.push(upsert(**dk, **dv));
                peak += 1;
                des.next();
            }
            (None, None) => break,
        }
    }
    (ups, dels, peak)
}

impl PolicyMaps {
    /// Mirrors one successful op (the executor keeps its view of the
    /// kernel maps exact even when a plan fails halfway).
    pub fn apply(&mut self, op: PolicyMapOp) {
        match op {
            PolicyMapOp::PolicyUpsert(k, v) => {
                self.policy.insert(k, v);
            }
            PolicyMapOp::IpcacheUpsert(k, v) => {
                self.ipcache.insert(k, v);
            }
            PolicyMapOp::EndpointUpsert(k, v) => {
                self.endpoints.insert(k, v);
            }
            PolicyMapOp::EndpointDelete(k) => {
                self.endpoints.remove(&k);
            }
            PolicyMapOp::IpcacheDelete(k) => {
                self.ipcache.remove(&k);
            }
            PolicyMapOp::PolicyDelete(k) => {
                self.policy.remove(&k);
            }
        }
    }
}
