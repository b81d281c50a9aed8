//! Port ranges -> prefix-aligned port blocks (see the "Port ranges" section
//! of `weir_ebpf_common::policy`).

/// A block of `2^bits` ports starting at `start` (a multiple of `2^bits`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortBlock {
    pub start: u16,
    /// 0..=16: how many low bits of the port the block leaves free.
    pub bits: u32,
}

/// The fewest prefix-aligned blocks covering exactly `lo..=hi` (at most 30;
/// empty when `lo > hi`).
pub fn port_blocks(lo: u16, hi: u16) -> Vec<PortBlock> {
    let mut out = Vec::new();
    let (mut lo, hi) = (u32::from(lo), u32::from(hi));
    while lo <= hi {
        // Largest block aligned at `lo` that does not pass `hi`.
        let mut bits = if lo == 0 {
            16
        } else {
            lo.trailing_zeros().min(16)
        };
        while lo + (1 << bits) - 1 > hi {
            bits -= 1;
        }
        // `lo` <= 65535 here, so the cast is exact.
        out.push(PortBlock {
            start: lo as u16,
            bits,
        });
        lo += 1 << bits;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Expands blocks back to ports.
    fn ports(blocks: &[PortBlock]) -> Vec<u32> {
        blocks
            .iter()
            .flat_map(|b| u32::from(b.start)..u32::from(b.start) + (1 << b.bits))
            .collect()
    }

    #[test]
    fn blocks_cover_exactly_the_range() {
        let cases: &[(u16, u16, usize)] = &[
            (80, 80, 1),
            (0, 65535, 1),
            (1, 65535, 16),
            (32000, 32768, 3),
            (8080, 8090, 3),
            (1024, 2047, 1),
            (2, 65533, 28),
            (1, 65534, 30),
            (5, 4, 0),
        ];
        for &(lo, hi, count) in cases {
            let blocks = port_blocks(lo, hi);
            assert_eq!(blocks.len(), count, "{lo}..={hi}: {blocks:?}");
            let want: Vec<u32> = (u32::from(lo)..=u32::from(hi)).collect();
            assert_eq!(ports(&blocks), want, "{lo}..={hi}");
            for b in &blocks {
                assert_eq!(u32::from(b.start) % (1 << b.bits), 0, "{b:?} unaligned");
            }
        }
    }
}
