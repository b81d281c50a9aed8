//! The test images, built with umoci from Debian's busybox-static and pushed
//! with skopeo into the cluster's local registry.
//!
//! - `weir/hostname:v1`: answers `GET /` on :8080 with its hostname (the pod name).
//! - `weir/client:v1`: busybox with its applet links (sh, wget, nc, sleep, ...).
//! - `weir/pause:v1`: the sandbox process (xtask/images/pause.c, static).
//! - `weir/netpol:v1`: busybox plus `/netprobe` (xtask/images/netprobe.c,
//!   static): serves TCP and UDP on 80 and 81 answering with its identity,
//!   probes many TCP/UDP targets at once with a timeout, watches a target's
//!   reachability and generates connection load (the NetworkPolicy e2e
//!   suite and `cargo xtask bench policy`). The same binary is kept at
//!   `target/xtask/images/netprobe` for probes from a node's netns.
//!
//! Builds are cached by a hash of their inputs; pushes by a marker in the
//! registry storage, so a second `up` does neither.

use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::cmd::{self, cmd, info, step};
use crate::layout::fnv1a;

pub const TAG: &str = "v1";
const BUSYBOX: &str = "/bin/busybox";
/// Bumped when the recipe below changes in a way the inputs do not show.
const RECIPE_VERSION: &str = "weir-images-1";
const PATH_ENV: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// One image recipe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Image {
    Hostname,
    Client,
    Pause,
    Netpol,
}

impl Image {
    pub const ALL: [Image; 4] = [Image::Pause, Image::Hostname, Image::Client, Image::Netpol];

    pub fn name(self) -> &'static str {
        match self {
            Image::Hostname => "hostname",
            Image::Client => "client",
            Image::Pause => "pause",
            Image::Netpol => "netpol",
        }
    }

    /// The repository path in the registry, e.g. `weir/hostname`.
    pub fn repository(self) -> String {
        format!("weir/{}", self.name())
    }

    /// The reference pods use inside a node, e.g. `127.0.0.1:5000/weir/hostname:v1`.
    pub fn reference(self, registry_port: u16) -> String {
        format!("127.0.0.1:{registry_port}/{}:{TAG}", self.repository())
    }
}

/// An image built into an OCI layout on disk.
#[derive(Debug, Clone)]
pub struct Built {
    pub image: Image,
    pub layout: PathBuf,
    pub hash: String,
}

fn images_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| cmd::workspace_root().join("target"));
    target.join("xtask").join("images")
}

fn recipe_dir() -> PathBuf {
    cmd::workspace_root().join("xtask").join("images")
}

/// Hash of everything an image is made from.
fn inputs_hash(image: Image, busybox: &[u8], recipe_files: &[Vec<u8>]) -> String {
    let mut all = Vec::new();
    all.extend_from_slice(RECIPE_VERSION.as_bytes());
    all.extend_from_slice(image.name().as_bytes());
    if image != Image::Pause {
        all.extend_from_slice(busybox);
    }
    for f in recipe_files {
        all.extend_from_slice(&(f.len() as u64).to_le_bytes());
        all.extend_from_slice(f);
    }
    format!("{:016x}", fnv1a(&all))
}

/// Builds every image whose inputs changed since the last build.
pub fn build_all() -> Result<Vec<Built>> {
    step("building test images (umoci, busybox-static)");
    let busybox = fs::read(BUSYBOX).with_context(|| {
        format!("cannot read {BUSYBOX} (cargo xtask deps installs busybox-static)")
    })?;
    let dir = images_dir();
    fs::create_dir_all(&dir)?;
    let mut built = Vec::new();
    for image in Image::ALL {
        let recipe_files: Vec<Vec<u8>> = match image {
            Image::Pause => vec![fs::read(recipe_dir().join("pause.c"))?],
            Image::Hostname => vec![fs::read(recipe_dir().join("hostname-entrypoint.sh"))?],
            Image::Client => vec![],
            Image::Netpol => vec![fs::read(recipe_dir().join("netprobe.c"))?],
        };
        let hash = inputs_hash(image, &busybox, &recipe_files);
        let layout = dir.join(image.name());
        let hash_file = dir.join(format!("{}.hash", image.name()));
        if fs::read_to_string(&hash_file).is_ok_and(|h| h.trim() == hash)
            && layout.join("index.json").is_file()
            && (image != Image::Netpol || dir.join("netprobe").is_file())
        {
            info(format!("{}: up to date ({hash})", image.repository()));
        } else {
            build_one(image, &layout, &dir)?;
            fs::write(&hash_file, &hash)?;
            info(format!("{}: built ({hash})", image.repository()));
        }
        built.push(Built {
            image,
            layout,
            hash,
        });
    }
    Ok(built)
}

