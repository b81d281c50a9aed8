//! The NodePort benchmark's traffic generator and sink: the XDP programs
//! `weir_txgen` and `weir_txsink` (`ebpf/programs/src/txgen.rs`), taken from
//! weir-datapath's embedded object.
//!
//! The generator is a thread in the segment netns, pinned to the sender CPU,
//! calling `BPF_PROG_TEST_RUN` with XDP live frames (aya's
//! `TestRunAttrs::xdp_live_frames`) over and over on one 60-byte UDP frame
//! (64 bytes on a wire with the FCS): each run of the program gives the
//! frame the next flow's source port and transmits it (`XDP_TX` out of the
//! context's `ingress_ifindex`, the segment's `eth0`), i.e. straight into the
//! node's receive ring. The sink program (native XDP on the same `eth0`)
//! counts and drops the forwarded frames (UDP to the backends' port).

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result};
use aya::maps::{Array, MapData, PerCpuArray};
use aya::programs::xdp::XdpLinkId;
use aya::programs::{ProgramError, TestRun, TestRunAttrs, TestRunOptions, Xdp, XdpMode};
use aya::{Ebpf, EbpfLoader};
use weir_ebpf_common::txgen::{self, config, counter};

use crate::nodeport_topo::{IFACE, PREFIX};

/// UDP payload bytes: 14 + 20 + 8 + 18 = 60-byte frames.
pub const PAYLOAD: usize = 18;
/// Frames per `BPF_PROG_TEST_RUN` call (the kernel checks for signals and
/// rescheduling between batches).
const REPEAT: u32 = 1 << 16;
/// Frames per live-frames batch (the kernel's default is 64).
const BATCH: u32 = 64;

