//! Host-local IP address management for one node's pod CIDR.
//!
//! State is a directory (`dataDir`) with one file per allocated address,
//! named by the address (`10.244.1.7`) and holding `"<container id>\n<ifname>\n"`,
//! plus `last_reserved_ip` (where the round-robin search resumes) and
//! `lock`. Every read-modify-write happens under an exclusive `flock` on
//! `lock`, so concurrent ADDs on a node never hand out the same address;
//! a record itself is written to a temporary file first and then hard-linked
//! to its final name, which fails if the name exists, so a record is never
//! seen half-written and never overwritten even if the lock were bypassed.
//!
//! The choice of address is the pure [`next_free`]: round-robin after the
//! last reserved address, so a just-released IP is reused as late as
//! possible (stale conntrack and endpoint entries for it have time to go).

use std::collections::BTreeSet;
use std::fs;
use std::io::{self, Write};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::Ipv4Net;

use crate::config::gateway_of;
use crate::sys;

/// How long an invocation waits for the store lock before answering
/// "try again later" (CNI code 11).
pub const LOCK_TIMEOUT: Duration = Duration::from_secs(10);

const LOCK_FILE: &str = "lock";
const LAST_RESERVED_FILE: &str = "last_reserved_ip";

/// Failures of the IPAM store.
#[derive(Debug, thiserror::Error)]
pub enum IpamError {
    #[error("no free address left in {cidr} ({assignable} assignable, all in use)")]
    Exhausted { cidr: Ipv4Net, assignable: u32 },

    #[error("IPAM store {dir} is locked by another invocation for more than {timeout:?}")]
    LockTimeout { dir: PathBuf, timeout: Duration },

    #[error("IPAM store {path}: {op}: {source}")]
    Store {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: io::Error,
    },
}

fn store_err(path: &Path, op: &'static str) -> impl FnOnce(io::Error) -> IpamError {
    let path = path.to_path_buf();
    move |source| IpamError::Store { path, op, source }
}

/// The assignable range of a pod CIDR: everything except the network
/// address, the gateway (network + 1) and the broadcast address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pool {
    cidr: Ipv4Net,
}

impl Pool {
    /// `cidr` must have a prefix of /30 or shorter (checked by config).
    pub fn new(cidr: Ipv4Net) -> Pool {
        Pool { cidr: cidr.trunc() }
    }

    pub fn cidr(&self) -> Ipv4Net {
        self.cidr
    }

    pub fn gateway(&self) -> Ipv4Addr {
        gateway_of(self.cidr)
    }

    fn first(&self) -> u32 {
        u32::from(self.cidr.network()).saturating_add(2)
    }

    fn last(&self) -> u32 {
        u32::from(self.cidr.broadcast()).saturating_sub(1)
    }

    /// Number of assignable addresses.
    pub fn size(&self) -> u32 {
        self.last().saturating_sub(self.first()).saturating_add(1)
    }

    /// Whether `ip` may be given to a pod.
    pub fn is_assignable(&self, ip: Ipv4Addr) -> bool {
        (self.first()..=self.last()).contains(&u32::from(ip))
    }
}

/// Picks the first address after `last` (wrapping around) that is
/// assignable and not in `allocated`; `None` when the pool is full.
pub fn next_free(
    pool: Pool,
    allocated: &BTreeSet<Ipv4Addr>,
    last: Option<Ipv4Addr>,
) -> Option<Ipv4Addr> {
    let (first, end) = (pool.first(), pool.last());
    let start = match last {
        Some(ip) if pool.is_assignable(ip) && u32::from(ip) < end => u32::from(ip) + 1,
        _ => first,
    };
    (start..=end)
        .chain(first..start)
        .map(Ipv4Addr::from)
        .find(|ip| !allocated.contains(ip))
}

/// Who holds an address: the CNI attachment key (network is implied by the
/// store directory).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    pub container_id: String,
    pub ifname: String,
}

impl Owner {
    fn render(&self) -> String {
        format!("{}\n{}\n", self.container_id, self.ifname)
    }

    fn parse(text: &str) -> Option<Owner> {
        let mut lines = text.lines();
        let container_id = lines.next()?.trim();
        let ifname = lines.next()?.trim();
        if container_id.is_empty() || ifname.is_empty() {
            return None;
        }
        Some(Owner {
            container_id: container_id.to_owned(),
            ifname: ifname.to_owned(),
        })
    }
}

/// Result of [`IpamStore::allocate`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Allocation {
    pub ip: Ipv4Addr,
    /// True when the owner already held this address (repeated ADD).
    pub reused: bool,
}

