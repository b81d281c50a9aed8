//! Interface names derived from the container id.
//!
//! The host-side name is a team contract (the datapath attaches to every link
//! whose name starts with [`HOST_VETH_PREFIX`]): `"wr"` followed by the first
//! 12 hex characters of sha256(CNI_CONTAINERID). 48 bits of a cryptographic
//! hash make a collision among the few hundred pods of a node vanishingly
//! unlikely (birthday bound ~ n²/2⁴⁹), the name is stable across plugin
//! invocations (DEL and CHECK recompute it, nothing has to be stored), and
//! 14 characters fit Linux's 15-byte IFNAMSIZ limit.

use sha2::{Digest, Sha256};

/// Prefix of every host-side pod veth. The datapath matches on it.
pub const HOST_VETH_PREFIX: &str = "wr";

/// Prefix of the pod-side veth while it still lives in the node's namespace,
/// between creation and the move into the pod namespace. Deriving it from
/// the same hash keeps concurrent ADDs from colliding on a temporary name.
pub const TEMP_PEER_PREFIX: &str = "wp";

/// Number of hex characters of the hash kept in a name.
const HASH_CHARS: usize = 12;

/// Linux's maximum interface name length (IFNAMSIZ - 1 for the NUL).
pub const MAX_IFNAME_LEN: usize = 15;

/// Host-side veth name for a container: `wr` + sha256(id)[..12] in hex.
pub fn host_veth_name(container_id: &str) -> String {
    format!("{HOST_VETH_PREFIX}{}", short_hash(container_id))
}

/// Temporary name of the pod-side veth before it moves into the pod netns.
pub fn temp_peer_name(container_id: &str) -> String {
    format!("{TEMP_PEER_PREFIX}{}", short_hash(container_id))
}

fn short_hash(container_id: &str) -> String {
    let digest = Sha256::digest(container_id.as_bytes());
    let mut hex = String::with_capacity(HASH_CHARS);
    for byte in digest.iter().take(HASH_CHARS / 2) {
        hex.push_str(&format!("{byte:02x}"));
    }
    hex
}

/// Whether `name` is acceptable to the kernel as an interface name
/// (mirrors `dev_valid_name` in net/core/dev.c: 1..=15 bytes, not "." or
/// "..", no '/', ':' or whitespace).
pub fn is_valid_ifname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_IFNAME_LEN
        && name != "."
        && name != ".."
        && !name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_name_is_prefix_plus_sha256_prefix() {
        // sha256("abc") = ba7816bf8f01cfea414140de5dae2223b00361a3...
        assert_eq!(host_veth_name("abc"), "wrba7816bf8f01");
        assert_eq!(temp_peer_name("abc"), "wpba7816bf8f01");
        // sha256("") = e3b0c44298fc1c149afbf4c8996fb924...
        assert_eq!(host_veth_name(""), "wre3b0c44298fc");
    }

    #[test]
    fn names_fit_ifnamsiz_and_differ_per_container() {
        let a = host_veth_name("4f3c1a9e0b7d4b2e8f6a5c3d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f");
        let b = host_veth_name("4f3c1a9e0b7d4b2e8f6a5c3d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3e");
        assert_eq!(a.len(), 14);
        assert!(is_valid_ifname(&a));
        assert_ne!(a, b);
        assert_eq!(
            a,
            host_veth_name("4f3c1a9e0b7d4b2e8f6a5c3d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f")
        );
    }

    #[test]
    fn ifname_validation_table() {
        let cases = [
            ("eth0", true),
            ("net1", true),
            ("a", true),
            ("123456789012345", true),
            ("1234567890123456", false),
            ("", false),
            (".", false),
            ("..", false),
            ("eth/0", false),
            ("eth:0", false),
            ("eth 0", false),
        ];
        for (name, valid) in cases {
            assert_eq!(is_valid_ifname(name), valid, "{name:?}");
        }
    }
}
