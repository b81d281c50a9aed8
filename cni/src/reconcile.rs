//! Reconciling IPAM records against the sandboxes the runtime knows.
//!
//! A record whose sandbox vanished without a CNI DEL (the runtime crashed
//! between ADD and recording the sandbox, the node namespace restarted, a
//! DEL failed) would hold its address forever. The node agent lists every
//! sandbox over CRI and calls [`reconcile`], which releases the records of
//! container ids with no sandbox in any state, once they are older than a
//! grace period (an ADD in flight writes its record before the runtime lists
//! its sandbox). NotReady sandboxes keep their records: the runtime still
//! runs their DEL when they are removed.
//!
//! The decision is the pure [`plan`]; [`reconcile`] is the thin I/O around
//! it and works under the store's own `flock`, so it never races an ADD or
//! DEL of the plugin.

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::time::{Duration, SystemTime};

use crate::ipam::{IpamError, IpamStore};

/// How old a record of an unknown container must be before it is released.
pub const GRACE: Duration = Duration::from_secs(120);

/// One record file as found in the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub ip: Ipv4Addr,
    /// `None` when the file's content cannot be parsed.
    pub container_id: Option<String>,
    /// The file's modification time (when the ADD wrote it).
    pub modified: SystemTime,
}

/// What [`plan`] decided, and what [`reconcile`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Records to release (released, for [`reconcile`]): address and container id.
    pub release: Vec<(Ipv4Addr, String)>,
    /// Records whose content cannot be parsed: left alone (their address
    /// stays reserved) and reported so an operator can look.
    pub unparseable: Vec<Ipv4Addr>,
}

/// Chooses the records to release: those whose container id is not in
/// `live` (every sandbox id the runtime lists, ready or not) and that are
/// at least `grace` old at `now`. A record dated in the future counts as new.
pub fn plan(
    records: &[Record],
    live: &HashSet<String>,
    now: SystemTime,
    grace: Duration,
) -> Outcome {
    let mut out = Outcome::default();
    for r in records {
        let Some(id) = &r.container_id else {
            out.unparseable.push(r.ip);
            continue;
        };
        let age = now.duration_since(r.modified).unwrap_or(Duration::ZERO);
        if !live.contains(id) && age >= grace {
            out.release.push((r.ip, id.clone()));
        }
    }
    out.release.sort();
    out.unparseable.sort();
    out
}