/// One record file as [`IpamStore::scan`] found it.
pub(crate) struct ScannedRecord {
    pub(crate) ip: Ipv4Addr,
    pub(crate) owner: Option<Owner>,
    pub(crate) modified: std::time::SystemTime,
}

/// The allocation directory of one node.
#[derive(Debug)]
pub struct IpamStore {
    dir: PathBuf,
    pool: Pool,
    lock_timeout: Duration,
}

impl IpamStore {
    /// Opens (creating if needed) the store at `dir` for `cidr`.
    pub fn open(dir: &Path, cidr: Ipv4Net) -> Result<IpamStore, IpamError> {
        fs::create_dir_all(dir).map_err(store_err(dir, "create directory"))?;
        Ok(IpamStore {
            dir: dir.to_path_buf(),
            pool: Pool::new(cidr),
            lock_timeout: LOCK_TIMEOUT,
        })
    }

    /// Overrides the lock timeout (tests).
    pub fn with_lock_timeout(mut self, timeout: Duration) -> IpamStore {
        self.lock_timeout = timeout;
        self
    }

    pub fn pool(&self) -> Pool {
        self.pool
    }

    /// Returns the owner's address, allocating one if it has none.
    pub fn allocate(&self, owner: &Owner) -> Result<Allocation, IpamError> {
        let _lock = self.lock()?;
        let records = self.records()?;
        if let Some((ip, _)) = records
            .iter()
            .find(|(ip, o)| o == owner && self.pool.is_assignable(*ip))
        {
            return Ok(Allocation {
                ip: *ip,
                reused: true,
            });
        }
        let mut taken: BTreeSet<Ipv4Addr> = records.into_iter().map(|(ip, _)| ip).collect();
        let mut last = self.last_reserved();
        loop {
            let ip = next_free(self.pool, &taken, last).ok_or(IpamError::Exhausted {
                cidr: self.pool.cidr(),
                assignable: self.pool.size(),
            })?;
            if self.create_record(ip, owner)? {
                self.write_last_reserved(ip)?;
                return Ok(Allocation { ip, reused: false });
            }
            // The name exists although the scan missed it (an unreadable
            // record): treat it as taken and keep looking.
            taken.insert(ip);
            last = Some(ip);
        }
    }

    /// The owner's address, if it has one.
    pub fn lookup(&self, owner: &Owner) -> Result<Option<Ipv4Addr>, IpamError> {
        let _lock = self.lock()?;
        Ok(self
            .records()?
            .into_iter()
            .find(|(_, o)| o == owner)
            .map(|(ip, _)| ip))
    }

    /// Frees every address held by the owner; returns them (empty if none).
    pub fn release(&self, owner: &Owner) -> Result<Vec<Ipv4Addr>, IpamError> {
        let _lock = self.lock()?;
        let mut released = Vec::new();
        for (ip, o) in self.records()? {
            if &o == owner {
                let path = self.dir.join(ip.to_string());
                match fs::remove_file(&path) {
                    Ok(()) => released.push(ip),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(store_err(&path, "remove record")(e)),
                }
            }
        }
        Ok(released)
    }

    /// All readable records. Files whose name is not an address are not
    /// records (lock, last_reserved_ip, temporaries) and are skipped; a
    /// record with unreadable content still blocks its address.
    fn records(&self) -> Result<Vec<(Ipv4Addr, Owner)>, IpamError> {
        Ok(self
            .scan()?
            .into_iter()
            .map(|r| {
                let owner = r.owner.unwrap_or_else(|| Owner {
                    container_id: String::new(),
                    ifname: String::new(),
                });
                (r.ip, owner)
            })
            .collect())
    }

