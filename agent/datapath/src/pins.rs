//! Pinned maps left by an earlier agent whose definition no longer matches
//! the object this agent loads (an upgrade that grew a map or changed an
//! entry's layout).
//!
//! aya reuses a pinned map by name without comparing it with the object's
//! definition, so after such an upgrade the new programs would run on a map
//! of the old shape: a per-CPU counter array one slot short makes every
//! read of the last slot fail, a value one field longer is read past its
//! end. Before loading, every pin whose key size, value size, flags or
//! capacity differ from the object's definition is removed (with a warning
//! naming the map and what changed), so the loader creates the map afresh.
//! Its contents are lost: counters restart, conntrack entries of that map
//! are gone (their connections are judged and translated again as new ones),
//! and the service and policy syncs refill the maps they own on their first
//! full plan. That is the price of an incompatible upgrade, and it is paid
//! once, visibly, instead of running on a map of the wrong shape.
//!
//! Maps whose capacity is an agent flag (the NetworkPolicy maps) keep the
//! capacity they were created with, as documented for those flags: only a
//! change of their entry layout replaces them.
//!
//! The map type is not compared (aya reports the pinned map's type as its
//! own enum and the object's as the kernel's number); a map that changed
//! type without changing any size would also change name in this codebase.

use std::path::Path;

use aya_obj::Object;
use weir_ebpf_common::policy::map_names as policy_maps;

use crate::DatapathError;

/// The maps whose capacity is an agent flag (`--policy-*-max-entries`):
/// they keep the capacity they were created with.
pub(crate) const SIZED_BY_FLAG: [&str; 3] = [
    policy_maps::IPCACHE,
    policy_maps::POLICY_ENDPOINTS,
    policy_maps::POLICY,
];

/// The parts of a map definition a pinned map must share with the object's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapShape {
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
    pub flags: u32,
}

/// Why a pinned map cannot serve the object's definition, or `None` when
/// it can. `sized_by_flag`: its capacity is an agent flag that applies only
/// when the map is created, so a capacity difference is expected.
pub fn mismatch(want: MapShape, pinned: MapShape, sized_by_flag: bool) -> Option<String> {
    let mut what = Vec::new();
    let mut cmp = |field: &str, want: u32, have: u32| {
        if want != have {
            what.push(format!("{field} {have} pinned, {want} expected"));
        }
    };
    cmp("key size", want.key_size, pinned.key_size);
    cmp("value size", want.value_size, pinned.value_size);
    cmp("flags", want.flags, pinned.flags);
    if !sized_by_flag {
        cmp("max entries", want.max_entries, pinned.max_entries);
    }
    (!what.is_empty()).then(|| what.join(", "))
}

/// Removes every pin under `pin_dir` named like one of `object`'s maps
/// whose shape does not match (see the module doc); returns the names of
/// the maps it removed. Pins that cannot be read as maps are left to the
/// loader, which reports them.
pub fn remove_incompatible(
    object: &[u8],
    pin_dir: &Path,
    sized_by_flag: &[&str],
) -> Result<Vec<String>, DatapathError> {
    // An object aya-obj cannot parse fails the load right after, with the
    // loader's own error; nothing to compare until then.
    let Ok(parsed) = Object::parse(object) else {
        return Ok(Vec::new());
    };
    let mut removed = Vec::new();
    for (name, def) in &parsed.maps {
        let path = pin_dir.join(name);
        if !path.exists() {
            continue;
        }
        let Ok(info) = aya::maps::MapInfo::from_pin(&path) else {
            continue;
        };
        let want = MapShape {
            key_size: def.key_size(),
            value_size: def.value_size(),
            max_entries: def.max_entries(),
            flags: def.map_flags(),
        };
        let pinned = MapShape {
            key_size: info.key_size(),
            value_size: info.value_size(),
            max_entries: info.max_entries(),
            flags: info.map_flags(),
        };
        if let Some(why) = mismatch(want, pinned, sized_by_flag.contains(&name.as_str())) {
            tracing::warn!(map = %name, %why, "pinned map does not match this agent's definition; creating it afresh (its contents are lost)");
            std::fs::remove_file(&path).map_err(|source| DatapathError::PinDir {
                path: path.clone(),
                source,
            })?;
            removed.push(name.clone());
        }
    }
    removed.sort();
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHAPE: MapShape = MapShape {
        key_size: 4,
        value_size: 8,
        max_entries: 8,
        flags: 0,
    };

    #[test]
    fn mismatch_table() {
        let with = |f: fn(&mut MapShape)| {
            let mut s = SHAPE;
            f(&mut s);
            s
        };
        let cases: [(&str, MapShape, bool, Option<&str>); 6] = [
            ("same shape", SHAPE, false, None),
            (
                "a counter array one slot short (an upgrade added a drop reason)",
                with(|s| s.max_entries = 7),
                false,
                Some("max entries 7 pinned, 8 expected"),
            ),
            (
                "capacity set by a flag: kept",
                with(|s| s.max_entries = 1024),
                true,
                None,
            ),
            (
                "entry layout of a flag-sized map changed: replaced",
                with(|s| s.value_size = 12),
                true,
                Some("value size 12 pinned, 8 expected"),
            ),
            (
                "key and flags",
                with(|s| {
                    s.key_size = 8;
                    s.flags = 1;
                }),
                false,
                Some("key size 8 pinned, 4 expected, flags 1 pinned, 0 expected"),
            ),
            (
                "everything but the capacity of a flag-sized map",
                with(|s| s.max_entries = 1),
                true,
                None,
            ),
        ];
        for (what, pinned, by_flag, want) in cases {
            assert_eq!(mismatch(SHAPE, pinned, by_flag).as_deref(), want, "{what}");
        }
    }

    /// An agent upgraded in place finds the pins of the old one: a pin of
    /// the same shape is kept (with its contents), one of another shape is
    /// replaced, and the next load creates it with this object's shape.
    #[test]
    #[ignore = "privileged: loads BPF programs and pins maps (root, CAP_BPF)"]
    fn an_upgrade_replaces_only_pins_of_another_shape() {
        use weir_ebpf_common::{drop_reason, map_names};

        let (dp, dir) = crate::tests::load();
        drop(dp);
        let removed =
            remove_incompatible(crate::EBPF_OBJECT, &dir.0, &SIZED_BY_FLAG).expect("compare pins");
        assert!(
            removed.is_empty(),
            "same object, nothing to replace: {removed:?}"
        );

        // Where WEIR_DROPS was pinned, leave a map of another shape (as an
        // agent with another number of drop reasons would have left it).
        let drops = dir.0.join(map_names::DROPS);
        std::fs::remove_file(&drops).expect("unpin drops");
        std::fs::rename(dir.0.join(map_names::CONNTRACK), &drops).expect("move a pin");
        let removed =
            remove_incompatible(crate::EBPF_OBJECT, &dir.0, &SIZED_BY_FLAG).expect("compare pins");
        assert_eq!(removed, [map_names::DROPS.to_string()]);
        assert!(!drops.exists(), "the mismatched pin is gone");

        let _dp = crate::Datapath::load(&crate::DatapathConfig {
            bpffs_dir: dir.0.clone(),
            cgroup_dir: None,
            node: None,
        })
        .expect("load after the upgrade");
        let info = aya::maps::MapInfo::from_pin(&drops).expect("new drops pin");
        assert_eq!(info.max_entries(), drop_reason::COUNT);
        assert_eq!(info.value_size(), 8);
    }
}
