//! Socket-level load balancing: attaching the cgroup v2 `connect4`,
//! `sendmsg4`, `recvmsg4` and `getpeername4` programs to the node's cgroup
//! subtree (see `ebpf/programs/src/sock.rs` for what they do).
//!
//! The attachments are bpf links pinned at `<bpffs_dir>/cgroup-links/<hook>`
//! (not under `links/`, which holds only pod veth links and is pruned by
//! their planner), so they outlive the agent. aya 0.14 cannot point a cgroup
//! link at a new program (no BPF_LINK_UPDATE for cgroup links), so a new agent
//! attaches its own programs next to the old ones (cgroup links always allow
//! several programs per hook) and
//! only then unpins the old links: there is never a moment without a
//! translating program, and while both run the second sees an already
//! translated address (a backend, not a frontend) and leaves it alone.
//!
//! Attaching per node cgroup subtree (not the cgroup root) is what keeps
//! several simulated nodes on one kernel from seeing each other's programs.

use std::fs::File;
use std::path::Path;

use aya::Ebpf;
use aya::programs::links::FdLink;
use aya::programs::{CgroupAttachMode, CgroupSockAddr};
use weir_ebpf_common::program_names;

use super::{DatapathError, program_mut};

/// Subdirectory of the bpffs directory holding the pinned cgroup links.
pub const CGROUP_LINKS_DIR: &str = "cgroup-links";

/// The socket hooks, in attach order.
pub const PROGRAMS: [&str; 4] = [
    program_names::SOCK_CONNECT4,
    program_names::SOCK_SENDMSG4,
    program_names::SOCK_RECVMSG4,
    program_names::SOCK_GETPEERNAME4,
];

/// The pinned cgroup links, one per program in [`PROGRAMS`] order.
#[derive(Debug)]
pub struct CgroupLinks {
    // Our handles; the pins keep the links alive after we drop them.
    _held: Vec<FdLink>,
}

/// Loads the socket programs into the kernel (attaching is separate).
pub fn load(ebpf: &mut Ebpf) -> Result<(), DatapathError> {
    for name in PROGRAMS {
        program_mut::<CgroupSockAddr>(ebpf, name)?
            .load()
            .map_err(|source| DatapathError::Program { name, source })?;
    }
    Ok(())
}

/// Attaches every socket program to the cgroup v2 directory `cgroup_dir` and
/// pins the links under `pin_dir/cgroup-links`, replacing (after the new
/// attach succeeded) links pinned there by a previous agent.
pub fn attach(
    ebpf: &mut Ebpf,
    cgroup_dir: &Path,
    pin_dir: &Path,
) -> Result<CgroupLinks, DatapathError> {
    let links_dir = pin_dir.join(CGROUP_LINKS_DIR);
    std::fs::create_dir_all(&links_dir).map_err(|source| DatapathError::PinDir {
        path: links_dir.clone(),
        source,
    })?;
    let mut held = Vec::with_capacity(PROGRAMS.len());
    for name in PROGRAMS {
        let attach_err = |source| DatapathError::AttachCgroup {
            program: name,
            cgroup: cgroup_dir.to_owned(),
            source,
        };
        // A fresh fd per attach: the kernel keeps its own reference to the cgroup.
        let cgroup = File::open(cgroup_dir).map_err(|source| DatapathError::Cgroup {
            path: cgroup_dir.to_owned(),
            source,
        })?;
        let program = program_mut::<CgroupSockAddr>(ebpf, name)?;
        // Mode flags must be 0 for bpf_link_create on a cgroup (EINVAL
        // otherwise); cgroup *links* always behave as BPF_F_ALLOW_MULTI.
        // (aya uses links on kernels >= 5.7; the pins below need them.)
        let id = program
            .attach(&cgroup, CgroupAttachMode::Single)
            .map_err(attach_err)?;
        let link = program.take_link(id).map_err(attach_err)?;
        let path = links_dir.join(name);
        let fd = FdLink::try_from(link).map_err(|source| DatapathError::Link {
            interface: cgroup_dir.display().to_string(),
            path: path.clone(),
            source,
        })?;
        // The previous agent's link (if any) goes only now that ours runs.
        replace_pin(&path)?;
        let pinned = fd.pin(&path).map_err(|source| DatapathError::PinLink {
            interface: cgroup_dir.display().to_string(),
            path: path.clone(),
            source,
        })?;
        held.push(FdLink::from(pinned));
    }
    tracing::info!(cgroup = %cgroup_dir.display(), "socket load balancing attached");
    Ok(CgroupLinks { _held: held })
}

/// Removes an old pin so the kernel frees (detaches) its link.
fn replace_pin(path: &Path) -> Result<(), DatapathError> {
    match std::fs::remove_file(path) {
        Ok(()) => {
            tracing::info!(pin = %path.display(), "replaced the socket program link of a previous agent");
            Ok(())
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(DatapathError::PinDir {
            path: path.to_owned(),
            source,
        }),
    }
}
