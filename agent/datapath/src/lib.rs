//! weir-datapath, the datapath manager: loads weir's eBPF programs (built
//! from `ebpf/programs` by this crate's `build.rs` and embedded in the
//! library), pins their maps under the node's bpffs directory, attaches the pod programs to host-side pod veths
//! (from-pod at TCX ingress, to-pod at TCX egress; the links are pinned too),
//! attaches the socket-level load balancer to the node's cgroup v2 subtree
//! and the NodePort program to the node interface, and keeps the service maps
//! in sync with the API server.
//!
//! Everything the agent leaves in the kernel lives under `bpffs_dir`: maps
//! (`WEIR_*`), pod veth links (`links/`), the node interface link
//! (`node-links/`) and cgroup links (`cgroup-links/`). An agent restart
//! reuses them all, so established service connections survive it; removing the directory
//! (cluster teardown) frees them.
//!
//! This is the only part of weir that loads BPF; it is a library so the
//! agent and the benchmark (`bench/`) share one loader and planner. Layout:
//! - `plan` (public, so the benchmark can drive the maps the same way): pure
//!   map planner (Services + EndpointSlices -> map ops), table-tested;
//! - `attach`: which interfaces to attach to / forget (pure) and the attach calls;
//! - `sock`: the cgroup socket hooks (socket-level load balancing);
//! - `inspect`: read-only snapshot of a node's pinned maps, and its rendering;
//! - `flows`: the flow-event ring reader (decode, wall-clock time, names)
//!   and the drop / lost-event counters;
//! - `maps`: typed access to the pinned maps;
//! - `sync`: the watch -> store -> plan -> apply loop;
//! - `xdp`: the XDP fast path's Maglev tables and its node interface attachment.
#![forbid(unsafe_code)]

#[cfg(test)]
mod affinity_tests;
mod attach;
mod dsr;
#[cfg(test)]
mod dsr_tests;
pub mod flows;
pub mod inspect;
mod maps;
pub mod masq;
#[cfg(test)]
mod masq_tests;
#[cfg(test)]
mod nodeport_tests;
mod pins;
pub mod plan;
pub mod policy;
#[cfg(test)]
mod policy_dp_tests;
#[cfg(test)]
mod policy_sweep_tests;
mod redirect;
#[cfg(test)]
mod redirect_tests;
mod reflect;
mod sock;
#[cfg(test)]
mod sock_tests;
mod sync;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod traffic_tests;
mod xdp;
#[cfg(test)]
mod xdp_tests;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use aya::programs::SchedClassifier;
use aya::{Ebpf, EbpfLoader};

pub use plan::{DesiredServices, Frontend, MapState, NodeContext};
pub use sync::run_service_sync;
pub use xdp::XdpAttachMode;

/// Subdirectory of the bpffs directory holding the pinned TCX links of pod veths.
const LINKS_DIR: &str = "links";
/// Subdirectory of the bpffs directory holding the pinned TCX link of the
/// node interface (apart from `links/`, whose planner removes every pin that
/// is not a live pod veth's).
const NODE_LINKS_DIR: &str = "node-links";

/// The compiled eBPF object (see this crate's `build.rs`).
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/weir-ebpf.o"));

/// The compiled eBPF object, for tools that load programs of it other than
/// the datapath's (weir-bench's traffic generator, `weir_ebpf_common::txgen`).
pub fn ebpf_object() -> &'static [u8] {
    EBPF_OBJECT
}

/// Where the datapath keeps its kernel state.
#[derive(Clone, Debug)]
pub struct DatapathConfig {
    /// Per-node bpffs directory the maps are pinned in (e.g.
    /// `/sys/fs/bpf/weir/weir/node1`). Created if missing. Pinned maps outlive
    /// the agent, so a restart keeps services and established connections.
    pub bpffs_dir: PathBuf,
    /// The node's cgroup v2 subtree (e.g. `/sys/fs/cgroup/unified/weir-weir-node1`
    /// on a hybrid host: the cgroup2 root joined with the agent's
    /// `--cgroup-parent`). Every socket created by a process in it (pods, and
    /// the node's own processes placed there) gets socket-level load
    /// balancing. `None` leaves service translation to the per-packet tc
    /// hooks alone. Must exist.
    pub cgroup_dir: Option<PathBuf>,
    /// The node, for NodePort: its name and address, and the interface
    /// (`eth0` of the node netns) the NodePort program is attached to at
    /// TCX ingress. `None`: no NodePort frontends, nothing on the interface.
    pub node: Option<NodeConfig>,
}

