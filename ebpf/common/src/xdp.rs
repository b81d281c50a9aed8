//! The XDP fast path's counters: how many packets the XDP program on the
//! node interface sent back out itself (`XDP_TX`), left to the stack and tc
//! (`XDP_PASS`) and dropped, so an operator (or a benchmark) can tell
//! whether NodePort traffic takes the fast path at all.

/// Map name of the per-CPU `u64` counters, indexed by [`verdict`].
pub const XDP_STATS_MAP: &str = "WEIR_XDP_STATS";

/// Indices of the counters.
pub mod verdict {
    /// Forwarded by XDP (translated and transmitted, `XDP_TX`).
    pub const TX: u32 = 0;
    /// Left to the stack and tc node-ingress (`XDP_PASS`).
    pub const PASS: u32 = 1;
    /// Dropped (also counted by reason in `WEIR_DROPS`).
    pub const DROP: u32 = 2;
    /// Number of counters.
    pub const COUNT: u32 = 3;
    /// Counter names, by index.
    pub const NAMES: [&str; COUNT as usize] = ["tx", "pass", "drop"];
}
