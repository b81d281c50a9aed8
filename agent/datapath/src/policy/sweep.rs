//! Cutting tracked connections a policy change denies.
//!
//! The datapath judges only a connection's first packet; later packets (and
//! a new UDP flow reusing an old flow's 5-tuple) pass on its conntrack
//! entries. So after every applied change the sync replays, for each entry
//! of `WEIR_CT`, the decision the kernel would take on that connection's
//! first packet over the new maps, and deletes both entries of connections
//! now denied: their next packet misses conntrack and is judged afresh.
//!
//! Pure part: [`cut_keys`] (entries + maps -> keys to delete), over
//! [`SweepView`], an indexed copy of the maps answering exactly as the
//! kernel's LPM tries (the plain [`PolicyMaps`] view scans them). Thin I/O
//! part: [`sweep_conntrack`] over the pinned `WEIR_CT`.
//!
//! What each entry stands for, mirroring `ebpf/programs/src/{conntrack,
//! from_pod,to_pod,node_ingress}.rs`:
//! - `CT_FLAG_NO_NAT` (policy only) and service translations from a pod
//!   (flags 0): judged like from-pod / to-pod, on the backend tuple — the
//!   source's egress when it is a local endpoint, the destination's ingress
//!   when it is one ([`verdict`]);
//! - `CT_FLAG_NODEPORT`: node-ingress judged only the local backend's
//!   ingress, with the client's address before SNAT;
//! - `CT_FLAG_HAIRPIN` (a pod reaching itself) is always allowed, and
//!   `CT_FLAG_MASQ` entries are the node's source translation, not a policy
//!   decision: both are left alone.
//!
//! Addresses without an endpoint (`NotLocal`) are not enforced here, so
//! their entries stay.

use std::borrow::BorrowMut;
use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use aya::maps::{HashMap as BpfHashMap, Map, MapData, MapError};
use weir_ebpf_common::policy::{
    EndpointValue, IpcacheValue, POLICY_PREFIX_FULL, PolicyKey, PolicyLookup, PolicyValue,
};
use weir_ebpf_common::{
    CT_DIR_FORWARD, CT_DIR_REVERSE, CT_FLAG_HAIRPIN, CT_FLAG_MASQ, CT_FLAG_NODEPORT, CT_FLAG_SNAT,
    CtKey, CtValue, map_names,
};

use super::{PolicyMapOp, PolicyMaps, PolicyView, verdict};
use crate::DatapathError;

/// The policy maps indexed for many lookups: endpoints by address, and each
/// LPM trie as one hash table per prefix length present (a lookup tries the
/// lengths longest first, which is what the kernel's trie answers).
pub struct SweepView {
    endpoints: HashMap<u32, EndpointValue>,
    ipcache: LpmIndex<4, IpcacheValue>,
    policy: LpmIndex<12, PolicyValue>,
}

impl SweepView {
    pub fn new(maps: &PolicyMaps) -> Self {
        Self {
            endpoints: maps.endpoints.iter().map(|(k, v)| (k.addr, *v)).collect(),
            ipcache: LpmIndex::new(
                maps.ipcache
                    .iter()
                    .map(|((len, k), v)| (*len, k.addr.to_ne_bytes(), *v)),
            ),
            policy: LpmIndex::new(
                maps.policy
                    .iter()
                    .map(|((len, k), v)| (*len, policy_bytes(k), *v)),
            ),
        }
    }
}

impl PolicyLookup for SweepView {
    fn policy(&self, key: &PolicyKey) -> Option<PolicyValue> {
        self.policy.get(POLICY_PREFIX_FULL, &policy_bytes(key))
    }
}

impl PolicyView for SweepView {
    fn endpoint(&self, addr: Ipv4Addr) -> Option<EndpointValue> {
        self.endpoints.get(&u32::from(addr).to_be()).copied()
    }

    fn ipcache(&self, addr: Ipv4Addr) -> Option<IpcacheValue> {
        self.ipcache.get(32, &u32::from(addr).to_be().to_ne_bytes())
    }
}

