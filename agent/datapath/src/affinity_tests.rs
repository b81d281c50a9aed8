//! Privileged BPF_PROG_TEST_RUN tests of `sessionAffinity: ClientIP` in the
//! from-pod program: stickiness, the affinity map's contents, expiry, and
//! backend set changes.

use aya::maps::{HashMap, MapData};
use weir_ebpf_common::{
    AFFINITY_CLIENT_IP, AffinityKey, AffinityValue, Backend, IPPROTO_TCP, ServiceKey, map_names,
};

use super::Datapath;
use super::plan::{DesiredServices, Frontend};
use super::tests::{SYN, TC_ACT_OK, check, load, tcp};

const CLIENT: [u8; 4] = [10, 244, 1, 2];
const OTHER_CLIENT: [u8; 4] = [10, 244, 1, 3];
const VIP: [u8; 4] = [10, 96, 0, 44];
const PLAIN_VIP: [u8; 4] = [10, 96, 0, 45];
const TIMEOUT_SECS: u32 = 60;

impl Datapath {
    fn affinity(&mut self) -> HashMap<&mut MapData, AffinityKey, AffinityValue> {
        let map = self
            .ebpf
            .map_mut(map_names::AFFINITY)
            .expect("affinity map");
        HashMap::try_from(map).expect("a hash map")
    }
}

fn backends(n: u8) -> Vec<Backend> {
    (0..n)
        .map(|i| Backend::new([10, 244, 1, 10 + i], 8080))
        .collect()
}

fn desired(backends: Vec<Backend>) -> DesiredServices {
    DesiredServices::from([
        (
            ServiceKey::new(VIP, 80, IPPROTO_TCP),
            Frontend {
                backends: backends.clone(),
                flags: 0,
                affinity_timeout_secs: TIMEOUT_SECS,
                source_ranges: Vec::new(),
            },
        ),
        (ServiceKey::new(PLAIN_VIP, 80, IPPROTO_TCP), backends.into()),
    ])
}

fn affinity_key(client: [u8; 4], vip: [u8; 4]) -> AffinityKey {
    let frontend = ServiceKey::new(vip, 80, IPPROTO_TCP);
    AffinityKey {
        client: u64::from(u32::from_ne_bytes(client)),
        frontend_addr: frontend.addr,
        frontend_port: frontend.port,
        proto: IPPROTO_TCP,
        kind: AFFINITY_CLIENT_IP,
    }
}

/// The backend a new connection from `client:sport` to `vip:80` is sent to.
fn connect(dp: &Datapath, client: [u8; 4], sport: u16, vip: [u8; 4]) -> ([u8; 4], u16) {
    let (verdict, out) = dp.run(&tcp(client, sport, vip, 80, SYN));
    assert_eq!(verdict, TC_ACT_OK);
    check(&out).dst
}

fn as_pair(b: &Backend) -> ([u8; 4], u16) {
    (b.addr.to_ne_bytes(), u16::from_be(b.port))
}

#[test]
#[ignore = "privileged: loads BPF programs (root, CAP_BPF)"]
fn datapath_session_affinity_sticks_expires_and_follows_set_changes() {
    let (mut dp, _dir) = load();
    let set = backends(4);
    dp.seed(&desired(set.clone()));

    // Without affinity, connections from one client spread over the set...
    let plain: std::collections::BTreeSet<_> = (30000..30032)
        .map(|p| connect(&dp, CLIENT, p, PLAIN_VIP))
        .collect();
    assert!(plain.len() > 1, "hashing spreads connections: {plain:?}");
    assert!(
        dp.affinity()
            .get(&affinity_key(CLIENT, PLAIN_VIP), 0)
            .is_err(),
        "no affinity entry for a service without affinity"
    );

    // ...with it, every connection of the client goes to one backend.
    let first = connect(&dp, CLIENT, 31000, VIP);
    for sport in 31001..31032 {
        assert_eq!(connect(&dp, CLIENT, sport, VIP), first, "port {sport}");
    }
    let key = affinity_key(CLIENT, VIP);
    let entry = dp.affinity().get(&key, 0).expect("affinity entry");
    assert_eq!(as_pair(&entry.backend), first);
    assert_eq!(set[entry.index as usize], entry.backend);

    // The datapath follows the map: point the client at another backend.
    let other = (entry.index as usize + 1) % set.len();
    let moved = AffinityValue {
        backend: set[other],
        index: other as u32,
        ..entry
    };
    dp.affinity().insert(key, moved, 0).expect("write entry");
    assert_eq!(connect(&dp, CLIENT, 32000, VIP), as_pair(&set[other]));

    // An expired affinity is chosen afresh (by hash), and refreshed.
    let expired_at = entry.last_used_ns - u64::from(TIMEOUT_SECS + 1) * 1_000_000_000;
    let mut picks = std::collections::BTreeSet::new();
    for sport in 33000..33016 {
        let stale = AffinityValue {
            last_used_ns: expired_at,
            ..moved
        };
        dp.affinity().insert(key, stale, 0).expect("write entry");
        let got = connect(&dp, CLIENT, sport, VIP);
        let fresh = dp.affinity().get(&key, 0).expect("entry");
        assert_eq!(as_pair(&fresh.backend), got, "the new choice is remembered");
        assert!(fresh.last_used_ns > expired_at, "and refreshed");
        picks.insert(got);
    }
    assert!(
        picks.len() > 1,
        "expired affinities do not stick: {picks:?}"
    );

    // A backend that left the set is not used, even with a live affinity.
    let gone = set[0];
    let now = fresh_now(&mut dp);
    dp.affinity()
        .insert(
            key,
            AffinityValue {
                backend: gone,
                index: 0,
                last_used_ns: now,
                ..moved
            },
            0,
        )
        .expect("write entry");
    dp.seed(&desired(set[1..].to_vec()));
    let got = connect(&dp, CLIENT, 34000, VIP);
    assert_ne!(
        got,
        as_pair(&gone),
        "removed backend chosen through affinity"
    );
    for sport in 34001..34010 {
        assert_eq!(connect(&dp, CLIENT, sport, VIP), got, "sticky again");
    }

    // Another client has its own affinity.
    let theirs = connect(&dp, OTHER_CLIENT, 35000, VIP);
    for sport in 35001..35010 {
        assert_eq!(connect(&dp, OTHER_CLIENT, sport, VIP), theirs);
    }
}

/// The datapath's current clock: a connection refreshes its entry's
/// `last_used_ns` with `bpf_ktime_get_ns()`.
fn fresh_now(dp: &mut Datapath) -> u64 {
    connect(dp, OTHER_CLIENT, 36000, VIP);
    dp.affinity()
        .get(&affinity_key(OTHER_CLIENT, VIP), 0)
        .expect("entry")
        .last_used_ns
}
