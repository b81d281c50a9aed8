//! Hooks: cgroup v2 **`connect4`, `sendmsg4`, `recvmsg4`, `getpeername4`**
//! on the node's cgroup subtree (every pod, and whatever else the node runs
//! there): socket-level load balancing.
//!
//! A connect() (TCP, connected UDP) or an unconnected UDP sendmsg() to a
//! service frontend is sent to a backend instead, chosen here, once per
//! connect. The packets then carry the backend address from the start, so no
//! per-packet NAT or conntrack is needed; the tc hooks see plain pod-to-pod
//! traffic. The application is shown the frontend again by `recvmsg4` (the
//! source of UDP replies) and `getpeername4` (the peer of a connected
//! socket), through `WEIR_SOCK_REV`.
//!
//! A frontend with no ready backend fails the connect()/sendmsg() with EPERM
//! (return 0) right away, the socket-level counterpart of the tc hook's drop.
//! Everything else is left alone (return 1 = proceed).

use aya_ebpf::{
    bindings::BPF_ANY,
    helpers::{bpf_get_netns_cookie, bpf_get_socket_cookie},
    macros::cgroup_sock_addr,
    programs::SockAddrContext,
};
use weir_ebpf_common::{
    AFFINITY_CLIENT_NETNS, IPPROTO_TCP, IPPROTO_UDP, ServiceKey, SockRevKey, SockRevValue,
    drop_reason,
};

use crate::{flow, lb, maps};

/// Let the syscall proceed.
const PROCEED: i32 = 1;
/// Fail the syscall with EPERM.
const REJECT: i32 = 0;

#[cgroup_sock_addr(connect4)]
pub fn weir_sock_connect4(ctx: SockAddrContext) -> i32 {
    forward(&ctx)
}

#[cgroup_sock_addr(sendmsg4)]
pub fn weir_sock_sendmsg4(ctx: SockAddrContext) -> i32 {
    forward(&ctx)
}

#[cgroup_sock_addr(recvmsg4)]
pub fn weir_sock_recvmsg4(ctx: SockAddrContext) -> i32 {
    reverse(&ctx);
    PROCEED
}

#[cgroup_sock_addr(getpeername4)]
pub fn weir_sock_getpeername4(ctx: SockAddrContext) -> i32 {
    reverse(&ctx);
    PROCEED
}

/// The destination the application gave: (address, port, protocol), all as
/// the map keys hold them.
#[inline(always)]
fn user_addr(ctx: &SockAddrContext) -> (u32, u16, u8) {
    // SAFETY: `sock_addr` is the context pointer the kernel passed to this
    // program; the verifier allows reading these fields in all four hooks.
    let (ip, port, proto) = unsafe {
        let sa = &*ctx.sock_addr;
        (sa.user_ip4, sa.user_port, sa.protocol)
    };
    // user_port holds the network-order port in its first two bytes; on
    // this little-endian target that is the low half of the u32.
    (ip, port as u16, proto as u8)
}

#[inline(always)]
fn set_user_addr(ctx: &SockAddrContext, ip: u32, port: u16) {
    // SAFETY: as in `user_addr`; the verifier allows 4-byte writes of
    // user_ip4/user_port in these hooks.
    unsafe {
        (*ctx.sock_addr).user_ip4 = ip;
        (*ctx.sock_addr).user_port = u32::from(port);
    }
}

#[inline(always)]
fn cookie(ctx: &SockAddrContext) -> u64 {
    // SAFETY: the helper takes the program's own context pointer.
    unsafe { bpf_get_socket_cookie(ctx.sock_addr.cast()) }
}

/// connect4/sendmsg4: frontend -> backend.
#[inline(always)]
fn forward(ctx: &SockAddrContext) -> i32 {
    let (addr, port, proto) = user_addr(ctx);
    if proto != IPPROTO_TCP && proto != IPPROTO_UDP {
        return PROCEED;
    }
    let key = ServiceKey {
        addr,
        port,
        proto,
        _pad: 0,
    };
    let Some(svc) = maps::get_copy(&maps::SERVICES, &key) else {
        return PROCEED;
    };
    // No 5-tuple exists yet (the source port is chosen later): hash the
    // socket, so an unconnected UDP socket keeps sending to one backend while
    // the set is unchanged, like a connected one.
    let cookie = cookie(ctx);
    let hash = lb::socket_hash(cookie, port);
    // SAFETY: the helper takes the program's own context.
    let netns = unsafe { bpf_get_netns_cookie(ctx.sock_addr.cast()) };
    let Some(backend) = lb::select(&svc, &key, AFFINITY_CLIENT_NETNS, netns, hash) else {
        flow::sock_rejected(addr, port, proto, drop_reason::NO_BACKEND);
        return REJECT;
    };
    let rev_key = SockRevKey {
        cookie,
        addr: backend.addr,
        port: backend.port,
        _pad: [0; 2],
    };
    let rev = SockRevValue {
        addr,
        port,
        _pad: [0; 2],
    };
    // Without the reverse entry the application would see the backend as
    // its peer (and a UDP client might drop the replies): refuse instead.
    if maps::SOCK_REV
        .insert(&rev_key, &rev, u64::from(BPF_ANY))
        .is_err()
    {
        flow::sock_rejected(addr, port, proto, drop_reason::MAP_INSERT);
        return REJECT;
    }
    set_user_addr(ctx, backend.addr, backend.port);
    PROCEED
}

/// recvmsg4/getpeername4: backend -> the frontend this socket addressed.
#[inline(always)]
fn reverse(ctx: &SockAddrContext) {
    let (addr, port, _) = user_addr(ctx);
    let key = SockRevKey {
        cookie: cookie(ctx),
        addr,
        port,
        _pad: [0; 2],
    };
    if let Some(ptr) = maps::SOCK_REV.get_ptr(&key) {
        // SAFETY: the pointer comes from a successful lookup and points to a
        // SockRevValue (plain integers); a concurrent update can at worst
        // yield a stale value.
        let rev = unsafe { *ptr };
        set_user_addr(ctx, rev.addr, rev.port);
    }
}