/// One LPM trie as hash tables by prefix length.
struct LpmIndex<const N: usize, V> {
    /// The prefix lengths present, longest first.
    lens: Vec<u32>,
    entries: HashMap<(u32, [u8; N]), V>,
}

impl<const N: usize, V: Copy> LpmIndex<N, V> {
    fn new(items: impl Iterator<Item = (u32, [u8; N], V)>) -> Self {
        let mut entries = HashMap::new();
        let mut lens = HashSet::new();
        for (len, data, v) in items {
            lens.insert(len);
            entries.insert((len, masked(&data, len)), v);
        }
        let mut lens: Vec<u32> = lens.into_iter().collect();
        lens.sort_unstable_by(|a, b| b.cmp(a));
        Self { lens, entries }
    }

    /// The longest prefix matching `key` (whose own prefix is `key_len`).
    fn get(&self, key_len: u32, key: &[u8; N]) -> Option<V> {
        self.lens
            .iter()
            .filter(|len| **len <= key_len)
            .find_map(|len| self.entries.get(&(*len, masked(key, *len))).copied())
    }
}

/// `data` with every bit beyond the first `bits` cleared.
fn masked<const N: usize>(data: &[u8; N], bits: u32) -> [u8; N] {
    let mut out = [0u8; N];
    let bits = (bits as usize).min(N * 8);
    let (full, rest) = (bits / 8, bits % 8);
    out[..full].copy_from_slice(&data[..full]);
    if rest != 0 {
        out[full] = data[full] & (0xffu8 << (8 - rest));
    }
    out
}

/// The key data in memory order, as the kernel compares it.
fn policy_bytes(k: &PolicyKey) -> [u8; 12] {
    let mut b = [0u8; 12];
    b[0..2].copy_from_slice(&k.endpoint_id.to_ne_bytes());
    b[2] = k.direction;
    b[3] = k._pad0;
    b[4..8].copy_from_slice(&k.identity.to_ne_bytes());
    b[8] = k.proto;
    b[9] = k._pad1;
    b[10..12].copy_from_slice(&k.port.to_ne_bytes());
    b
}

/// A tracked connection as policy judged its first packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Judged {
    /// The client's address (before any SNAT).
    client: Ipv4Addr,
    /// The server: the backend after service translation.
    server: Ipv4Addr,
    proto: u8,
    /// The server's port, host order.
    port: u16,
    /// Only the server's ingress was judged (node-ingress, NodePort).
    ingress_only: bool,
}

impl Judged {
    fn allowed<M: PolicyView>(&self, maps: &M) -> bool {
        let v = verdict(maps, self.client, self.server, self.proto, self.port);
        if self.ingress_only {
            v.ingress.passes()
        } else {
            v.allowed()
        }
    }
}

fn addr(be: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from_be(be))
}

/// The connection an entry belongs to and the keys of its two entries
/// (forward, reverse); `None` for entries that are no policy decision.
fn connection(key: &CtKey, value: &CtValue) -> Option<(Judged, [CtKey; 2])> {
    if value.flags & (CT_FLAG_HAIRPIN | CT_FLAG_MASQ) != 0 {
        return None;
    }
    let ingress_only = value.flags & CT_FLAG_NODEPORT != 0;
    let snat = ingress_only && value.flags & CT_FLAG_SNAT != 0;
    let tuple = |saddr, daddr, sport, dport| CtKey {
        saddr,
        daddr,
        sport,
        dport,
        proto: key.proto,
        _pad: [0; 3],
    };
    // (client, client port) as the client sent them.
    let (client, client_port, reverse) = match value.direction {
        CT_DIR_FORWARD => {
            // Keyed client -> frontend; the reverse entry backend -> client,
            // or backend -> node:nat_port when source-translated.
            let (to, to_port) = if snat {
                (value.nat_addr, value.nat_port)
            } else {
                (key.saddr, key.sport)
            };
            let reverse = tuple(value.backend_addr, to, value.backend_port, to_port);
            (key.saddr, key.sport, reverse)
        }
        CT_DIR_REVERSE => {
            // Keyed backend -> client (or -> node:nat_port; the client is
            // then in nat_addr:nat_port).
            let (client, port) = if snat {
                (value.nat_addr, value.nat_port)
            } else {
                (key.daddr, key.dport)
            };
            (client, port, *key)
        }
        _ => return None,
    };
    let forward = tuple(
        client,
        value.frontend_addr,
        client_port,
        value.frontend_port,
    );
    let judged = Judged {
        client: addr(client),
        server: addr(value.backend_addr),
        proto: key.proto,
        port: u16::from_be(value.backend_port),
        ingress_only,
    };
    Some((judged, [forward, reverse]))
}

