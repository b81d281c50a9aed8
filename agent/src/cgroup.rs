//! Pod-level cgroup parents.
//!
//! Each pod's containers live under `<--cgroup-parent>/pod<uid>` in every
//! mounted hierarchy (cgroup v1 controllers, the named systemd hierarchy, and
//! the cgroup2 tree at `unified/` on hybrid hosts). runc creates the
//! per-container leaves and removes them, but leaves the pod-level parent
//! behind, so the agent creates it before the sandbox and removes it after.

use std::io;
use std::path::{Path, PathBuf};

/// A cgroup directory could not be created or removed.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("cannot list cgroup hierarchies under {root}: {source}")]
    Detect {
        root: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot create cgroup {path}: {source}")]
    Create {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot remove cgroup {path}: {source} (processes still in it?)")]
    Remove {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// The mounted cgroup hierarchies of this machine.
#[derive(Debug, Clone)]
pub struct Cgroups {
    hierarchies: Vec<PathBuf>,
}

impl Cgroups {
    /// Finds the hierarchies under `root` (normally /sys/fs/cgroup).
    ///
    /// On a pure cgroup2 host `root` itself is the one hierarchy. On a v1 or
    /// hybrid host every directory below it is one (symlinks such as
    /// `cpu,cpuacct -> cpu` are skipped so nothing is visited twice).
    pub fn detect(root: &Path) -> Result<Self, CgroupError> {
        let detect_err = |source| CgroupError::Detect {
            root: root.to_path_buf(),
            source,
        };
        if root.join("cgroup.controllers").exists() {
            return Ok(Cgroups {
                hierarchies: vec![root.to_path_buf()],
            });
        }
        let mut hierarchies = Vec::new();
        for entry in std::fs::read_dir(root).map_err(detect_err)? {
            let entry = entry.map_err(detect_err)?;
            if entry.file_type().map_err(detect_err)?.is_dir() {
                hierarchies.push(entry.path());
            }
        }
        hierarchies.sort();
        Ok(Cgroups { hierarchies })
    }

    /// The directory of `rel` in the cgroup2 hierarchy (the only one on a
    /// pure cgroup2 host, `unified/` on a hybrid one), if there is one. This is
    /// where cgroup-attached BPF programs (socket-level load balancing) go.
    pub fn cgroup2_dir(&self, rel: &str) -> Option<PathBuf> {
        self.hierarchies
            .iter()
            .find(|h| h.join("cgroup.controllers").exists())
            .map(|h| h.join(rel.trim_start_matches('/')))
    }

    /// Creates `rel` (e.g. `/weir-weir-node1/pod<uid>`) in every hierarchy.
    pub fn create(&self, rel: &str) -> Result<(), CgroupError> {
        for h in &self.hierarchies {
            let path = h.join(rel.trim_start_matches('/'));
            std::fs::create_dir_all(&path)
                .map_err(|source| CgroupError::Create { path, source })?;
        }
        Ok(())
    }

    /// Removes `rel` and any leftover children from every hierarchy. Missing is fine.
    pub fn remove(&self, rel: &str) -> Result<(), CgroupError> {
        for h in &self.hierarchies {
            rmdir_tree(&h.join(rel.trim_start_matches('/')))?;
        }
        Ok(())
    }
}

/// cgroup directories hold only kernel pseudo-files, which cannot be
/// unlinked: a cgroup is removed with rmdir(2), children first.
fn rmdir_tree(path: &Path) -> Result<(), CgroupError> {
    let remove_err = |source| CgroupError::Remove {
        path: path.to_path_buf(),
        source,
    };
    let entries = match std::fs::read_dir(path) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(remove_err(e)),
    };
    for entry in entries {
        let entry = entry.map_err(remove_err)?;
        if entry.file_type().map_err(remove_err)?.is_dir() {
            rmdir_tree(&entry.path())?;
        }
    }
    match std::fs::remove_dir(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(remove_err(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_and_removes_in_every_hierarchy() {
        let root = std::env::temp_dir().join(format!("wagent-cgroup-test-{}", std::process::id()));
        for h in ["cpu", "memory", "unified"] {
            std::fs::create_dir_all(root.join(h)).expect("fake hierarchy");
        }
        let cg = Cgroups::detect(&root).expect("detect");
        assert_eq!(
            cg.cgroup2_dir("/x"),
            None,
            "no cgroup2 among plain directories"
        );
        std::fs::write(root.join("unified/cgroup.controllers"), "").expect("mark cgroup2");
        assert_eq!(
            cg.cgroup2_dir("/weir-test"),
            Some(root.join("unified/weir-test"))
        );
        cg.create("/weir-test/podu1").expect("create");
        for h in ["cpu", "memory", "unified"] {
            assert!(root.join(h).join("weir-test/podu1").is_dir(), "{h}");
        }
        // A leftover child (as runc might leave) is removed too.
        std::fs::create_dir_all(root.join("cpu/weir-test/podu1/leftover")).expect("child");
        cg.remove("/weir-test/podu1").expect("remove");
        for h in ["cpu", "memory", "unified"] {
            assert!(!root.join(h).join("weir-test/podu1").exists(), "{h}");
            assert!(
                root.join(h).join("weir-test").is_dir(),
                "node parent stays: {h}"
            );
        }
        cg.remove("/weir-test/podu1")
            .expect("removing twice is fine");
        std::fs::remove_dir_all(&root).expect("cleanup");
    }

    #[test]
    #[ignore = "privileged: creates and removes cgroups under /sys/fs/cgroup (root)"]
    fn real_hierarchies() {
        let cg = Cgroups::detect(Path::new("/sys/fs/cgroup")).expect("detect");
        assert!(!cg.hierarchies.is_empty());
        let node = format!("/wagent-cgtest-{}", std::process::id());
        let pod = format!("{node}/podu1");
        cg.create(&pod).expect("create");
        for h in &cg.hierarchies {
            assert!(
                h.join(pod.trim_start_matches('/')).is_dir(),
                "{}",
                h.display()
            );
        }
        cg.remove(&pod).expect("remove pod");
        cg.remove(&node).expect("remove node parent");
        for h in &cg.hierarchies {
            assert!(
                !h.join(node.trim_start_matches('/')).exists(),
                "{}",
                h.display()
            );
        }
    }

    #[test]
    fn pure_cgroup2_root_is_one_hierarchy() {
        let root = std::env::temp_dir().join(format!("wagent-cgroup2-test-{}", std::process::id()));
        std::fs::create_dir_all(root.join("some.slice")).expect("dir");
        std::fs::write(root.join("cgroup.controllers"), "cpu memory").expect("file");
        let cg = Cgroups::detect(&root).expect("detect");
        assert_eq!(cg.hierarchies, vec![root.clone()]);
        std::fs::remove_dir_all(&root).expect("cleanup");
    }
}