/// The node's identity as NodePort needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeConfig {
    /// The Node object's name (EndpointSlice `nodeName`), for
    /// externalTrafficPolicy Local.
    pub name: String,
    /// The node address NodePorts listen on (the agent's `--node-ip`).
    pub ip: std::net::Ipv4Addr,
    /// The interface carrying that address (e.g. `eth0`).
    pub interface: String,
    /// How the XDP fast path is attached to that interface.
    pub xdp_mode: xdp::XdpAttachMode,
}

/// Errors of the datapath manager.
#[derive(Debug, thiserror::Error)]
pub enum DatapathError {
    #[error("cannot create or read the bpffs pin directory {path}: {source}")]
    PinDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot load the eBPF object (maps pinned under {pin_dir}): {source}")]
    Load {
        pin_dir: PathBuf,
        // Boxed: EbpfError is large and would bloat every Result.
        #[source]
        source: Box<aya::EbpfError>,
    },
    #[error("the eBPF object has no {what} named {name}")]
    Missing {
        what: &'static str,
        name: &'static str,
    },
    #[error("eBPF program {name}: {source}")]
    Program {
        name: &'static str,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("map {name}: {source}")]
    Map {
        name: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("cannot list the network interfaces: {source}")]
    ListLinks {
        #[source]
        source: nix::Error,
    },
    #[error("cannot attach {program} to {interface}: {source}")]
    Attach {
        program: &'static str,
        interface: String,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("cannot pin the link of {interface} at {path}: {source}")]
    PinLink {
        interface: String,
        path: PathBuf,
        #[source]
        source: aya::pin::PinError,
    },
    #[error("link of {interface} (pinned at {path}): {source}")]
    Link {
        interface: String,
        path: PathBuf,
        #[source]
        source: aya::programs::links::LinkError,
    },
    #[error("the node interface {interface} does not exist in this network namespace")]
    NoInterface { interface: String },
    #[error("cannot open the cgroup v2 directory {path} (does it exist?): {source}")]
    Cgroup {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot attach {program} to the cgroup {cgroup}: {source}")]
    AttachCgroup {
        program: &'static str,
        cgroup: PathBuf,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("the {kind} watch task stopped")]
    WatchStopped { kind: &'static str },
}

/// The loaded datapath: the program, its pinned maps and the interfaces it is
/// attached to.
pub struct Datapath {
    /// Owns the loaded programs (dropping it detaches them).
    ebpf: Ebpf,
    maps: maps::ServiceMaps,
    /// Host-side pod veths the from-pod program is attached to, by name.
    attached: BTreeMap<String, attach::Attached>,
    /// Where the attachments are pinned (`<bpffs_dir>/links`).
    links_dir: PathBuf,
    /// The socket hooks' cgroup links, when a cgroup was configured.
    _cgroup_links: Option<sock::CgroupLinks>,
    /// The node (for the planner) and the NodePort attachment on its interface.
    node: Option<(NodeConfig, attach::Held)>,
    /// The masquerade program on the node interface, once turned on.
    node_egress: Option<attach::Held>,
    /// The Maglev tables of the XDP fast path and tc node-ingress.
    maglev: xdp::MaglevTables,
    /// The XDP fast path on the node interface, when a node is configured.
    xdp: Option<xdp::XdpAttachment>,
    /// What the XDP program did with the packets it saw.
    xdp_stats: xdp::XdpStats,
    /// Whether the pod fast path is on (see `redirect`).
    pod_redirect: bool,
}

impl std::fmt::Debug for Datapath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Datapath")
            .field("attached", &self.attached.keys())
            .finish_non_exhaustive()
    }
}

impl Datapath {
    /// Loads the programs and opens (or creates and pins) the maps under
    /// `cfg.bpffs_dir`. Maps already pinned there by an earlier agent are
    /// reused with their contents. With `cfg.cgroup_dir`, also attaches the
    /// socket hooks there (replacing those of an earlier agent); with
    /// `cfg.node`, records the node address for SNAT and attaches the
    /// NodePort program to `node.interface` (adopting an earlier agent's link).
    pub fn load(cfg: &DatapathConfig) -> Result<Datapath, DatapathError> {
        Self::load_with_policy_limits(cfg, &policy::PolicyLimits::default())
    }

