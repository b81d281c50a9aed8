//! weir's kernel datapath.
//!
//! One entry module per hook ([`from_pod`], [`to_pod`], [`node_ingress`], [`node_egress`],
//! [`sock`], [`xdp`]); the per-concern
//! modules below hold everything the hooks share:
//!
//! - [`packet`]: bounds-checked reads and writes of packet bytes,
//! - [`parse`]: Ethernet/IPv4/TCP/UDP/SCTP header parsing into a [`parse::Flow`],
//! - [`maps`]: the map definitions (layouts come from `weir-ebpf-common`),
//! - [`conntrack`]: per-connection translation state,
//! - [`lb`]: backend selection,
//! - [`maglev`]: Maglev consistent-hashing backend choice (XDP and node-ingress),
//! - [`xdp_packet`]: direct packet access, parsing and NAT for the XDP hook,
//! - [`nat`]: address/port rewriting with incremental checksum updates,
//! - [`fib`]: forwarding translated packets past the stack (FIB + redirect),
//! - [`arp`]: answering ARP for owned LoadBalancer IPs,
//! - [`icmp`]: ICMP errors about translated connections,
//! - [`policy`]: NetworkPolicy verdicts on new connections,
//! - [`redirect`]: the pod fast path (local pod -> local pod past the stack),
//! - [`dsr`]: direct server return (the IPv4 option, both nodes' sides),
//! - [`flow`]: flow events (verdicts and drops) into the ring buffer.
#![no_std]
#![no_main]

mod arp;
mod conntrack;
mod dsr;
mod fib;
mod flow;
mod from_pod;
mod icmp;
mod lb;
mod maglev;
mod maps;
mod masq;
mod nat;
mod node_egress;
mod node_ingress;
mod packet;
mod parse;
mod policy;
mod redirect;
mod sock;
mod to_pod;
mod txgen;
mod xdp;
mod xdp_packet;

/// Required by `no_std`. The verifier rejects programs that could reach a
/// panic (there is no unwinding in BPF), so this is never called at run time.
#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
