//! Read-only inspection of a node's datapath from its pinned maps, without
//! loading or attaching anything: what an operator (or a test) needs to see
//! why a packet was dropped. Rendering is pure and table-tested.

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::Path;

use aya::maps::{HashMap, Map, MapData, PerCpuArray};
use weir_ebpf_common::{
    Backend, BackendKey, CtKey, CtValue, IPPROTO_TCP, IPPROTO_UDP, SERVICE_FLAG_EXT_LOCAL,
    SERVICE_FLAG_NODEPORT, ServiceKey, ServiceValue, drop_reason, map_names,
};

use super::DatapathError;

/// What the kernel holds for one node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Every frontend with its value and its backend set (in index order;
    /// `None` for an index missing from the backends map).
    pub services: Vec<(ServiceKey, ServiceValue, Vec<Option<Backend>>)>,
    /// Every conntrack entry.
    pub conntrack: Vec<(CtKey, CtValue)>,
    /// Drop counters by reason, summed over CPUs.
    pub drops: Vec<(&'static str, u64)>,
}

fn open(pin_dir: &Path, name: &'static str) -> Result<Map, DatapathError> {
    let data = MapData::from_pin(pin_dir.join(name))
        .map_err(|source| DatapathError::Map { name, source })?;
    Map::from_map_data(data).map_err(|source| DatapathError::Map { name, source })
}

/// Reads the maps pinned under `pin_dir` (a node's `--bpffs-dir`).
pub fn snapshot(pin_dir: &Path) -> Result<Snapshot, DatapathError> {
    let err = |name| move |source| DatapathError::Map { name, source };
    let services: HashMap<MapData, ServiceKey, ServiceValue> =
        HashMap::try_from(open(pin_dir, map_names::SERVICES)?).map_err(err(map_names::SERVICES))?;
    let backends: HashMap<MapData, BackendKey, Backend> =
        HashMap::try_from(open(pin_dir, map_names::BACKENDS)?).map_err(err(map_names::BACKENDS))?;
    let conntrack: HashMap<MapData, CtKey, CtValue> =
        HashMap::try_from(open(pin_dir, map_names::CONNTRACK)?)
            .map_err(err(map_names::CONNTRACK))?;
    let drops: PerCpuArray<MapData, u64> =
        PerCpuArray::try_from(open(pin_dir, map_names::DROPS)?).map_err(err(map_names::DROPS))?;

    let mut snap = Snapshot::default();
    for entry in services.iter() {
        let (key, value) = entry.map_err(err(map_names::SERVICES))?;
        let set = (0..value.backend_count)
            .map(|index| {
                backends
                    .get(
                        &BackendKey {
                            slot: value.backend_slot,
                            index,
                        },
                        0,
                    )
                    .ok()
            })
            .collect();
        snap.services.push((key, value, set));
    }
    snap.services.sort_by_key(|(k, _, _)| *k);
    for entry in conntrack.iter() {
        snap.conntrack
            .push(entry.map_err(err(map_names::CONNTRACK))?);
    }
    snap.conntrack.sort_by_key(|(k, _)| *k);
    for (index, name) in (0..drop_reason::COUNT).zip(drop_reason::NAMES) {
        let per_cpu = drops.get(&index, 0).map_err(err(map_names::DROPS))?;
        snap.drops.push((name, per_cpu.iter().sum()));
    }
    Ok(snap)
}

fn addr(be: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from_be(be))
}

fn proto(p: u8) -> &'static str {
    match p {
        IPPROTO_TCP => "TCP",
        IPPROTO_UDP => "UDP",
        _ => "?",
    }
}

/// One line per frontend: `FRONTEND PROTO KIND AFFINITY BACKENDS` (kind: cluster,
/// external, external-dsr for direct server return, external-local).
pub fn render_services(snap: &Snapshot) -> String {
    let mut out = String::from("FRONTEND\tPROTO\tKIND\tAFFINITY\tBACKENDS\n");
    for (key, value, set) in &snap.services {
        let kind = match (
            value.flags & SERVICE_FLAG_NODEPORT != 0,
            value.flags & SERVICE_FLAG_EXT_LOCAL != 0,
        ) {
            (false, _) => "cluster",
            (true, false) if value.flags & weir_ebpf_common::SERVICE_FLAG_DSR != 0 => {
                "external-dsr"
            }
            (true, false) => "external",
            (true, true) => "external-local",
        };
        let affinity = match value.affinity_timeout_secs {
            0 => "-".to_owned(),
            secs => format!("{secs}s"),
        };
        let backends = if set.is_empty() {
            "<none: new connections dropped>".to_owned()
        } else {
            set.iter()
                .map(|b| match b {
                    Some(b) => format!("{}:{}", addr(b.addr), u16::from_be(b.port)),
                    None => "<missing>".to_owned(),
                })
                .collect::<Vec<_>>()
                .join(",")
        };
        let _ = writeln!(
            out,
            "{}:{}\t{}\t{kind}\t{affinity}\t{backends}",
            addr(key.addr),
            u16::from_be(key.port),
            proto(key.proto)
        );
    }
    out
}