    /// Every record file with its parsed owner (`None`: unparseable, logged)
    /// and modification time. Callers hold the lock.
    pub(crate) fn scan(&self) -> Result<Vec<ScannedRecord>, IpamError> {
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(store_err(&self.dir, "list directory"))? {
            let entry = entry.map_err(store_err(&self.dir, "list directory"))?;
            let Some(ip) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<Ipv4Addr>().ok())
            else {
                continue;
            };
            let path = entry.path();
            let text = match fs::read_to_string(&path) {
                Ok(text) => text,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(store_err(&path, "read record")(e)),
            };
            let modified = match fs::metadata(&path).and_then(|m| m.modified()) {
                Ok(t) => t,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(store_err(&path, "read record time")(e)),
            };
            let owner = Owner::parse(&text);
            if owner.is_none() {
                tracing::warn!(path = %path.display(), "unparseable IPAM record; keeping its address reserved");
            }
            out.push(ScannedRecord {
                ip,
                owner,
                modified,
            });
        }
        Ok(out)
    }

    /// Removes the record of `ip` if it still names `container_id`; whether
    /// it did. Callers hold the lock.
    pub(crate) fn remove_if_owned_by(
        &self,
        ip: Ipv4Addr,
        container_id: &str,
    ) -> Result<bool, IpamError> {
        let path = self.dir.join(ip.to_string());
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(store_err(&path, "read record")(e)),
        };
        if Owner::parse(&text).is_none_or(|o| o.container_id != container_id) {
            return Ok(false);
        }
        match fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(store_err(&path, "remove record")(e)),
        }
    }

    /// Writes the record for `ip` atomically; `Ok(false)` if it exists.
    fn create_record(&self, ip: Ipv4Addr, owner: &Owner) -> Result<bool, IpamError> {
        let final_path = self.dir.join(ip.to_string());
        let tmp_path = self.dir.join(format!(".tmp-{ip}-{}", std::process::id()));
        let write_tmp = || -> io::Result<()> {
            let mut f = fs::File::create(&tmp_path)?;
            f.write_all(owner.render().as_bytes())?;
            f.sync_all()
        };
        write_tmp().map_err(store_err(&tmp_path, "write record"))?;
        let linked = fs::hard_link(&tmp_path, &final_path);
        let _ = fs::remove_file(&tmp_path);
        match linked {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(store_err(&final_path, "create record")(e)),
        }
    }

    fn last_reserved(&self) -> Option<Ipv4Addr> {
        fs::read_to_string(self.dir.join(LAST_RESERVED_FILE))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    fn write_last_reserved(&self, ip: Ipv4Addr) -> Result<(), IpamError> {
        let path = self.dir.join(LAST_RESERVED_FILE);
        fs::write(&path, format!("{ip}\n")).map_err(store_err(&path, "write"))
    }

    pub(crate) fn lock(&self) -> Result<sys::FileLock, IpamError> {
        let path = self.dir.join(LOCK_FILE);
        match sys::lock_exclusive(&path, self.lock_timeout) {
            Ok(Some(lock)) => Ok(lock),
            Ok(None) => Err(IpamError::LockTimeout {
                dir: self.dir.clone(),
                timeout: self.lock_timeout,
            }),
            Err(e) => Err(store_err(&path, "lock")(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(cidr: &str) -> Pool {
        Pool::new(cidr.parse().expect("cidr"))
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().expect("ip")
    }

    fn set(ips: &[&str]) -> BTreeSet<Ipv4Addr> {
        ips.iter().map(|s| ip(s)).collect()
    }

    #[test]
    fn pool_excludes_network_gateway_broadcast() {
        let p = pool("10.244.1.0/24");
        assert_eq!(p.gateway(), ip("10.244.1.1"));
        assert_eq!(p.size(), 253);
        for (addr, ok) in [
            ("10.244.1.0", false),
            ("10.244.1.1", false),
            ("10.244.1.2", true),
            ("10.244.1.254", true),
            ("10.244.1.255", false),
            ("10.244.2.2", false),
        ] {
            assert_eq!(p.is_assignable(ip(addr)), ok, "{addr}");
        }
        assert_eq!(pool("10.0.0.0/30").size(), 1);
    }

    /// (pool, allocated, last reserved, expected pick)
    type NextFreeCase = (
        &'static str,
        &'static [&'static str],
        Option<&'static str>,
        Option<&'static str>,
    );

    #[test]
    fn next_free_table() {
        let cases: [NextFreeCase; 8] = [
            ("10.244.1.0/24", &[], None, Some("10.244.1.2")),
            ("10.244.1.0/24", &["10.244.1.2"], None, Some("10.244.1.3")),
            (
                "10.244.1.0/24",
                &[],
                Some("10.244.1.9"),
                Some("10.244.1.10"),
            ),
            // Round-robin: a released low address is not reused before wrapping.
            (
                "10.244.1.0/24",
                &["10.244.1.3"],
                Some("10.244.1.3"),
                Some("10.244.1.4"),
            ),
            // Wraps after the last assignable address (never .255).
            (
                "10.244.1.0/24",
                &["10.244.1.2"],
                Some("10.244.1.254"),
                Some("10.244.1.3"),
            ),
            // A stale last-reserved outside the pool restarts at the beginning.
            ("10.244.1.0/24", &[], Some("10.9.9.9"), Some("10.244.1.2")),
            ("10.0.0.0/30", &[], None, Some("10.0.0.2")),
            ("10.0.0.0/30", &["10.0.0.2"], Some("10.0.0.2"), None),
        ];
        for (cidr, allocated, last, want) in cases {
            let got = next_free(pool(cidr), &set(allocated), last.map(ip));
            assert_eq!(got, want.map(ip), "{cidr} {allocated:?} {last:?}");
        }
    }

    #[test]
    fn next_free_full_pool_is_none() {
        let p = pool("10.0.0.0/29"); // .2 ..= .6
        let all = set(&["10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6"]);
        assert_eq!(next_free(p, &all, None), None);
        assert_eq!(next_free(p, &all, Some(ip("10.0.0.4"))), None);
    }

    #[test]
    fn owner_roundtrip_and_garbage() {
        let o = Owner {
            container_id: "abc".into(),
            ifname: "eth0".into(),
        };
        assert_eq!(Owner::parse(&o.render()), Some(o));
        assert_eq!(Owner::parse(""), None);
        assert_eq!(Owner::parse("abc\n"), None);
    }

    fn owner(id: &str) -> Owner {
        Owner {
            container_id: id.into(),
            ifname: "eth0".into(),
        }
    }

    #[test]
    fn store_allocates_reuses_and_releases() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store =
            IpamStore::open(dir.path(), "10.244.1.0/24".parse().expect("cidr")).expect("open");

        let a = store.allocate(&owner("a")).expect("a");
        assert_eq!(
            a,
            Allocation {
                ip: ip("10.244.1.2"),
                reused: false
            }
        );
        let b = store.allocate(&owner("b")).expect("b");
        assert_eq!(b.ip, ip("10.244.1.3"));
        // Idempotent: same owner, same address.
        assert_eq!(
            store.allocate(&owner("a")).expect("a again"),
            Allocation {
                ip: a.ip,
                reused: true
            }
        );
        // Same container, other interface: a second address.
        let a1 = store
            .allocate(&Owner {
                container_id: "a".into(),
                ifname: "net1".into(),
            })
            .expect("a/net1");
        assert_eq!(a1.ip, ip("10.244.1.4"));

        let record = fs::read_to_string(dir.path().join("10.244.1.2")).expect("record");
        assert_eq!(record, "a\neth0\n");
        assert_eq!(store.lookup(&owner("b")).expect("lookup"), Some(b.ip));

        assert_eq!(store.release(&owner("a")).expect("release"), vec![a.ip]);
        assert!(!dir.path().join("10.244.1.2").exists());
        assert_eq!(
            store.release(&owner("a")).expect("release twice"),
            Vec::<Ipv4Addr>::new()
        );
        assert_eq!(store.lookup(&owner("a")).expect("lookup"), None);

        // Round robin: the next allocation does not take the freed .2.
        assert_eq!(store.allocate(&owner("c")).expect("c").ip, ip("10.244.1.5"));
    }

    #[test]
    fn store_exhaustion_and_unreadable_records() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store =
            IpamStore::open(dir.path(), "10.0.0.0/29".parse().expect("cidr")).expect("open");
        // A garbage record still blocks its address.
        fs::write(dir.path().join("10.0.0.2"), "").expect("garbage");
        for id in ["a", "b", "c", "d"] {
            store.allocate(&owner(id)).expect(id);
        }
        let err = store.allocate(&owner("e")).expect_err("full");
        assert!(
            matches!(err, IpamError::Exhausted { assignable: 5, .. }),
            "{err}"
        );
        assert_eq!(
            store.lookup(&owner("a")).expect("lookup"),
            Some(ip("10.0.0.3"))
        );
    }

    #[test]
    fn concurrent_allocations_never_collide() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().to_path_buf();
        let handles: Vec<_> = (0..8)
            .map(|i| {
                let path = path.clone();
                std::thread::spawn(move || {
                    // Each thread opens its own store (its own lock fd), like
                    // separate plugin processes would.
                    let store = IpamStore::open(&path, "10.244.1.0/24".parse().expect("cidr"))
                        .expect("open");
                    (0..5)
                        .map(|j| {
                            store
                                .allocate(&owner(&format!("c{i}-{j}")))
                                .expect("allocate")
                                .ip
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut all = Vec::new();
        for h in handles {
            all.extend(h.join().expect("thread"));
        }
        let unique: BTreeSet<_> = all.iter().copied().collect();
        assert_eq!(unique.len(), all.len(), "duplicate addresses: {all:?}");
        assert_eq!(all.len(), 40);
    }

    #[test]
    fn lock_timeout_is_reported() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = IpamStore::open(dir.path(), "10.244.1.0/24".parse().expect("cidr"))
            .expect("open")
            .with_lock_timeout(Duration::from_millis(50));
        let _held = sys::lock_exclusive(&dir.path().join(LOCK_FILE), Duration::ZERO)
            .expect("lock")
            .expect("free");
        let err = store.allocate(&owner("a")).expect_err("locked");
        assert!(matches!(err, IpamError::LockTimeout { .. }), "{err}");
    }
}