    /// [`Datapath::load`], creating the NetworkPolicy maps with `limits` as
    /// their capacities (maps pinned by an earlier agent keep the capacity
    /// they were created with: [`Datapath::take_policy_maps`] tells which).
    pub fn load_with_policy_limits(
        cfg: &DatapathConfig,
        limits: &policy::PolicyLimits,
    ) -> Result<Datapath, DatapathError> {
        let mut dp = Self::load_from(
            EBPF_OBJECT,
            &cfg.bpffs_dir,
            cfg.cgroup_dir.as_deref(),
            limits,
        )?;
        let mac = match &cfg.node {
            Some(node) => attach::interface_mac(&node.interface)?,
            None => None,
        };
        dp.maps.set_node(cfg.node.as_ref().map(|n| n.ip), mac)?;
        // Off until the caller turns it on: drop an earlier agent's registrations.
        dp.sync_pod_ifaces()?;
        if let Some(node) = &cfg.node {
            let held = dp.attach_node_interface(node, &cfg.bpffs_dir.join(NODE_LINKS_DIR))?;
            dp.node = Some((node.clone(), held));
            // An accelerator: without it tc node-ingress serves the same traffic.
            dp.xdp = match dp.attach_node_xdp(node, &cfg.bpffs_dir.join(NODE_LINKS_DIR)) {
                Ok(attached) => Some(attached),
                Err(error) => {
                    tracing::warn!(%error, "XDP fast path not attached; NodePort traffic takes the tc path");
                    None
                }
            };
        }
        Ok(dp)
    }

    /// Attaches the NodePort program at TCX ingress of the node interface
    /// (adopting the link a previous agent pinned).
    fn attach_node_interface(
        &mut self,
        node: &NodeConfig,
        links_dir: &Path,
    ) -> Result<attach::Held, DatapathError> {
        let link = attach::list_links()?
            .into_iter()
            .find(|l| l.name == node.interface)
            .ok_or_else(|| DatapathError::NoInterface {
                interface: node.interface.clone(),
            })?;
        std::fs::create_dir_all(links_dir).map_err(|source| DatapathError::PinDir {
            path: links_dir.to_owned(),
            source,
        })?;
        let hook = attach::Hook::NodeIngress;
        let program = program_mut::<SchedClassifier>(&mut self.ebpf, hook.program())?;
        let held = attach::attach(program, hook, &link, links_dir)?;
        tracing::info!(interface = %link.name, node_ip = %node.ip, "NodePort program attached");
        Ok(held)
    }

    /// Attaches the XDP fast path to the node interface (adopting the link a
    /// previous agent pinned), after the tc program it falls back to.
    fn attach_node_xdp(
        &mut self,
        node: &NodeConfig,
        links_dir: &Path,
    ) -> Result<xdp::XdpAttachment, DatapathError> {
        let link = attach::list_links()?
            .into_iter()
            .find(|l| l.name == node.interface)
            .ok_or_else(|| DatapathError::NoInterface {
                interface: node.interface.clone(),
            })?;
        let mode = xdp::mode_for(node.xdp_mode, xdp::link_kind(&link.name).as_deref());
        xdp::attach(&mut self.ebpf, &link, mode, links_dir)
    }

    /// The node context for the planner (`None` without a node config).
    pub fn node_context(&self) -> Option<plan::NodeContext> {
        self.node.as_ref().map(|(node, _)| plan::NodeContext {
            name: node.name.clone(),
            ip: node.ip,
            forwarding: plan::Forwarding::default(),
        })
    }