/// One line per drop reason with a non-zero count.
pub fn render_drops(snap: &Snapshot) -> String {
    let mut out = String::from("REASON\tCOUNT\n");
    for (name, count) in snap.drops.iter().filter(|(_, c)| *c > 0) {
        let _ = writeln!(out, "{name}\t{count}");
    }
    out
}

/// One line per conntrack entry: `TUPLE DIRECTION FRONTEND BACKEND`, where the
/// tuple is the key the kernel matched on.
pub fn render_conntrack(snap: &Snapshot) -> String {
    let mut out = String::from("PROTO\tSOURCE\tDESTINATION\tDIRECTION\tFRONTEND\tBACKEND\n");
    for (key, value) in &snap.conntrack {
        let direction = match value.direction {
            weir_ebpf_common::CT_DIR_FORWARD => "forward",
            weir_ebpf_common::CT_DIR_REVERSE => "reverse",
            _ => "?",
        };
        let _ = writeln!(
            out,
            "{}\t{}:{}\t{}:{}\t{direction}\t{}:{}\t{}:{}",
            proto(key.proto),
            addr(key.saddr),
            u16::from_be(key.sport),
            addr(key.daddr),
            u16::from_be(key.dport),
            addr(value.frontend_addr),
            u16::from_be(value.frontend_port),
            addr(value.backend_addr),
            u16::from_be(value.backend_port),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conntrack_lines_show_both_directions_in_host_order() {
        let ip = |a: [u8; 4]| u32::from_be_bytes(a).to_be();
        let key = CtKey {
            saddr: ip([10, 244, 1, 5]),
            daddr: ip([10, 96, 0, 10]),
            sport: 40000u16.to_be(),
            dport: 80u16.to_be(),
            proto: IPPROTO_TCP,
            _pad: [0; 3],
        };
        let value = CtValue {
            frontend_addr: ip([10, 96, 0, 10]),
            backend_addr: ip([10, 244, 1, 7]),
            frontend_port: 80u16.to_be(),
            backend_port: 8080u16.to_be(),
            direction: weir_ebpf_common::CT_DIR_FORWARD,
            ..Default::default()
        };
        let snap = Snapshot {
            conntrack: vec![(key, value)],
            ..Default::default()
        };
        let out = render_conntrack(&snap);
        assert_eq!(
            out.lines().nth(1),
            Some("TCP\t10.244.1.5:40000\t10.96.0.10:80\tforward\t10.96.0.10:80\t10.244.1.7:8080")
        );
    }

    #[test]
    fn render_services_table() {
        let web = ServiceKey::new([10, 96, 0, 10], 80, IPPROTO_TCP);
        let node_port = ServiceKey::new([172, 30, 0, 11], 30080, IPPROTO_TCP);
        let dns = ServiceKey::new([10, 96, 0, 53], 53, IPPROTO_UDP);
        let value = |count, flags, affinity_timeout_secs| ServiceValue {
            backend_slot: 1,
            backend_count: count,
            flags,
            affinity_timeout_secs,
        };
        let b = Backend::new([10, 244, 1, 5], 8080);
        let cases = [
            (
                "a cluster frontend with affinity",
                (web, value(1, 0, 60), vec![Some(b)]),
                "10.96.0.10:80\tTCP\tcluster\t60s\t10.244.1.5:8080\n",
            ),
            (
                "an external-local frontend with a torn set",
                (
                    node_port,
                    value(2, SERVICE_FLAG_NODEPORT | SERVICE_FLAG_EXT_LOCAL, 0),
                    vec![Some(b), None],
                ),
                "172.30.0.11:30080\tTCP\texternal-local\t-\t10.244.1.5:8080,<missing>\n",
            ),
            (
                "a direct-server-return frontend",
                (
                    node_port,
                    value(
                        1,
                        SERVICE_FLAG_NODEPORT | weir_ebpf_common::SERVICE_FLAG_DSR,
                        0,
                    ),
                    vec![Some(b)],
                ),
                "172.30.0.11:30080\tTCP\texternal-dsr\t-\t10.244.1.5:8080\n",
            ),
            (
                "a frontend without backends says what happens",
                (dns, value(0, 0, 0), vec![]),
                "10.96.0.53:53\tUDP\tcluster\t-\t<none: new connections dropped>\n",
            ),
        ];
        for (name, service, want) in cases {
            let snap = Snapshot {
                services: vec![service],
                ..Snapshot::default()
            };
            let got = render_services(&snap);
            assert_eq!(
                got.lines().nth(1).map(|l| format!("{l}\n")),
                Some(want.to_owned()),
                "{name}"
            );
        }
    }

    #[test]
    fn render_drops_lists_only_nonzero_reasons() {
        let snap = Snapshot {
            drops: vec![("no_backend", 3), ("rewrite", 0)],
            ..Snapshot::default()
        };
        assert_eq!(render_drops(&snap), "REASON\tCOUNT\nno_backend\t3\n");
    }
}
