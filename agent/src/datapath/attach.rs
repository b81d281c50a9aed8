//! Attaching the from-pod program to host-side pod veths.
//!
//! Attachment goes through TCX (kernel >= 6.6): the link lives as long as its
//! file descriptor, which the agent holds. When a veth is deleted the kernel
//! detaches the link by itself; we then only drop our bookkeeping.

use std::collections::BTreeMap;

use aya::programs::{SchedClassifier, TcAttachType, tc::SchedClassifierLinkId};
use weir_ebpf_common::program_names;

use super::DatapathError;

/// Prefix of host-side pod veth names (weir-cni: "wr" + 12 hex chars).
pub const POD_VETH_PREFIX: &str = "wr";

/// A network interface of the current network namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
}

/// An attachment the agent holds.
#[derive(Debug)]
pub struct Attached {
    /// The ifindex at attach time: a veth re-created under the same name (a
    /// new pod sandbox with the same id) gets a new index and needs a new
    /// attachment.
    pub index: u32,
    link_id: SchedClassifierLinkId,
}

/// What [`plan`] decided.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct AttachPlan {
    /// Interfaces to attach to.
    pub attach: Vec<Link>,
    /// Names whose attachment is stale (interface gone or re-created).
    pub forget: Vec<String>,
}

/// Decides which pod veths need an attachment and which attachments are stale.
pub fn plan(links: &[Link], attached: &BTreeMap<String, Attached>) -> AttachPlan {
    plan_by_index(
        links,
        &attached.iter().map(|(n, a)| (n.clone(), a.index)).collect(),
    )
}

fn plan_by_index(links: &[Link], attached: &BTreeMap<String, u32>) -> AttachPlan {
    let pods: BTreeMap<&str, u32> = links
        .iter()
        .filter(|l| l.name.starts_with(POD_VETH_PREFIX))
        .map(|l| (l.name.as_str(), l.index))
        .collect();
    let forget: Vec<String> = attached
        .iter()
        .filter(|(name, index)| pods.get(name.as_str()) != Some(index))
        .map(|(name, _)| name.clone())
        .collect();
    let attach = pods
        .iter()
        .filter(|(name, index)| attached.get(**name) != Some(index))
        .map(|(name, index)| Link {
            index: *index,
            name: (*name).to_owned(),
        })
        .collect();
    AttachPlan { attach, forget }
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

/// Attaches the from-pod program at TCX ingress of `link` (packets leaving the pod).
pub fn attach(program: &mut SchedClassifier, link: &Link) -> Result<Attached, DatapathError> {
    let link_id = program
        .attach(&link.name, TcAttachType::Ingress)
        .map_err(|source| DatapathError::Attach {
            program: program_names::FROM_POD,
            interface: link.name.clone(),
            source,
        })?;
    Ok(Attached {
        index: link.index,
        link_id,
    })
}

/// Drops a stale attachment. Errors are only logged: the interface is usually
/// gone already, and with it the kernel side of the link.
pub fn detach(program: &mut SchedClassifier, name: &str, attached: Attached) {
    match program.detach(attached.link_id) {
        Ok(()) => tracing::info!(interface = name, "forgot from-pod attachment"),
        Err(error) => tracing::debug!(interface = name, %error, "detaching a stale attachment"),
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
            want_attach: Vec<Link>,
            want_forget: Vec<&'static str>,
        }
        let cases = vec![
            Case {
                name: "only wr* links are attached",
                links: vec![link(1, "lo"), link(2, "eth0"), link(5, "wr0123456789ab")],
                attached: vec![],
                want_attach: vec![link(5, "wr0123456789ab")],
                want_forget: vec![],
            },
            Case {
                name: "attached links are left alone (idempotent)",
                links: vec![link(5, "wr0123456789ab"), link(6, "wrffffffffffff")],
                attached: vec![("wr0123456789ab", 5)],
                want_attach: vec![link(6, "wrffffffffffff")],
                want_forget: vec![],
            },
            Case {
                name: "vanished links are forgotten",
                links: vec![link(1, "lo")],
                attached: vec![("wr0123456789ab", 5)],
                want_attach: vec![],
                want_forget: vec!["wr0123456789ab"],
            },
            Case {
                name: "a link re-created with a new index is re-attached",
                links: vec![link(9, "wr0123456789ab")],
                attached: vec![("wr0123456789ab", 5)],
                want_attach: vec![link(9, "wr0123456789ab")],
                want_forget: vec!["wr0123456789ab"],
            },
        ];
        for case in cases {
            let attached = case
                .attached
                .iter()
                .map(|(n, i)| ((*n).to_owned(), *i))
                .collect();
            let got = plan_by_index(&case.links, &attached);
            let want = AttachPlan {
                attach: case.want_attach,
                forget: case.want_forget.into_iter().map(str::to_owned).collect(),
            };
            assert_eq!(got, want, "case: {}", case.name);
        }
    }
}