/// The IPv4 header checksum of `header` (checksum field included as it is).
pub fn ipv4_checksum(header: &[u8]) -> u16 {
    let mut sum: u32 = header
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Where the generated frames go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameSpec {
    pub dst_mac: [u8; 6],
    pub src_mac: [u8; 6],
    pub saddr: Ipv4Addr,
    pub daddr: Ipv4Addr,
    /// Source port of flow 0 (the program rewrites it per frame).
    pub sport: u16,
    pub dport: u16,
}

/// An Ethernet + IPv4 (no options, DF) + UDP frame with a zero UDP checksum
/// (optional in IPv4) and [`PAYLOAD`] bytes of payload (pure).
pub fn udp_frame(s: &FrameSpec) -> Vec<u8> {
    let ip_len = (20 + 8 + PAYLOAD) as u16;
    let mut f = Vec::with_capacity(14 + usize::from(ip_len));
    f.extend_from_slice(&s.dst_mac);
    f.extend_from_slice(&s.src_mac);
    f.extend_from_slice(&0x0800u16.to_be_bytes());
    let mut ip = [0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&ip_len.to_be_bytes());
    ip[6] = 0x40; // DF
    ip[8] = 64; // TTL
    ip[9] = 17; // UDP
    ip[12..16].copy_from_slice(&s.saddr.octets());
    ip[16..20].copy_from_slice(&s.daddr.octets());
    let csum = ipv4_checksum(&ip);
    ip[10..12].copy_from_slice(&csum.to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(&s.sport.to_be_bytes());
    f.extend_from_slice(&s.dport.to_be_bytes());
    f.extend_from_slice(&((8 + PAYLOAD) as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(&[0x5a; PAYLOAD]);
    f
}

/// The `struct xdp_md` context of a test run whose frames are transmitted
/// out of `ifindex` (`data` 0, `data_end` = the frame's length, no meta
/// data, rx queue 0; the kernel requires exactly this shape).
pub fn live_context(frame_len: usize, ifindex: u32) -> [u8; 24] {
    let fields = [0, frame_len as u32, 0, ifindex, 0, 0];
    let mut ctx = [0u8; 24];
    for (chunk, v) in ctx.chunks_mut(4).zip(fields) {
        chunk.copy_from_slice(&v.to_ne_bytes());
    }
    ctx
}

/// `frame`'s first `8 * HEADER_WORDS` bytes as native-endian words (pure).
pub fn template_words(frame: &[u8]) -> Vec<u64> {
    (0..txgen::HEADER_WORDS as usize)
        .map(|i| {
            let mut word = [0u8; 8];
            for (j, b) in word.iter_mut().enumerate() {
                *b = frame.get(i * 8 + j).copied().unwrap_or(0);
            }
            u64::from_ne_bytes(word)
        })
        .collect()
}

/// The generator and sink programs, loaded once per benchmark.
pub struct TxGen {
    // Dropped in this order: programs and maps closed, then the pins removed.
    ebpf: Ebpf,
    _pins: PinDir,
}

/// The private bpffs directory of the loaded object's pinned maps; removed
/// on drop.
struct PinDir(PathBuf);

impl Drop for PinDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Generated and sunk frames so far (summed over CPUs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GenCounters {
    pub generated: u64,
    pub sunk: u64,
}

impl TxGen {
    /// Loads the datapath object (its pinned maps go to a private bpffs
    /// directory, removed on drop), the two programs, and writes the
    /// settings: `flows` source ports from `sport_base`, the sink counting
    /// UDP to `sink_dport`.
    pub fn load(flows: u32, sport_base: u16, sink_dport: u16) -> Result<TxGen> {
        let pins = PinDir(PathBuf::from(format!(
            "/sys/fs/bpf/{PREFIX}-txgen-{}",
            std::process::id()
        )));
        std::fs::create_dir_all(&pins.0)
            .with_context(|| format!("cannot create {}", pins.0.display()))?;
        let ebpf = EbpfLoader::new()
            .default_map_pin_directory(&pins.0)
            .load(weir_datapath::ebpf_object())
            .context("cannot load weir's eBPF object")?;
        let mut loaded = TxGen { ebpf, _pins: pins };
        for name in [txgen::GENERATOR, txgen::SINK] {
            let program: &mut Xdp = loaded
                .ebpf
                .program_mut(name)
                .with_context(|| format!("no program {name} in weir's eBPF object"))?
                .try_into()?;
            program
                .load()
                .with_context(|| format!("cannot load {name}"))?;
        }
        let mut settings: Array<&mut MapData, u32> = Array::try_from(
            loaded
                .ebpf
                .map_mut(txgen::CONFIG_MAP)
                .context("no txgen config map")?,
        )?;
        settings.set(config::FLOWS, flows, 0)?;
        settings.set(config::SPORT_BASE, u32::from(sport_base), 0)?;
        settings.set(config::SINK_DPORT, u32::from(sink_dport), 0)?;
        Ok(loaded)
    }

    /// Writes `frame`'s first bytes as the template the generator restores
    /// in every frame (recycled frames carry the node's rewrites).
    pub fn set_template(&mut self, frame: &[u8]) -> Result<()> {
        let mut words: Array<&mut MapData, u64> = Array::try_from(
            self.ebpf
                .map_mut(txgen::HEADER_MAP)
                .context("no txgen header map")?,
        )?;
        for (i, word) in template_words(frame).into_iter().enumerate() {
            words.set(i as u32, word, 0)?;
        }
        Ok(())
    }

    /// Attaches the sink (native XDP) to `eth0` of `netns`.
    pub fn attach_sink(&mut self, netns: &str) -> Result<XdpLinkId> {
        let program: &mut Xdp = self
            .ebpf
            .program_mut(txgen::SINK)
            .context("no sink program")?
            .try_into()?;
        std::thread::scope(|s| {
            s.spawn(|| {
                crate::netns::enter(netns)?;
                program
                    .attach(IFACE, XdpMode::Driver)
                    .with_context(|| format!("cannot attach the sink to {IFACE} in {netns}"))
            })
            .join()
            .map_err(|_| anyhow::anyhow!("sink attach thread panicked"))?
        })
    }

    pub fn detach_sink(&mut self, link: XdpLinkId) {
        if let Ok(program) = self
            .ebpf
            .program_mut(txgen::SINK)
            .context("no sink program")
            .and_then(|p| <&mut Xdp>::try_from(p).map_err(Into::into))
        {
            let _ = program.detach(link);
        }
    }

    /// Generates `frame`s from `eth0` of `netns` on `cpu` until `stop`.
    /// Call on a thread of its own: it enters the netns.
    pub fn generate(&self, netns: &str, cpu: usize, frame: &[u8], stop: &AtomicBool) -> Result<()> {
        crate::netns::enter(netns)?;
        crate::nodeport_cpu::pin(0, cpu)?;
        let ifindex = nix::net::if_::if_nametoindex(IFACE)
            .with_context(|| format!("no {IFACE} in {netns}"))?;
        let ctx = live_context(frame.len(), ifindex);
        let program: &Xdp = self
            .ebpf
            .program(txgen::GENERATOR)
            .context("no generator program")?
            .try_into()?;
        while !stop.load(Ordering::Relaxed) {
            let ran = program.test_run(TestRunOptions {
                data_in: Some(frame),
                ctx_in: Some(&ctx),
                repeat: REPEAT,
                attrs: TestRunAttrs::new().xdp_live_frames(BATCH),
                ..TestRunOptions::new()
            });
            match ran {
                Ok(_) => {}
                // A signal cut the run short (the kernel checks between
                // frames); the frames so far are counted: go on.
                Err(ProgramError::SyscallError(e))
                    if e.io_error.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    return Err(anyhow::Error::new(e).context(
                        "BPF_PROG_TEST_RUN with XDP live frames failed (kernel ≥ 5.18?)",
                    ));
                }
            }
        }
        Ok(())
    }

    pub fn counters(&self) -> Result<GenCounters> {
        let map: PerCpuArray<&MapData, u64> = PerCpuArray::try_from(
            self.ebpf
                .map(txgen::COUNTERS_MAP)
                .context("no txgen counters map")?,
        )?;
        let sum = |i: u32| -> Result<u64> { Ok(map.get(&i, 0)?.iter().sum()) };
        Ok(GenCounters {
            generated: sum(counter::GENERATED)?,
            sunk: sum(counter::SUNK)?,
        })
    }
}

/// Removes pin directories of interrupted earlier runs.
pub fn remove_leftover_pins() {
    if let Ok(entries) = std::fs::read_dir("/sys/fs/bpf") {
        for e in entries.flatten() {
            if e.file_name()
                .to_string_lossy()
                .starts_with(&format!("{PREFIX}-txgen-"))
            {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_is_60_bytes_with_a_valid_ip_checksum() {
        let spec = FrameSpec {
            dst_mac: [2, 0, 0, 0, 0, 1],
            src_mac: [2, 0, 0, 0, 0, 2],
            saddr: Ipv4Addr::new(172, 31, 255, 2),
            daddr: Ipv4Addr::new(172, 31, 255, 1),
            sport: 10000,
            dport: 30080,
        };
        let f = udp_frame(&spec);
        assert_eq!(f.len(), 60);
        let cases: [(&str, std::ops::Range<usize>, &[u8]); 9] = [
            ("dst mac", 0..6, &[2, 0, 0, 0, 0, 1]),
            ("src mac", 6..12, &[2, 0, 0, 0, 0, 2]),
            ("ethertype", 12..14, &[0x08, 0x00]),
            ("version/ihl, tot_len", 14..18, &[0x45, 0, 0, 46]),
            ("proto", 23..24, &[17]),
            ("addresses", 26..34, &[172, 31, 255, 2, 172, 31, 255, 1]),
            ("ports", 34..38, &[0x27, 0x10, 0x75, 0x80]),
            ("udp len, csum", 38..42, &[0, 26, 0, 0]),
            ("payload", 42..44, &[0x5a, 0x5a]),
        ];
        for (what, range, want) in cases {
            assert_eq!(&f[range], want, "{what}");
        }
        // A header with its checksum in place sums to zero.
        assert_eq!(ipv4_checksum(&f[14..34]), 0);
    }

    #[test]
    fn checksum_of_a_known_header() {
        // The classic example header (checksum field zeroed): 0xb861.
        let header = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(ipv4_checksum(&header), 0xb861);
    }

    #[test]
    fn template_covers_the_headers() {
        let frame: Vec<u8> = (0..60).collect();
        let words = template_words(&frame);
        assert_eq!(words.len(), txgen::HEADER_WORDS as usize);
        let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_ne_bytes()).collect();
        assert_eq!(&bytes[..], &frame[..48]);
        // Ethernet + IPv4 + UDP headers fit.
        assert!(bytes.len() >= 42);
        assert_eq!(
            template_words(&[1, 2])[0],
            u64::from_ne_bytes([1, 2, 0, 0, 0, 0, 0, 0])
        );
    }

    #[test]
    fn live_context_shape() {
        let ctx = live_context(60, 7);
        let word = |i: usize| u32::from_ne_bytes(ctx[i * 4..i * 4 + 4].try_into().unwrap());
        assert_eq!(
            [word(0), word(1), word(2), word(3), word(4), word(5)],
            [0, 60, 0, 7, 0, 0]
        );
    }
}
