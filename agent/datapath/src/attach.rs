//! Attaching the pod programs to host-side pod veths: from-pod at TCX ingress
//! (packets leaving the pod), to-pod at TCX egress (packets delivered to it).
//!
//! Attachments are TCX links (kernel >= 6.6) pinned at
//! `<bpffs_dir>/links/<ifname>@<ifindex>-<ingress|egress>`, so they outlive the agent: while
//! an agent restarts, the old program keeps translating, and the new agent
//! adopts each pinned link and swaps its own program in with one
//! `BPF_LINK_UPDATE`. Together with the pinned maps this keeps established
//! service connections alive across agent restarts.
//!
//! When a veth is deleted the kernel detaches its link; the agent then only
//! removes the pin (which frees the defunct link) and its bookkeeping.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use aya::programs::links::{FdLink, PinnedLink};
use aya::programs::tc::SchedClassifierLink;
use aya::programs::{SchedClassifier, TcAttachType};
use weir_ebpf_common::program_names;

use super::DatapathError;

/// Prefix of host-side pod veth names (weir-cni: "wr" + 12 hex chars).
pub const POD_VETH_PREFIX: &str = "wr";

/// A tc hook the datapath attaches to every pod veth.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    /// TCX ingress: packets leaving the pod (service DNAT, local reverse NAT).
    FromPod,
    /// TCX egress: packets delivered to the pod (reverse NAT for remote backends).
    ToPod,
    /// TCX ingress of the node interface (NodePort); not a pod hook, so not
    /// in [`Hook::ALL`].
    NodeIngress,
    /// TCX egress of the node interface (masquerade); not a pod hook either.
    NodeEgress,
}

impl Hook {
    /// The hooks of every pod veth.
    pub const ALL: [Hook; 2] = [Hook::FromPod, Hook::ToPod];

    /// The program attached at this hook.
    pub const fn program(self) -> &'static str {
        match self {
            Hook::FromPod => program_names::FROM_POD,
            Hook::ToPod => program_names::TO_POD,
            Hook::NodeIngress => program_names::NODE_INGRESS,
            Hook::NodeEgress => program_names::NODE_EGRESS,
        }
    }

    const fn attach_type(self) -> TcAttachType {
        match self {
            Hook::FromPod | Hook::NodeIngress => TcAttachType::Ingress,
            Hook::ToPod | Hook::NodeEgress => TcAttachType::Egress,
        }
    }

    const fn pin_suffix(self) -> &'static str {
        match self {
            Hook::FromPod | Hook::NodeIngress => "ingress",
            Hook::ToPod | Hook::NodeEgress => "egress",
        }
    }
}

/// A network interface of the current network namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
}

impl Link {
    /// The pin file name of this interface's attachment at `hook`. The index
    /// is part of it because a veth re-created under the same name is a
    /// different device. (No '.': bpffs refuses names with dots, EPERM.)
    fn pin_name(&self, hook: Hook) -> String {
        format!("{}@{}-{}", self.name, self.index, hook.pin_suffix())
    }
}

/// The attachments the agent holds for one interface (one per hook).
#[derive(Debug)]
pub struct Attached {
    /// The ifindex at attach time.
    pub index: u32,
    held: Vec<Held>,
}

impl Attached {
    pub fn new(index: u32, held: Vec<Held>) -> Self {
        Self { index, held }
    }
}

/// One attachment.
#[derive(Debug)]
pub enum Held {
    /// A TCX link pinned at `path`; `fd` is our handle on it.
    Pinned { fd: FdLink, path: PathBuf },
    /// A link that cannot be pinned (netlink tc on kernels before 6.6): it
    /// lives as long as the agent.
    Unpinned(SchedClassifierLink),
}

/// What [`plan`] decided.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct AttachPlan {
    /// Interfaces to attach to (or whose pinned link to adopt).
    pub attach: Vec<Link>,
    /// Names whose attachment is stale (interface gone or re-created).
    pub forget: Vec<String>,
    /// Pin files of interfaces that no longer exist (left by a previous agent).
    pub remove_pins: Vec<String>,
}

/// Decides which pod veths need an attachment, which attachments are stale,
/// and which pins belong to no current pod veth.
pub fn plan(links: &[Link], attached: &BTreeMap<String, Attached>, pins: &[String]) -> AttachPlan {
    let by_index = attached.iter().map(|(n, a)| (n.clone(), a.index)).collect();
    plan_by_index(links, &by_index, pins)
}

