//! Bounds-checked packet access.
//!
//! Every read goes through `bpf_skb_load_bytes` and every write through
//! `bpf_skb_store_bytes` (via aya's `TcContext::load`/`store`): the kernel
//! checks the offset against the packet length at run time and fails the call
//! instead of reading past the end. Parsing code therefore never touches raw
//! packet pointers, and a truncated packet simply yields `None`.

use aya_ebpf::programs::TcContext;

/// Reads a `T` (a plain `#[repr(C)]` header or integer) at `offset`, or
/// `None` if the packet is too short.
#[inline(always)]
pub fn read<T: Copy>(ctx: &TcContext, offset: usize) -> Option<T> {
    ctx.load::<T>(offset).ok()
}

/// Overwrites the bytes at `offset` with `value`. Checksums are not touched:
/// callers fix them first with the `csum_*` helpers in [`crate::nat`].
#[inline(always)]
pub fn write<T>(ctx: &TcContext, offset: usize, value: &T) -> Option<()> {
    ctx.store(offset, value, 0).ok()
}
