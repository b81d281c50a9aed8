//! The NodePort benchmark's traffic generator and sink (`ebpf/programs/src/txgen.rs`).
//! They ship in the datapath's object but only weir-bench loads them (the
//! agent loads its programs by name); their maps are not pinned.

/// XDP program run with `BPF_PROG_TEST_RUN` and XDP live frames: gives each
/// frame the next flow's UDP source port and transmits it (`XDP_TX` out of
/// the test run's `ingress_ifindex`).
pub const GENERATOR: &str = "weir_txgen";
/// XDP program on the interface forwarded frames arrive on: counts and
/// drops UDP frames to [`config::SINK_DPORT`], passes everything else.
pub const SINK: &str = "weir_txsink";

/// Array of `u32` (host byte order), written by weir-bench before a run,
/// indexed by [`config`].
pub const CONFIG_MAP: &str = "WEIR_TXGEN_CFG";
/// Array of [`HEADER_WORDS`] `u64`: the frame's first `8 * HEADER_WORDS`
/// bytes (headers and the start of the payload) in native byte order, which
/// the generator writes into every frame before sending it.
pub const HEADER_MAP: &str = "WEIR_TXGEN_HDR";
/// Number of template words (48 bytes: Ethernet + IPv4 + UDP = 42).
pub const HEADER_WORDS: u32 = 6;
/// Per-CPU array of `u64` counters, indexed by [`counter`].
pub const COUNTERS_MAP: &str = "WEIR_TXGEN_CNT";

/// Indices of [`CONFIG_MAP`].
pub mod config {
    /// Number of flows (distinct UDP source ports); 0 counts as 1.
    pub const FLOWS: u32 = 0;
    /// Source port of flow 0; flow `i` uses `SPORT_BASE + i`.
    pub const SPORT_BASE: u32 = 1;
    /// UDP destination port the sink counts and drops.
    pub const SINK_DPORT: u32 = 2;
    /// Number of entries.
    pub const COUNT: u32 = 3;
}

/// Indices of [`COUNTERS_MAP`].
pub mod counter {
    /// Frames the generator produced.
    pub const GENERATED: u32 = 0;
    /// Frames the sink counted and dropped.
    pub const SUNK: u32 = 1;
    /// Number of counters.
    pub const COUNT: u32 = 2;
}