/// The conntrack keys to delete after the policy maps became `maps`: both
/// entries of every tracked connection whose first packet `maps` would deny
/// (sorted, no duplicates). Each distinct (client, server, protocol, port)
/// is judged once.
pub fn cut_keys<M: PolicyView>(entries: &[(CtKey, CtValue)], maps: &M) -> Vec<CtKey> {
    let mut judged: HashMap<Judged, bool> = HashMap::new();
    let mut cut = Vec::new();
    for (key, value) in entries {
        let Some((conn, keys)) = connection(key, value) else {
            continue;
        };
        let allowed = *judged.entry(conn).or_insert_with(|| conn.allowed(maps));
        if !allowed {
            cut.extend(keys);
        }
    }
    cut.sort_unstable();
    cut.dedup();
    cut
}

/// Whether applying `ops` can deny a connection the maps allowed before:
/// a policy entry deleted, an address's identities changed (ipcache), or an
/// endpoint added or renumbered. Upserts of policy entries only add or
/// re-attribute allows, and a deleted endpoint is no longer enforced, so a
/// change made only of those needs no sweep (reading a large conntrack
/// table is the sweep's main cost).
pub fn may_deny(ops: &[PolicyMapOp]) -> bool {
    ops.iter().any(|op| {
        matches!(
            op,
            PolicyMapOp::PolicyDelete(_)
                | PolicyMapOp::IpcacheUpsert(..)
                | PolicyMapOp::IpcacheDelete(_)
                | PolicyMapOp::EndpointUpsert(..)
        )
    })
}

/// The addresses (network order, as in `CtKey`) whose connections applying
/// `ops` may deny, given the maps after them: the endpoints whose policy
/// entries were deleted, endpoints added or renumbered, and addresses
/// whose /32 ipcache entry changed (a peer's identity). `None`: any
/// connection (a CIDR's identities changed). Every tracked connection has
/// an entry naming each of its ends as source or destination (the reverse
/// entry starts at the backend), so filtering keys by these addresses finds
/// every connection to judge.
pub fn affected(ops: &[PolicyMapOp], maps: &PolicyMaps) -> Option<HashSet<u32>> {
    let mut ids = HashSet::new();
    let mut addrs = HashSet::new();
    for op in ops {
        match op {
            PolicyMapOp::PolicyDelete((_, k)) => {
                ids.insert(k.endpoint_id);
            }
            PolicyMapOp::EndpointUpsert(k, _) => {
                addrs.insert(k.addr);
            }
            PolicyMapOp::IpcacheUpsert((32, k), _) | PolicyMapOp::IpcacheDelete((32, k)) => {
                addrs.insert(k.addr);
            }
            PolicyMapOp::IpcacheUpsert(..) | PolicyMapOp::IpcacheDelete(_) => return None,
            PolicyMapOp::PolicyUpsert(..) | PolicyMapOp::EndpointDelete(_) => {}
        }
    }
    if !ids.is_empty() {
        addrs.extend(
            maps.endpoints
                .iter()
                .filter(|(_, v)| ids.contains(&v.endpoint_id))
                .map(|(k, _)| k.addr),
        );
    }
    Some(addrs)
}

/// What a sweep did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SweepStats {
    /// Entries read.
    pub entries: usize,
    /// Keys deleted (both directions of each cut connection; a key already
    /// gone counts too).
    pub deleted: usize,
}