    fn load_from(
        object: &[u8],
        pin_dir: &Path,
        cgroup_dir: Option<&Path>,
        limits: &policy::PolicyLimits,
    ) -> Result<Datapath, DatapathError> {
        std::fs::create_dir_all(pin_dir).map_err(|source| DatapathError::PinDir {
            path: pin_dir.to_owned(),
            source,
        })?;
        use weir_ebpf_common::policy::map_names as policy_maps;
        pins::remove_incompatible(object, pin_dir, &pins::SIZED_BY_FLAG)?;
        let mut ebpf = EbpfLoader::new()
            .default_map_pin_directory(pin_dir)
            .map_max_entries(policy_maps::IPCACHE, limits.ipcache_max_entries)
            .map_max_entries(policy_maps::POLICY_ENDPOINTS, limits.endpoints_max_entries)
            .map_max_entries(policy_maps::POLICY, limits.policy_max_entries)
            .load(object)
            .map_err(|source| DatapathError::Load {
                pin_dir: pin_dir.to_owned(),
                source: Box::new(source),
            })?;
        for hook in [
            attach::Hook::FromPod,
            attach::Hook::ToPod,
            attach::Hook::NodeIngress,
            attach::Hook::NodeEgress,
        ] {
            let name = hook.program();
            program_mut::<SchedClassifier>(&mut ebpf, name)?
                .load()
                .map_err(|source| DatapathError::Program { name, source })?;
        }
        sock::load(&mut ebpf)?;
        xdp::load(&mut ebpf)?;
        let cgroup_links = cgroup_dir
            .map(|dir| sock::attach(&mut ebpf, dir, pin_dir))
            .transpose()?;
        let maps = maps::ServiceMaps::take(&mut ebpf)?;
        let maglev = xdp::MaglevTables::take(&mut ebpf)?;
        let xdp_stats = xdp::XdpStats::take(&mut ebpf)?;
        tracing::info!(pin_dir = %pin_dir.display(), "eBPF datapath loaded");
        Ok(Datapath {
            ebpf,
            maps,
            attached: BTreeMap::new(),
            links_dir: pin_dir.join(LINKS_DIR),
            _cgroup_links: cgroup_links,
            node: None,
            node_egress: None,
            maglev,
            xdp: None,
            xdp_stats,
            pod_redirect: false,
        })
    }

