//! The XDP fast path's user-space side: the Maglev tables map and the XDP
//! attachment on the node interface.
//!
//! Tables: before a plan is applied, every backend set a frontend will use
//! and that wants a table gets one (written whole, under the set's fresh
//! slot, before the frontend is pointed at it); after the plan, tables of
//! sets no frontend uses are deleted. Which ones is decided by the pure
//! `plan::maglev::{tables_to_put, tables_to_delete}`.
//!
//! Attachment: the XDP program is attached to the node interface as a
//! bpf_link pinned at `<bpffs>/node-links/<ifname>@<ifindex>-xdp`; the next
//! agent adopts the pinned link and swaps its program in with one
//! `BPF_LINK_UPDATE`, as for the TCX links (see `attach.rs`), so a restart
//! never leaves the interface without the program.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use aya::Ebpf;
use aya::maps::{HashMap, MapData, MapError, PerCpuArray};
use aya::programs::links::{FdLink, PinnedLink};
use aya::programs::xdp::XdpLink;
use aya::programs::{Xdp, XdpMode};
use weir_ebpf_common::maglev::{MAGLEV_MAP, MaglevTable};
use weir_ebpf_common::program_names;
use weir_ebpf_common::xdp::{XDP_STATS_MAP, verdict};

use super::DatapathError;
use super::attach::{self, Link};
use super::plan::{MapOp, MapState, maglev};

/// The Maglev tables map and the backend sets it holds a table for.
pub struct MaglevTables {
    map: HashMap<MapData, u32, MaglevTable>,
    slots: BTreeSet<u32>,
    /// Set by [`Self::delete_stale`], i.e. after a plan was applied
    /// completely: then the next plan needs to look at its own ops only.
    /// Unset at load and while a plan is being applied, so a plan that
    /// fails halfway is followed by a full pass.
    reconciled: bool,
    /// The tables the plan being applied releases ([`maglev::tables_released`]);
    /// `None` when the next delete must be a full pass.
    released: Option<Vec<u32>>,
}

impl MaglevTables {
    /// Takes the map out of a loaded object and reads which tables exist
    /// (pinned maps keep them across agent restarts).
    pub fn take(ebpf: &mut Ebpf) -> Result<Self, DatapathError> {
        let map = ebpf.take_map(MAGLEV_MAP).ok_or(DatapathError::Missing {
            what: "map",
            name: MAGLEV_MAP,
        })?;
        let map: HashMap<MapData, u32, MaglevTable> = HashMap::try_from(map).map_err(map_error)?;
        let slots = map
            .keys()
            .collect::<Result<BTreeSet<u32>, MapError>>()
            .map_err(map_error)?;
        Ok(Self {
            map,
            slots,
            reconciled: false,
            released: None,
        })
    }

    /// Writes the tables `ops` will need (call before applying them).
    ///
    /// Best effort: a table that cannot be written (the kernel refused the
    /// 32 KiB element, e.g. out of memory) is reported with the map's name
    /// and retried with the next plan, but does not hold the plan up: the
    /// datapath then chooses that set's backends by `hash % count`, on the
    /// tc path and in XDP alike, so the node still serves the frontend.
    pub fn put_missing(&mut self, ops: &[MapOp], state: &MapState) {
        let scope = if self.reconciled {
            maglev::Scope::Ops
        } else {
            maglev::Scope::Everything
        };
        self.released =
            (scope == maglev::Scope::Ops).then(|| maglev::tables_released(ops, state, &self.slots));
        self.reconciled = false;
        for (slot, backends) in maglev::tables_to_put(ops, state, &self.slots, scope) {
            let entries = match maglev::datapath_table(&backends) {
                Ok(entries) => entries,
                Err(error) => {
                    // Excluded by wants_table.
                    tracing::warn!(slot, %error, "no Maglev table for a backend set");
                    continue;
                }
            };
            let mut table = MaglevTable::default();
            table.entries.copy_from_slice(&entries);
            match self.map.insert(slot, table, 0) {
                Ok(()) => {
                    self.slots.insert(slot);
                }
                Err(error) => tracing::warn!(
                    map = MAGLEV_MAP,
                    slot,
                    %error,
                    "cannot write a Maglev table; the backend set is balanced by hash % count"
                ),
            }
        }
    }