/// Reads the store's records, decides with [`plan`] and removes the chosen
/// records, all under the store lock: between the read and the removal no
/// ADD or DEL can change a record, so a removed record still names the
/// container id it was chosen for (checked again before each removal).
/// Returns what was released and the unparseable records.
pub fn reconcile(
    store: &IpamStore,
    live: &HashSet<String>,
    now: SystemTime,
    grace: Duration,
) -> Result<Outcome, IpamError> {
    let _lock = store.lock()?;
    let records: Vec<Record> = store
        .scan()?
        .into_iter()
        .map(|r| Record {
            ip: r.ip,
            container_id: r.owner.map(|o| o.container_id),
            modified: r.modified,
        })
        .collect();
    let chosen = plan(&records, live, now, grace);
    let mut released = Vec::with_capacity(chosen.release.len());
    for (ip, id) in chosen.release {
        if store.remove_if_owned_by(ip, &id)? {
            released.push((ip, id));
        }
    }
    Ok(Outcome {
        release: released,
        unparseable: chosen.unparseable,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipam::Owner;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().expect("ip")
    }

    const NOW_SECS: u64 = 1_000_000;

    fn rec(addr: &str, id: Option<&str>, age_secs: u64) -> Record {
        Record {
            ip: ip(addr),
            container_id: id.map(str::to_owned),
            modified: SystemTime::UNIX_EPOCH + Duration::from_secs(NOW_SECS - age_secs),
        }
    }

    /// (case, record, live sandbox ids, released?, reported unparseable?)
    type Case = (&'static str, Record, &'static [&'static str], bool, bool);

    #[test]
    fn plan_table() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(NOW_SECS);
        let cases: [Case; 7] = [
            (
                "ready sandbox keeps its record",
                rec("10.0.0.2", Some("a"), 600),
                &["a"],
                false,
                false,
            ),
            // ListPodSandbox without a filter lists NotReady sandboxes too;
            // their id is in `live` like any other.
            (
                "notready sandbox keeps its record",
                rec("10.0.0.3", Some("nr"), 600),
                &["a", "nr"],
                false,
                false,
            ),
            (
                "unknown id older than grace is released",
                rec("10.0.0.4", Some("gone"), 121),
                &["a"],
                true,
                false,
            ),
            (
                "unknown id exactly grace old is released",
                rec("10.0.0.5", Some("gone"), 120),
                &[],
                true,
                false,
            ),
            (
                "unknown id younger than grace is kept",
                rec("10.0.0.6", Some("new"), 30),
                &["a"],
                false,
                false,
            ),
            (
                "unparseable record is kept and reported",
                rec("10.0.0.7", None, 600),
                &[],
                false,
                true,
            ),
            (
                "record dated in the future is kept",
                rec("10.0.0.8", Some("gone"), 0),
                &[],
                false,
                false,
            ),
        ];
        for (name, record, live, released, reported) in cases {
            let live: HashSet<String> = live.iter().map(|s| s.to_string()).collect();
            let mut record = record;
            if name.contains("future") {
                record.modified = now + Duration::from_secs(3600);
            }
            let out = plan(std::slice::from_ref(&record), &live, now, GRACE);
            let want_release = if released {
                vec![(record.ip, record.container_id.clone().expect("id"))]
            } else {
                vec![]
            };
            assert_eq!(out.release, want_release, "{name}");
            assert_eq!(
                out.unparseable,
                if reported { vec![record.ip] } else { vec![] },
                "{name}"
            );
        }
    }

    fn owner(id: &str) -> Owner {
        Owner {
            container_id: id.into(),
            ifname: "eth0".into(),
        }
    }

    #[test]
    fn reconcile_releases_records_of_vanished_sandboxes() {
        let dir = tempfile::tempdir().expect("tempdir");
        // /29: .2 ..= .6, five addresses, so reuse is visible.
        let store =
            IpamStore::open(dir.path(), "10.0.0.0/29".parse().expect("cidr")).expect("open");
        let a = store.allocate(&owner("a")).expect("a").ip;
        let b = store.allocate(&owner("b")).expect("b").ip;
        let c = store.allocate(&owner("c")).expect("c").ip;
        std::fs::write(dir.path().join("10.0.0.6"), "garbage").expect("garbage record");
        let live: HashSet<String> = ["a".to_string()].into();

        // Just written: younger than the grace period, nothing goes.
        let out = reconcile(&store, &live, SystemTime::now(), GRACE).expect("reconcile");
        assert_eq!(out.release, vec![]);
        assert_eq!(out.unparseable, vec![ip("10.0.0.6")]);

        let later = SystemTime::now() + GRACE + Duration::from_secs(1);
        let out = reconcile(&store, &live, later, GRACE).expect("reconcile");
        assert_eq!(
            out.release,
            vec![(b, "b".to_string()), (c, "c".to_string())]
        );
        assert_eq!(out.unparseable, vec![ip("10.0.0.6")]);
        assert!(dir.path().join(a.to_string()).exists());
        assert!(!dir.path().join(b.to_string()).exists());
        assert!(!dir.path().join(c.to_string()).exists());
        assert!(
            dir.path().join("10.0.0.6").exists(),
            "unparseable record left alone"
        );
        assert_eq!(store.lookup(&owner("a")).expect("lookup"), Some(a));

        // The released addresses are free again: .5 is next round-robin,
        // then the search wraps around to .3 and .4 (b's and c's).
        let next: Vec<Ipv4Addr> = ["d", "e", "f"]
            .iter()
            .map(|id| store.allocate(&owner(id)).expect(id).ip)
            .collect();
        assert_eq!(next, vec![ip("10.0.0.5"), b, c]);

        // Idempotent: a second pass finds nothing more to release.
        let live: HashSet<String> = ["a", "d", "e", "f"].iter().map(|s| s.to_string()).collect();
        let out = reconcile(&store, &live, later, GRACE).expect("reconcile again");
        assert_eq!(out.release, vec![]);
    }
}