/// Opens the conntrack map pinned under `pin_dir` (a node's bpffs dir).
pub fn open_conntrack(
    pin_dir: &Path,
) -> Result<BpfHashMap<MapData, CtKey, CtValue>, DatapathError> {
    let name = map_names::CONNTRACK;
    let err = |source| DatapathError::Map { name, source };
    let data = MapData::from_pin(pin_dir.join(name)).map_err(err)?;
    let map = Map::from_map_data(data).map_err(err)?;
    BpfHashMap::try_from(map).map_err(err)
}

/// Reads the conntrack entries (every one, or with `only` those whose key
/// names one of these addresses: a key walk, then one lookup per match),
/// and deletes those of connections `maps` denies ([`cut_keys`]).
pub fn sweep_conntrack<T: BorrowMut<MapData>>(
    ct: &mut BpfHashMap<T, CtKey, CtValue>,
    maps: &PolicyMaps,
    only: Option<&HashSet<u32>>,
) -> Result<SweepStats, DatapathError> {
    let err = |source| DatapathError::Map {
        name: map_names::CONNTRACK,
        source,
    };
    let entries = match only {
        None => ct.iter().collect::<Result<Vec<_>, _>>().map_err(err)?,
        Some(addrs) => {
            let keys = ct.keys().collect::<Result<Vec<_>, _>>().map_err(err)?;
            let mut entries = Vec::new();
            for key in keys {
                if !addrs.contains(&key.saddr) && !addrs.contains(&key.daddr) {
                    continue;
                }
                match ct.get(&key, 0) {
                    Ok(value) => entries.push((key, value)),
                    Err(MapError::KeyNotFound) => {}
                    Err(source) => return Err(err(source)),
                }
            }
            entries
        }
    };
    let cut = cut_keys(&entries, &SweepView::new(maps));
    for key in &cut {
        match ct.remove(key) {
            Ok(()) | Err(MapError::KeyNotFound | MapError::ElementNotFound) => {}
            Err(MapError::SyscallError(e)) if e.io_error.kind() == std::io::ErrorKind::NotFound => {
            }
            Err(source) => return Err(err(source)),
        }
    }
    Ok(SweepStats {
        entries: entries.len(),
        deleted: cut.len(),
    })
}

/// The sync's sweeper over the conntrack map pinned in a bpffs directory
/// (opened on first use, and again after a failure).
pub struct Sweeper {
    pin_dir: Option<PathBuf>,
    ct: Option<BpfHashMap<MapData, CtKey, CtValue>>,
}

impl Sweeper {
    /// `pin_dir`: the node's bpffs directory; `None` sweeps nothing.
    pub fn new(pin_dir: Option<PathBuf>) -> Self {
        Self { pin_dir, ct: None }
    }