    /// Deletes the tables no frontend of `state` uses (call after a plan).
    /// Best effort like [`Self::put_missing`]: a table that cannot be
    /// deleted is reported and retried after the next plan.
    pub fn delete_stale(&mut self, state: &MapState) {
        let stale = match self.released.take() {
            Some(released) => released,
            None => maglev::tables_to_delete(state, &self.slots),
        };
        let mut all_deleted = true;
        for slot in stale {
            match self.map.remove(&slot) {
                Ok(()) | Err(MapError::KeyNotFound | MapError::ElementNotFound) => {}
                Err(MapError::SyscallError(e))
                    if e.io_error.kind() == std::io::ErrorKind::NotFound => {}
                Err(error) => {
                    tracing::warn!(map = MAGLEV_MAP, slot, %error, "cannot delete a Maglev table");
                    all_deleted = false;
                    continue;
                }
            }
            self.slots.remove(&slot);
        }
        // A table left behind is found by the next full pass.
        self.reconciled = all_deleted;
    }

    /// The backend sets that have a table.
    #[cfg(test)]
    pub fn slots(&self) -> &BTreeSet<u32> {
        &self.slots
    }

    /// The table of `slot`, if any.
    #[cfg(test)]
    pub fn get(&self, slot: u32) -> Option<MaglevTable> {
        self.map.get(&slot, 0).ok()
    }
}

/// The XDP program's verdict counters (`WEIR_XDP_STATS`).
pub struct XdpStats(PerCpuArray<MapData, u64>);

impl XdpStats {
    /// Takes the map out of a loaded object.
    pub fn take(ebpf: &mut Ebpf) -> Result<Self, DatapathError> {
        let name = XDP_STATS_MAP;
        let map = ebpf
            .take_map(name)
            .ok_or(DatapathError::Missing { what: "map", name })?;
        PerCpuArray::try_from(map)
            .map(Self)
            .map_err(|source| DatapathError::Map { name, source })
    }

    /// The counters summed over CPUs, by name (`tx`, `pass`, `drop`).
    pub fn counters(&self) -> Result<Vec<(&'static str, u64)>, DatapathError> {
        (0..verdict::COUNT)
            .zip(verdict::NAMES)
            .map(|(index, name)| {
                let per_cpu = self.0.get(&index, 0).map_err(|source| DatapathError::Map {
                    name: XDP_STATS_MAP,
                    source,
                })?;
                Ok((name, per_cpu.iter().sum()))
            })
            .collect()
    }
}

fn map_error(source: MapError) -> DatapathError {
    DatapathError::Map {
        name: MAGLEV_MAP,
        source,
    }
}

/// The XDP program's attachment to the node interface.
#[derive(Debug)]
pub struct XdpAttachment {
    /// Our handle on the pinned link (closing it does not detach: the pin
    /// holds the link).
    _fd: FdLink,
    _path: PathBuf,
}

/// Loads the XDP program (once, at datapath load).
pub fn load(ebpf: &mut Ebpf) -> Result<(), DatapathError> {
    let name = program_names::NODE_XDP;
    super::program_mut::<Xdp>(ebpf, name)?
        .load()
        .map_err(|source| DatapathError::Program { name, source })
}

/// How the XDP fast path is attached (the agent's `--xdp-mode`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum XdpAttachMode {
    /// Generic on veth, the kernel's choice elsewhere (see [`mode_for`]).
    #[default]
    Auto,
    /// Native (driver) mode whatever the interface. On a veth, frames the
    /// program sends back out (`XDP_TX`) are dropped unless the peer runs
    /// NAPI (an XDP program, or GRO on): for setups that arrange that, such
    /// as the NodePort benchmark.
    Native,
    /// Generic (skb) mode whatever the interface.
    Generic,
}

impl std::str::FromStr for XdpAttachMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(Self::Auto),
            "native" => Ok(Self::Native),
            "generic" => Ok(Self::Generic),
            other => Err(format!(
                "unknown XDP mode {other:?}: expected auto, native or generic"
            )),
        }
    }
}

/// The attach mode for an interface. Native (driver) mode is the fast one,
/// but on a veth an `XDP_TX` frame is dropped unless the *peer* runs NAPI
/// (has an XDP program or GRO enabled), which the agent cannot arrange for
/// a peer in another namespace; generic mode transmits through the stack's
/// queue and works whatever the peer. So `Auto`: generic on veth, the
/// kernel's choice (native when the driver supports it) elsewhere; an
/// explicit setting wins.
pub fn mode_for(setting: XdpAttachMode, driver_kind: Option<&str>) -> XdpMode {
    match (setting, driver_kind) {
        (XdpAttachMode::Native, _) => XdpMode::Driver,
        (XdpAttachMode::Generic, _) => XdpMode::Skb,
        (XdpAttachMode::Auto, Some("veth")) => XdpMode::Skb,
        (XdpAttachMode::Auto, _) => XdpMode::Default,
    }
}