fn plan_by_index(links: &[Link], attached: &BTreeMap<String, u32>, pins: &[String]) -> AttachPlan {
    let pods: Vec<&Link> = links
        .iter()
        .filter(|l| l.name.starts_with(POD_VETH_PREFIX))
        .collect();
    let current: BTreeMap<&str, u32> = pods.iter().map(|l| (l.name.as_str(), l.index)).collect();
    let forget = attached
        .iter()
        .filter(|(name, index)| current.get(name.as_str()) != Some(index))
        .map(|(name, _)| name.clone())
        .collect();
    let attach = pods
        .iter()
        .filter(|l| attached.get(&l.name) != Some(&l.index))
        .map(|l| (*l).clone())
        .collect();
    let live_pins: BTreeSet<String> = pods
        .iter()
        .flat_map(|l| Hook::ALL.map(|hook| l.pin_name(hook)))
        .collect();
    let remove_pins = pins
        .iter()
        .filter(|p| !live_pins.contains(*p))
        .cloned()
        .collect();
    AttachPlan {
        attach,
        forget,
        remove_pins,
    }
}

/// Lists the interfaces of the current network namespace. Uses netlink
/// (through `if_nameindex`), not /sys/class/net: sysfs shows the namespace it
/// was mounted in, which is not ours after setns(2).
pub fn list_links() -> Result<Vec<Link>, DatapathError> {
    let interfaces =
        nix::net::if_::if_nameindex().map_err(|source| DatapathError::ListLinks { source })?;
    Ok(interfaces
        .iter()
        .map(|i| Link {
            index: i.index(),
            name: i.name().to_string_lossy().into_owned(),
        })
        .collect())
}

/// The MAC address of interface `name` in the current network namespace,
/// `None` if it has none (or does not exist). Netlink-backed, like
/// [`list_links`].
pub fn interface_mac(name: &str) -> Result<Option<[u8; 6]>, DatapathError> {
    let addrs = nix::ifaddrs::getifaddrs().map_err(|source| DatapathError::ListLinks { source })?;
    Ok(addrs
        .filter(|a| a.interface_name == name)
        .filter_map(|a| a.address?.as_link_addr()?.addr())
        .find(|mac| *mac != [0; 6]))
}

/// The file names in the link pin directory (created if missing).
pub fn list_pins(links_dir: &Path) -> Result<Vec<String>, DatapathError> {
    let io_err = |source| DatapathError::PinDir {
        path: links_dir.to_owned(),
        source,
    };
    std::fs::create_dir_all(links_dir).map_err(io_err)?;
    let mut names = Vec::new();
    for entry in std::fs::read_dir(links_dir).map_err(io_err)? {
        names.push(
            entry
                .map_err(io_err)?
                .file_name()
                .to_string_lossy()
                .into_owned(),
        );
    }
    Ok(names)
}