    /// After `ops` were applied and the maps became `maps`: cuts the
    /// connections `maps` denies, unless `ops` cannot deny any
    /// ([`may_deny`]); only connections of the [`affected`] addresses are
    /// read and judged. Failures are logged (the connections then last until
    /// they end or expire, as before the change); the next change sweeps
    /// again.
    pub fn sweep(&mut self, ops: &[PolicyMapOp], maps: &PolicyMaps) {
        let Some(dir) = &self.pin_dir else {
            return;
        };
        if !may_deny(ops) {
            return;
        }
        let only = affected(ops, maps);
        if only.as_ref().is_some_and(HashSet::is_empty) {
            return;
        }
        let started = std::time::Instant::now();
        let ct = match self.ct.take() {
            Some(ct) => Ok(ct),
            None => open_conntrack(dir),
        };
        let result = ct.and_then(|mut ct| {
            // Hundreds of milliseconds for a large table (syscalls): tell the
            // runtime this worker blocks, so other tasks move elsewhere.
            let mut run = || sweep_conntrack(&mut ct, maps, only.as_ref());
            let stats = match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
                Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(run),
                _ => run(),
            };
            self.ct = Some(ct);
            stats
        });
        match result {
            Ok(stats) if stats.deleted > 0 => tracing::info!(
                entries = stats.entries,
                deleted = stats.deleted,
                elapsed = ?started.elapsed(),
                "conntrack entries of connections the new policy denies deleted"
            ),
            Ok(stats) => tracing::debug!(
                entries = stats.entries,
                elapsed = ?started.elapsed(),
                "conntrack swept, no connection denied"
            ),
            Err(error) => tracing::warn!(
                %error,
                "cannot sweep conntrack after a policy change: connections it denies last until they end"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use weir_ebpf_common::{CT_FLAG_NO_NAT, IPPROTO_TCP, IPPROTO_UDP};

    use super::super::tests::{compile_all, np, peers, pods};
    use super::*;

    const X_A: [u8; 4] = [10, 244, 1, 10];
    const X_B: [u8; 4] = [10, 244, 1, 11];
    const X_C: [u8; 4] = [10, 244, 1, 12];
    const Y_A: [u8; 4] = [10, 244, 1, 20];
    const Y_B: [u8; 4] = [10, 244, 1, 21];
    const Z_A: [u8; 4] = [10, 244, 2, 10];
    const EXT: [u8; 4] = [192, 0, 2, 10];
    const NODE1: [u8; 4] = [172, 30, 0, 11];
    const FRONTEND: [u8; 4] = [10, 96, 0, 10];

    fn be(a: [u8; 4]) -> u32 {
        u32::from(Ipv4Addr::from(a)).to_be()
    }

    fn key(proto: u8, (s, sp): ([u8; 4], u16), (d, dp): ([u8; 4], u16)) -> CtKey {
        CtKey {
            saddr: be(s),
            daddr: be(d),
            sport: sp.to_be(),
            dport: dp.to_be(),
            proto,
            _pad: [0; 3],
        }
    }

    /// The two entries the datapath writes for a connection from `client`
    /// to `frontend` served by `backend` (as `conntrack::create*`): with
    /// `nodeport` = Some(snat), a node-ingress connection (snat: the node
    /// address and port the source becomes).
    fn pair(
        proto: u8,
        client: ([u8; 4], u16),
        frontend: ([u8; 4], u16),
        backend: ([u8; 4], u16),
        flags: u8,
        snat: Option<([u8; 4], u16)>,
    ) -> [(CtKey, CtValue); 2] {
        let hairpin = flags & CT_FLAG_HAIRPIN != 0;
        let forward = CtValue {
            frontend_addr: be(frontend.0),
            backend_addr: be(backend.0),
            frontend_port: frontend.1.to_be(),
            backend_port: backend.1.to_be(),
            direction: CT_DIR_FORWARD,
            flags: flags | if snat.is_some() { CT_FLAG_SNAT } else { 0 },
            nat_addr: snat.map_or(0, |s| be(s.0)),
            nat_port: snat.map_or(0, |s| s.1.to_be()),
            ..CtValue::default()
        };
        let mut reverse = CtValue {
            direction: CT_DIR_REVERSE,
            ..forward
        };
        let reply_to = match snat {
            Some(s) => {
                reverse.nat_addr = be(client.0);
                reverse.nat_port = client.1.to_be();
                s
            }
            None if hairpin => (frontend.0, client.1),
            None => client,
        };
        [
            (key(proto, client, frontend), forward),
            (key(proto, backend, reply_to), reverse),
        ]
    }

    fn no_nat(proto: u8, client: ([u8; 4], u16), server: ([u8; 4], u16)) -> [(CtKey, CtValue); 2] {
        pair(proto, client, server, server, CT_FLAG_NO_NAT, None)
    }

    type Entries = Vec<(CtKey, CtValue)>;

    /// Node1's maps with a default-deny-ingress policy in namespace x.
    fn deny_ingress_x() -> PolicyMaps {
        let policies = [np(
            "x",
            "default-deny-ingress",
            json!({"podSelector": {}, "policyTypes": ["Ingress"]}),
        )];
        compile_all(&policies, &pods())["node1"].maps.clone()
    }

    #[test]
    fn connections_the_new_policy_denies_are_cut_with_both_entries() {
        let maps = deny_ingress_x();
        let (udp, tcp) = (IPPROTO_UDP, IPPROTO_TCP);
        // (what, the connection's entries, cut)
        let cases: Vec<(&str, Entries, bool)> = vec![
            (
                "local pod to a pod now isolated: cut",
                no_nat(udp, (Y_A, 40000), (X_B, 80)).to_vec(),
                true,
            ),
            (
                "TCP too",
                no_nat(tcp, (Y_A, 40001), (X_B, 80)).to_vec(),
                true,
            ),
            (
                "allowed (neither end isolated): stays",
                no_nat(udp, (X_A, 40002), (Y_B, 80)).to_vec(),
                false,
            ),
            (
                "from another node (to-pod's entry): cut",
                no_nat(udp, (Z_A, 40003), (X_A, 81)).to_vec(),
                true,
            ),
            (
                "from this node (HOST entries): stays",
                no_nat(udp, (NODE1, 40004), (X_A, 80)).to_vec(),
                false,
            ),
            (
                "neither end local: unenforced, stays",
                no_nat(udp, (Z_A, 40005), (EXT, 53)).to_vec(),
                false,
            ),
            (
                "service to a backend now isolated: judged on the backend, cut",
                pair(udp, (Y_A, 40006), (FRONTEND, 53), (X_C, 80), 0, None).to_vec(),
                true,
            ),
            (
                "service to an allowed backend: stays",
                pair(udp, (X_A, 40007), (FRONTEND, 53), (Y_B, 80), 0, None).to_vec(),
                false,
            ),
            (
                "NodePort with SNAT to a backend now isolated: cut",
                pair(
                    tcp,
                    (EXT, 40008),
                    (NODE1, 30080),
                    (X_A, 80),
                    CT_FLAG_NODEPORT,
                    Some((NODE1, 61000)),
                )
                .to_vec(),
                true,
            ),
            (
                "NodePort without SNAT (externalTrafficPolicy Local): cut",
                pair(
                    udp,
                    (EXT, 40009),
                    (NODE1, 30080),
                    (X_A, 80),
                    CT_FLAG_NODEPORT,
                    None,
                )
                .to_vec(),
                true,
            ),
            (
                "NodePort to an allowed backend: stays",
                pair(
                    udp,
                    (EXT, 40010),
                    (NODE1, 30080),
                    (Y_A, 80),
                    CT_FLAG_NODEPORT,
                    None,
                )
                .to_vec(),
                false,
            ),
            (
                "hairpin (a pod reaching itself): stays",
                pair(
                    tcp,
                    (X_A, 40011),
                    (FRONTEND, 80),
                    (X_A, 80),
                    CT_FLAG_HAIRPIN,
                    None,
                )
                .to_vec(),
                false,
            ),
            (
                "masquerade entry: not a policy decision, stays",
                vec![(
                    key(udp, (EXT, 53), (NODE1, 61001)),
                    CtValue {
                        direction: CT_DIR_REVERSE,
                        flags: CT_FLAG_MASQ,
                        nat_addr: be(Z_A),
                        ..CtValue::default()
                    },
                )],
                false,
            ),
        ];
        for (what, entries, cut) in cases {
            let got = cut_keys(&entries, &SweepView::new(&maps));
            let mut want: Vec<CtKey> = if cut {
                entries.iter().map(|(k, _)| *k).collect()
            } else {
                Vec::new()
            };
            want.sort_unstable();
            assert_eq!(got, want, "{what}");
            // Either entry alone (the other evicted) cuts both keys.
            if cut {
                for one in &entries {
                    assert_eq!(
                        cut_keys(&[*one], &SweepView::new(&maps)),
                        want,
                        "{what}: from {:?} alone",
                        one.1.direction
                    );
                }
            }
            // The plain (scanning) view agrees with the index.
            assert_eq!(cut_keys(&entries, &maps), got, "{what}: plain view");
        }
    }

    #[test]
    fn only_changes_that_can_deny_are_swept() {
        let limits = super::super::PolicyLimits::default();
        let none = compile_all(&[], &pods())["node1"].maps.clone();
        let denied = deny_ingress_x();
        let admitted = {
            let policies = [
                np(
                    "x",
                    "default-deny-ingress",
                    json!({"podSelector": {}, "policyTypes": ["Ingress"]}),
                ),
                np(
                    "x",
                    "admit-y",
                    json!({"podSelector": {}, "ingress": [
                        {"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}]}]}),
                ),
            ];
            compile_all(&policies, &pods())["node1"].maps.clone()
        };
        let cases = [
            ("a deny added", &none, &denied, true),
            ("an allow added", &denied, &admitted, false),
            ("the allow removed", &admitted, &denied, true),
            ("no change", &denied, &denied, false),
        ];
        for (what, from, to, want) in cases {
            let ops = super::super::diff(from, to, &limits);
            assert_eq!(may_deny(&ops), want, "{what}: {ops:?}");
        }
    }

    #[test]
    fn affected_addresses_are_the_changed_endpoints_and_peers() {
        let limits = super::super::PolicyLimits::default();
        let none = compile_all(&[], &pods())["node1"].maps.clone();
        let denied = deny_ingress_x();
        let ops = super::super::diff(&none, &denied, &limits);
        let got = affected(&ops, &denied).expect("no CIDR change");
        let x: HashSet<u32> = [X_A, X_B, X_C].into_iter().map(be).collect();
        assert!(x.is_subset(&got), "x's pods: {got:?}");
        assert!(!got.contains(&be(Y_A)), "y/a's policy did not change");
        let ops = super::super::diff(&denied, &denied, &limits);
        assert_eq!(affected(&ops, &denied), Some(HashSet::new()));
        // An ipcache change of a CIDR: every connection.
        let cidr = (
            24,
            weir_ebpf_common::policy::IpcacheKey {
                addr: be([192, 0, 2, 0]),
            },
        );
        let op = PolicyMapOp::IpcacheDelete(cidr);
        assert_eq!(affected(&[op], &denied), None);
    }

    #[test]
    fn before_the_change_nothing_is_cut() {
        let maps = compile_all(&[], &pods())["node1"].maps.clone();
        let entries = [
            no_nat(IPPROTO_UDP, (Y_A, 40000), (X_B, 80)),
            pair(
                IPPROTO_UDP,
                (Y_A, 40006),
                (FRONTEND, 53),
                (X_C, 80),
                0,
                None,
            ),
        ]
        .concat();
        assert!(cut_keys(&entries, &SweepView::new(&maps)).is_empty());
    }

    /// The index answers every lookup as the trie emulation of `verdict`
    /// does, over policies with ports, ranges, ipBlocks and selectors.
    #[test]
    fn the_index_agrees_with_the_trie_emulation() {
        let policies = [
            np(
                "x",
                "web",
                json!({"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [
                    {"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}],
                     "ports": [{"port": 80, "endPort": 90}]},
                    {"from": [{"ipBlock": {"cidr": "192.0.2.0/24", "except": ["192.0.2.10/32"]}}]}]}),
            ),
            np(
                "y",
                "egress",
                json!({"podSelector": {}, "policyTypes": ["Egress"], "egress": [
                    {"to": [{"podSelector": {"matchLabels": {"pod": "b"}}}],
                     "ports": [{"protocol": "UDP", "port": 81}]}]}),
            ),
        ];
        let maps = compile_all(&policies, &pods())["node1"].maps.clone();
        let view = SweepView::new(&maps);
        let ips: Vec<Ipv4Addr> = peers()
            .iter()
            .map(|p| p.ip)
            .chain([Ipv4Addr::new(192, 0, 2, 11), Ipv4Addr::new(8, 8, 8, 8)])
            .collect();
        for &src in &ips {
            for &dst in &ips {
                for proto in [IPPROTO_TCP, IPPROTO_UDP] {
                    for port in [53, 79, 80, 81, 85, 90, 91] {
                        assert_eq!(
                            verdict(&view, src, dst, proto, port),
                            verdict(&maps, src, dst, proto, port),
                            "{src} -> {dst}:{port}/{proto}"
                        );
                    }
                }
            }
        }
    }
}