/// The kind of interface `name` in the current network namespace as
/// netlink reports it (`veth`, `bridge`, ...); `None` for devices without
/// one (physical NICs) or when netlink cannot tell. Asks from a throwaway
/// thread with its own small runtime (the caller may be inside the agent's
/// runtime); the thread inherits the caller's network namespace.
pub fn link_kind(name: &str) -> Option<String> {
    use futures::TryStreamExt;
    use netlink_packet_route::link::{LinkAttribute, LinkInfo};
    let name = name.to_owned();
    let ask = move || -> Option<String> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .ok()?;
        runtime.block_on(async move {
            let (connection, handle, _) = rtnetlink::new_connection().ok()?;
            let task = tokio::spawn(connection);
            let mut links = handle.link().get().match_name(name).execute();
            let message = links.try_next().await.ok().flatten();
            task.abort();
            message?.attributes.into_iter().find_map(|a| match a {
                LinkAttribute::LinkInfo(infos) => infos.into_iter().find_map(|i| match i {
                    LinkInfo::Kind(kind) => Some(kind.to_string()),
                    _ => None,
                }),
                _ => None,
            })
        })
    };
    std::thread::spawn(ask).join().ok().flatten()
}

/// Attaches the XDP program to `link` (the node interface), adopting the
/// link a previous agent pinned under `links_dir` if there is one.
pub fn attach(
    ebpf: &mut Ebpf,
    link: &Link,
    mode: XdpMode,
    links_dir: &Path,
) -> Result<XdpAttachment, DatapathError> {
    let name = program_names::NODE_XDP;
    let program = super::program_mut::<Xdp>(ebpf, name)?;
    let pin_name = format!("{}@{}-xdp", link.name, link.index);
    let path = links_dir.join(&pin_name);
    let attach_err = |source| DatapathError::Attach {
        program: name,
        interface: link.name.clone(),
        source,
    };
    let link_err = |source| DatapathError::Link {
        interface: link.name.clone(),
        path: path.clone(),
        source,
    };
    if path.exists() {
        let adopted = PinnedLink::from_pin(&path)
            .map_err(link_err)
            .and_then(|pinned| XdpLink::try_from(FdLink::from(pinned)).map_err(link_err))
            .and_then(|xdp_link| program.attach_to_link(xdp_link).map_err(attach_err))
            .and_then(|id| program.take_link(id).map_err(attach_err))
            .and_then(|owned| FdLink::try_from(owned).map_err(link_err));
        match adopted {
            Ok(fd) => {
                tracing::info!(interface = %link.name, "adopted the pinned XDP link");
                return Ok(XdpAttachment {
                    _fd: fd,
                    _path: path,
                });
            }
            Err(error) => {
                tracing::warn!(interface = %link.name, %error, "cannot adopt the pinned XDP link; re-attaching");
                attach::remove_pin(links_dir, &pin_name);
            }
        }
    }
    let id = program
        .attach_to_if_index(link.index, mode)
        .map_err(attach_err)?;
    let owned = program.take_link(id).map_err(attach_err)?;
    // Netlink XDP (kernels without XDP bpf_links, < 5.9) cannot be pinned.
    let fd = FdLink::try_from(owned).map_err(link_err)?;
    let pinned = fd.pin(&path).map_err(|source| DatapathError::PinLink {
        interface: link.name.clone(),
        path: path.clone(),
        source,
    })?;
    tracing::info!(interface = %link.name, ?mode, "XDP fast path attached");
    Ok(XdpAttachment {
        _fd: FdLink::from(pinned),
        _path: path,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mode_table() {
        use XdpAttachMode::{Auto, Generic, Native};
        let cases = [
            (Auto, Some("veth"), XdpMode::Skb),
            (Auto, Some("mlx5_core"), XdpMode::Default),
            (Auto, None, XdpMode::Default),
            (Native, Some("veth"), XdpMode::Driver),
            (Native, None, XdpMode::Driver),
            (Generic, Some("veth"), XdpMode::Skb),
            (Generic, Some("mlx5_core"), XdpMode::Skb),
        ];
        for (setting, kind, want) in cases {
            assert_eq!(mode_for(setting, kind), want, "{setting:?} {kind:?}");
        }
    }

    #[test]
    fn mode_parses_from_the_flag() {
        let cases = [
            ("auto", Ok(XdpAttachMode::Auto)),
            ("native", Ok(XdpAttachMode::Native)),
            ("generic", Ok(XdpAttachMode::Generic)),
        ];
        for (flag, want) in cases {
            assert_eq!(flag.parse::<XdpAttachMode>(), want, "{flag}");
        }
        let error = "drv".parse::<XdpAttachMode>().unwrap_err();
        assert!(
            error.contains("\"drv\"") && error.contains("native"),
            "{error}"
        );
    }
}
