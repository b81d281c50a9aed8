//! weir-cni: the CNI plugin that wires a pod into a weir node.
//!
//! One pod = one veth pair. The host side is named [`naming::host_veth_name`]
//! (`"wr"` + 12 hex chars of sha256(container id)) and carries the pod CIDR's
//! gateway address as a /32, like the reference `ptp` plugin; the pod side is
//! moved into the pod's network namespace, renamed to `CNI_IFNAME`, and gets
//! its address as a /32 plus a link-scope route to the gateway and a default
//! route via it. The node routes each pod IP as a /32 to its host veth. Every
//! pod-to-anything packet therefore crosses a `wr*` link, which is where the
//! eBPF datapath attaches.
//!
//! Flow of one invocation (see `main.rs`): [`inputs`] reads the environment
//! and stdin once, [`config`] validates the network configuration without
//! touching anything, [`plugin`] runs ADD/DEL/CHECK using [`ipam`] (allocation
//! files under `dataDir`) and [`net`] (rtnetlink), and [`result`] renders the
//! reply for the runtime's CNI version. [`error::PluginError`] carries the CNI
//! error code of every failure.
#![forbid(unsafe_code)]

pub mod config;
pub mod error;
pub mod inputs;
pub mod ipam;
pub mod naming;
pub mod net;
pub mod plugin;
pub mod reconcile;
pub mod result;
pub mod sys;