/// Removes a pin file; the kernel frees the (defunct) link with it.
pub fn remove_pin(links_dir: &Path, name: &str) {
    let path = links_dir.join(name);
    match std::fs::remove_file(&path) {
        Ok(()) => {
            tracing::info!(pin = %path.display(), "removed the link pin of a vanished interface")
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => {
            tracing::warn!(pin = %path.display(), %error, "cannot remove a stale link pin")
        }
    }
}

/// Attaches `program` at `hook` of `link`, adopting the link a previous
/// agent pinned there if there is one.
pub fn attach(
    program: &mut SchedClassifier,
    hook: Hook,
    link: &Link,
    links_dir: &Path,
) -> Result<Held, DatapathError> {
    let pin_name = link.pin_name(hook);
    let path = links_dir.join(&pin_name);
    if path.exists() {
        match adopt(program, hook, link, &path) {
            Ok(held) => return Ok(held),
            Err(error) => {
                // Fall back to a fresh attachment; the old pin is useless.
                tracing::warn!(interface = %link.name, %error, "cannot adopt the pinned link; re-attaching");
                remove_pin(links_dir, &pin_name);
            }
        }
    }
    let attach_err = |source| attach_error(hook, link, source);
    let id = program
        .attach(&link.name, hook.attach_type())
        .map_err(attach_err)?;
    let owned = program.take_link(id).map_err(attach_err)?;
    if <&FdLink>::try_from(&owned).is_err() {
        // Netlink tc (kernel < 6.6): no link fd to pin.
        return Ok(Held::Unpinned(owned));
    }
    let fd = FdLink::try_from(owned).map_err(|source| link_error(link, &path, source))?;
    let pinned = fd.pin(&path).map_err(|source| DatapathError::PinLink {
        interface: link.name.clone(),
        path: path.clone(),
        source,
    })?;
    Ok(Held::Pinned {
        fd: FdLink::from(pinned),
        path,
    })
}

/// Takes over a link pinned by a previous agent and points it at our program.
fn adopt(
    program: &mut SchedClassifier,
    hook: Hook,
    link: &Link,
    path: &Path,
) -> Result<Held, DatapathError> {
    let pinned = PinnedLink::from_pin(path).map_err(|source| link_error(link, path, source))?;
    let tc_link = SchedClassifierLink::try_from(FdLink::from(pinned))
        .map_err(|source| link_error(link, path, source))?;
    let attach_err = |source| attach_error(hook, link, source);
    let id = program.attach_to_link(tc_link).map_err(attach_err)?;
    let owned = program.take_link(id).map_err(attach_err)?;
    let fd = FdLink::try_from(owned).map_err(|source| link_error(link, path, source))?;
    tracing::info!(interface = %link.name, program = hook.program(), "adopted the pinned link");
    Ok(Held::Pinned {
        fd,
        path: path.to_owned(),
    })
}

fn attach_error(hook: Hook, link: &Link, source: aya::programs::ProgramError) -> DatapathError {
    DatapathError::Attach {
        program: hook.program(),
        interface: link.name.clone(),
        source,
    }
}

fn link_error(link: &Link, path: &Path, source: aya::programs::links::LinkError) -> DatapathError {
    DatapathError::Link {
        interface: link.name.clone(),
        path: path.to_owned(),
        source,
    }
}

/// Drops the stale attachments of an interface.
pub fn forget(name: &str, attached: Attached) {
    for held in attached.held {
        release(held);
    }
    tracing::info!(interface = name, "forgot the pod program attachments");
}

/// Drops one attachment: removes its pin and closes our handle.
pub fn release(held: Held) {
    match held {
        Held::Pinned { fd, path } => {
            if let Err(error) = std::fs::remove_file(&path)
                && error.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(pin = %path.display(), %error, "cannot remove a stale link pin");
            }
            drop(fd);
        }
        Held::Unpinned(link) => drop(link),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(index: u32, name: &str) -> Link {
        Link {
            index,
            name: name.to_owned(),
        }
    }

    #[test]
    fn plan_table() {
        struct Case {
            name: &'static str,
            links: Vec<Link>,
            attached: Vec<(&'static str, u32)>,
            pins: Vec<&'static str>,
            want_attach: Vec<Link>,
            want_forget: Vec<&'static str>,
            want_remove_pins: Vec<&'static str>,
        }
        let cases = vec![
            Case {
                name: "only wr* links are attached",
                links: vec![link(1, "lo"), link(2, "eth0"), link(5, "wr0123456789ab")],
                attached: vec![],
                pins: vec![],
                want_attach: vec![link(5, "wr0123456789ab")],
                want_forget: vec![],
                want_remove_pins: vec![],
            },
            Case {
                name: "attached links are left alone (idempotent)",
                links: vec![link(5, "wr0123456789ab"), link(6, "wrffffffffffff")],
                attached: vec![("wr0123456789ab", 5)],
                pins: vec!["wr0123456789ab@5-ingress", "wr0123456789ab@5-egress"],
                want_attach: vec![link(6, "wrffffffffffff")],
                want_forget: vec![],
                want_remove_pins: vec![],
            },
            Case {
                name: "vanished links are forgotten",
                links: vec![link(1, "lo")],
                attached: vec![("wr0123456789ab", 5)],
                pins: vec!["wr0123456789ab@5-ingress", "wr0123456789ab@5-egress"],
                want_attach: vec![],
                want_forget: vec!["wr0123456789ab"],
                want_remove_pins: vec!["wr0123456789ab@5-ingress", "wr0123456789ab@5-egress"],
            },
            Case {
                name: "a link re-created with a new index is re-attached",
                links: vec![link(9, "wr0123456789ab")],
                attached: vec![("wr0123456789ab", 5)],
                pins: vec!["wr0123456789ab@5-ingress", "wr0123456789ab@5-egress"],
                want_attach: vec![link(9, "wr0123456789ab")],
                want_forget: vec!["wr0123456789ab"],
                want_remove_pins: vec!["wr0123456789ab@5-ingress", "wr0123456789ab@5-egress"],
            },
            Case {
                name: "after an agent restart, pins of live veths are kept for adoption",
                links: vec![link(5, "wr0123456789ab")],
                attached: vec![],
                pins: vec!["wr0123456789ab@5-ingress", "wrdeadbeef0000@7-ingress"],
                want_attach: vec![link(5, "wr0123456789ab")],
                want_forget: vec![],
                want_remove_pins: vec!["wrdeadbeef0000@7-ingress"],
            },
        ];
        for case in cases {
            let attached = case
                .attached
                .iter()
                .map(|(n, i)| ((*n).to_owned(), *i))
                .collect();
            let pins: Vec<String> = case.pins.iter().map(|p| (*p).to_owned()).collect();
            let got = plan_by_index(&case.links, &attached, &pins);
            let want = AttachPlan {
                attach: case.want_attach,
                forget: case.want_forget.into_iter().map(str::to_owned).collect(),
                remove_pins: case
                    .want_remove_pins
                    .into_iter()
                    .map(str::to_owned)
                    .collect(),
            };
            assert_eq!(got, want, "case: {}", case.name);
        }
    }
}
