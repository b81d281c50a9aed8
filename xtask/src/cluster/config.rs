//! Configuration files of the cluster's daemons, rendered from the layout.

use std::path::Path;

use crate::layout::NodeLayout;

/// A docker-registry (distribution 2.8) configuration serving `storage` on 127.0.0.1:`port`.
/// No blob descriptor cache: several registry processes share one storage directory
/// (the host one receives pushes, the node ones serve pulls), so none may cache.
pub fn registry(storage: &Path, port: u16) -> String {
    format!(
        r#"version: 0.1
log:
  level: warn
  formatter: text
storage:
  filesystem:
    rootdirectory: {storage}
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:{port}
"#,
        storage = storage.display()
    )
}

/// containerd 1.6 configuration of one node: its own root, state, sockets and
/// runc root, so several containerds share the machine without seeing each other.
pub fn containerd(node: &NodeLayout, cni_bin_dir: &Path, sandbox_image: &str) -> String {
    format!(
        r#"# containerd of {name}, written by `cargo xtask up`.
version = 2
root = "{root}"
state = "{state}"
# Plugins that only log errors on this machine.
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs", "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
  address = "{sock}"

[ttrpc]
  address = "{sock}.ttrpc"

[plugins."io.containerd.internal.v1.opt"]
  path = "{root}/opt"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{sandbox_image}"
  # root here lacks CAP_SYS_RESOURCE: without this every sandbox fails to start.
  restrict_oom_score_adj = true
  # Pod netns mounts live under this node's state dir, not the shared /var/run/netns.
  netns_mounts_under_state_dir = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"

  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"

    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"

      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "{runc_root}"

  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{cni_bin}"
    conf_dir = "{cni_conf}"
    max_conf_num = 1
"#,
        name = node.name,
        root = node.containerd_root.display(),
        state = node.containerd_state.display(),
        sock = node.cri_socket.display(),
        runc_root = node.runc_root.display(),
        cni_bin = cni_bin_dir.display(),
        cni_conf = node.cni_conf_dir.display(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::Layout;

    #[test]
    fn containerd_config_is_per_node() {
        let l = Layout::new("weir").unwrap();
        let c = containerd(
            &l.node(2),
            Path::new("/var/lib/weir/weir/cni-bin"),
            "127.0.0.1:5000/weir/pause:v1",
        );
        for want in [
            r#"root = "/var/lib/weir/weir/node2/containerd""#,
            r#"state = "/run/weir/weir/node2/containerd""#,
            r#"address = "/run/weir/weir/node2/containerd.sock""#,
            r#"address = "/run/weir/weir/node2/containerd.sock.ttrpc""#,
            r#"Root = "/run/weir/weir/node2/runc""#,
            "restrict_oom_score_adj = true",
            "netns_mounts_under_state_dir = true",
            "SystemdCgroup = false",
            r#"bin_dir = "/var/lib/weir/weir/cni-bin""#,
            r#"conf_dir = "/var/lib/weir/weir/node2/cni/net.d""#,
            r#"sandbox_image = "127.0.0.1:5000/weir/pause:v1""#,
        ] {
            assert!(c.contains(want), "missing {want} in\n{c}");
        }
    }

    #[test]
    fn registry_config_listens_on_loopback_only() {
        let c = registry(Path::new("/var/lib/weir/weir/registry"), 5001);
        assert!(c.contains("addr: 127.0.0.1:5001"));
        assert!(c.contains("rootdirectory: /var/lib/weir/weir/registry"));
        assert!(
            !c.contains("cache"),
            "registries sharing storage must not cache"
        );
    }
}