    /// Attaches the pod programs to every host-side pod veth ("wr*") not
    /// attached yet, adopting links pinned by a previous agent, and forgets
    /// veths that disappeared (their pod is gone; the kernel already detached
    /// the program). Idempotent.
    ///
    /// Tries every interface; returns the first attach error after that.
    pub fn attach_pod_interfaces(&mut self) -> Result<(), DatapathError> {
        let links = attach::list_links()?;
        let pins = attach::list_pins(&self.links_dir)?;
        let plan = attach::plan(&links, &self.attached, &pins);
        for name in plan.forget {
            if let Some(old) = self.attached.remove(&name) {
                attach::forget(&name, old);
            }
        }
        for pin in &plan.remove_pins {
            attach::remove_pin(&self.links_dir, pin);
        }
        // Attach every hook of every new interface; keep an interface only if
        // all its hooks attached, so a partial failure is retried next time.
        let mut first_error = None;
        let mut held: BTreeMap<String, Vec<attach::Held>> = BTreeMap::new();
        let mut failed = std::collections::BTreeSet::new();
        for hook in attach::Hook::ALL {
            let program = program_mut::<SchedClassifier>(&mut self.ebpf, hook.program())?;
            for link in &plan.attach {
                if failed.contains(&link.name) {
                    continue;
                }
                match attach::attach(program, hook, link, &self.links_dir) {
                    Ok(h) => held.entry(link.name.clone()).or_default().push(h),
                    Err(error) => {
                        tracing::warn!(interface = %link.name, %error, "cannot attach a pod program");
                        failed.insert(link.name.clone());
                        first_error.get_or_insert(error);
                    }
                }
            }
        }
        for link in plan.attach {
            let holds = held.remove(&link.name).unwrap_or_default();
            if failed.contains(&link.name) {
                holds.into_iter().for_each(attach::release);
                continue;
            }
            tracing::info!(interface = %link.name, ifindex = link.index, "pod programs attached");
            self.attached
                .insert(link.name, attach::Attached::new(link.index, holds));
        }
        if let Err(error) = self.sync_pod_ifaces() {
            first_error.get_or_insert(error);
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Takes the NetworkPolicy maps out of the loaded object, for the
    /// policy sync to own (the programs keep using them), with the
    /// capacities they really have. `None` when the programs declare none,
    /// or when they were taken already.
    pub fn take_policy_maps(
        &mut self,
    ) -> Result<Option<(policy::PolicyKernelMaps, policy::PolicyLimits)>, DatapathError> {
        policy::PolicyKernelMaps::take(&mut self.ebpf)
    }

    /// How many packets (or socket calls) the datapath dropped since the maps
    /// were created, by reason (`drop_reason::NAMES`): tells an operator
    /// whether a service has no backend, a map is full, or a route is missing.
    pub fn drop_counters(&self) -> Result<Vec<(&'static str, u64)>, DatapathError> {
        self.maps.drops()
    }

    /// How many packets the XDP fast path forwarded itself (`tx`), left to
    /// tc and the stack (`pass`) and dropped (`drop`) since the maps were
    /// created: whether NodePort traffic takes the fast path at all.
    pub fn xdp_counters(&self) -> Result<Vec<(&'static str, u64)>, DatapathError> {
        self.xdp_stats.counters()
    }

    /// Reads the services and backends maps.
    pub fn read_state(&self) -> Result<MapState, DatapathError> {
        self.maps.read_state()
    }

    /// Deletes the UDP conntrack entries whose backend `desired` no longer
    /// has (see [`plan::stale_udp_conntrack`]); returns how many.
    pub fn purge_stale_udp_conntrack(
        &mut self,
        desired: &plan::DesiredServices,
    ) -> Result<usize, DatapathError> {
        let stale = plan::stale_udp_conntrack(self.maps.udp_conntrack()?, desired);
        self.maps.delete_conntrack(&stale)?;
        Ok(stale.len())
    }

    /// Deletes the conntrack entries of connections idle past their timeout
    /// (see [`plan::expired_conntrack`]); returns how many. The clock is the
    /// newest `last_seen_ns` in the table, i.e. the datapath's own clock as
    /// of its latest packet: an idle node removes nothing until traffic
    /// resumes (the LRU map still evicts under pressure).
    pub fn gc_conntrack(&mut self) -> Result<usize, DatapathError> {
        let entries = self.maps.conntrack_entries()?;
        let Some(now) = entries.iter().map(|(_, ct)| ct.last_seen_ns).max() else {
            return Ok(0);
        };
        let expired = plan::expired_conntrack(&entries, now);
        self.maps.delete_conntrack(&expired)?;
        Ok(expired.len())
    }

    /// Applies `ops` in order, mirroring each success into `state`. Stops at
    /// the first failure, leaving `state` equal to what the maps now hold.
    /// The Maglev tables the ops' backend sets need are written first and
    /// those no frontend uses any more deleted last (see `xdp`).
    pub fn apply(
        &mut self,
        ops: &[plan::MapOp],
        state: &mut MapState,
    ) -> Result<(), DatapathError> {
        self.maglev.put_missing(ops, state);
        for op in ops {
            self.maps.apply(op)?;
            state.apply(op);
        }
        self.maglev.delete_stale(state);
        Ok(())
    }
}

/// The program `name` of `ebpf` as its concrete type (tc classifier, cgroup
/// socket program, ...).
fn program_mut<'a, P>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut P, DatapathError>
where
    &'a mut P: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    let program = ebpf.program_mut(name).ok_or(DatapathError::Missing {
        what: "program",
        name,
    })?;
    program
        .try_into()
        .map_err(|source| DatapathError::Program { name, source })
}