fn build_one(image: Image, layout: &Path, work: &Path) -> Result<()> {
    let bundle = work.join(format!("{}.bundle", image.name()));
    for p in [layout, bundle.as_path()] {
        if p.exists() {
            fs::remove_dir_all(p).with_context(|| format!("cannot remove {}", p.display()))?;
        }
    }
    let img = format!("{}:{TAG}", layout.display());
    cmd::run_quiet(cmd("umoci", ["init", "--layout"]).arg(layout))?;
    cmd::run_quiet(&mut cmd("umoci", ["new", "--image", &img]))?;
    cmd::run_quiet(cmd("umoci", ["unpack", "--image", &img]).arg(&bundle))?;
    let rootfs = bundle.join("rootfs");
    for d in ["bin", "etc", "tmp", "proc", "sys", "dev", "www"] {
        fs::create_dir_all(rootfs.join(d))?;
    }
    fs::set_permissions(rootfs.join("tmp"), fs::Permissions::from_mode(0o1777))?;
    let entrypoint: Vec<&str> = match image {
        Image::Pause => {
            let out = rootfs.join("pause");
            cmd::run_quiet(
                cmd("gcc", ["-static", "-Os", "-s", "-Wall", "-o"])
                    .arg(&out)
                    .arg(recipe_dir().join("pause.c")),
            )?;
            vec!["/pause"]
        }
        Image::Hostname => {
            install_busybox(&rootfs)?;
            let ep = rootfs.join("entrypoint.sh");
            fs::copy(recipe_dir().join("hostname-entrypoint.sh"), &ep)?;
            fs::set_permissions(&ep, fs::Permissions::from_mode(0o755))?;
            vec!["/entrypoint.sh"]
        }
        Image::Client => {
            install_busybox(&rootfs)?;
            vec![]
        }
        Image::Netpol => {
            install_busybox(&rootfs)?;
            let out = rootfs.join("netprobe");
            cmd::run_quiet(
                cmd("gcc", ["-static", "-O2", "-s", "-Wall", "-o"])
                    .arg(&out)
                    .arg(recipe_dir().join("netprobe.c")),
            )?;
            // For probes from a node's netns (the host runs it with nsenter).
            fs::copy(&out, work.join("netprobe"))?;
            vec![]
        }
    };
    cmd::run_quiet(cmd("umoci", ["repack", "--image", &img]).arg(&bundle))?;
    let mut config = cmd(
        "umoci",
        [
            "config",
            "--image",
            &img,
            "--config.env",
            PATH_ENV,
            "--config.workingdir",
            "/",
        ],
    );
    match entrypoint.first() {
        Some(ep) => config.args(["--config.entrypoint", ep]),
        // The client has no entrypoint: pods give a command, a bare run gets a shell.
        None => config.args(["--config.cmd", "/bin/sh"]),
    };
    cmd::run_quiet(&mut config)?;
    cmd::run_quiet(cmd("umoci", ["gc", "--layout"]).arg(layout))?;
    fs::remove_dir_all(&bundle)?;
    Ok(())
}

/// Copies busybox into /bin with a link per applet.
fn install_busybox(rootfs: &Path) -> Result<()> {
    let bin = rootfs.join("bin");
    fs::copy(BUSYBOX, bin.join("busybox"))?;
    let list = cmd::output(&mut cmd(BUSYBOX, ["--list"]))?;
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        let applet = applet.trim();
        if applet.is_empty() || applet == "busybox" || applet.contains('/') {
            continue;
        }
        let link = bin.join(applet);
        if !link.exists() {
            symlink("busybox", &link)?;
        }
    }
    Ok(())
}

/// Marker recording which build of an image the registry storage holds.
fn pushed_marker(storage: &Path, image: Image) -> PathBuf {
    storage
        .join("weir-pushed")
        .join(format!("{}.hash", image.name()))
}

/// Pushes the built images into the registry listening on 127.0.0.1:`port`
/// (whose storage is `storage`), skipping those already there.
pub fn push_all(built: &[Built], port: u16, storage: &Path) -> Result<()> {
    step(format!("pushing test images to 127.0.0.1:{port}"));
    for b in built {
        let marker = pushed_marker(storage, b.image);
        if fs::read_to_string(&marker).is_ok_and(|h| h.trim() == b.hash) {
            info(format!(
                "{}: already in the registry",
                b.image.reference(port)
            ));
            continue;
        }
        let src = format!("oci:{}:{TAG}", b.layout.display());
        let dst = format!("docker://{}", b.image.reference(port));
        cmd::run_quiet(&mut cmd(
            "skopeo",
            ["copy", "--quiet", "--dest-tls-verify=false", &src, &dst],
        ))?;
        if let Some(parent) = marker.parent() {
            fs::create_dir_all(parent)?;
        }
        fs::write(&marker, &b.hash)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_follow_the_contract() {
        assert_eq!(
            Image::Hostname.reference(5000),
            "127.0.0.1:5000/weir/hostname:v1"
        );
        assert_eq!(
            Image::Client.reference(5000),
            "127.0.0.1:5000/weir/client:v1"
        );
        assert_eq!(Image::Pause.reference(5000), "127.0.0.1:5000/weir/pause:v1");
        assert_eq!(
            Image::Netpol.reference(5000),
            "127.0.0.1:5000/weir/netpol:v1"
        );
    }

    #[test]
    fn hash_changes_with_each_input() {
        let base = inputs_hash(Image::Hostname, b"busybox", &[b"script".to_vec()]);
        assert_eq!(
            base,
            inputs_hash(Image::Hostname, b"busybox", &[b"script".to_vec()])
        );
        let variants = [
            inputs_hash(Image::Client, b"busybox", &[b"script".to_vec()]),
            inputs_hash(Image::Hostname, b"busybox2", &[b"script".to_vec()]),
            inputs_hash(Image::Hostname, b"busybox", &[b"script2".to_vec()]),
            inputs_hash(Image::Hostname, b"busybox", &[]),
        ];
        for v in variants {
            assert_ne!(base, v);
        }
        // The pause image does not contain busybox, so busybox updates do not rebuild it.
        assert_eq!(
            inputs_hash(Image::Pause, b"a", &[]),
            inputs_hash(Image::Pause, b"b", &[])
        );
    }
}
