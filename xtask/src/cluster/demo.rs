//! The demo workload `up` applies to the dev cluster, and the usage text.

use std::fs;

use anyhow::Result;
use k8s_openapi::api::core::v1::Service;

use super::state::ClusterState;
use super::up::block_on;
use crate::build::Binaries;
use crate::cmd::{self, step};
use crate::images::Image;
use crate::layout::{Layout, NODE_REGISTRY_PORT};

/// Three hostname pods behind a ClusterIP Service, and a client pod to call it from.
pub fn manifest() -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: hostname
  labels: {{app: hostname}}
spec:
  replicas: 3
  selector:
    matchLabels: {{app: hostname}}
  template:
    metadata:
      labels: {{app: hostname}}
    spec:
      terminationGracePeriodSeconds: 5
      containers:
      - name: hostname
        image: {hostname}
        ports:
        - containerPort: 8080
---
apiVersion: v1
kind: Service
metadata:
  name: hostname
spec:
  type: ClusterIP
  selector: {{app: hostname}}
  ports:
  - port: 80
    targetPort: 8080
---
apiVersion: v1
kind: Pod
metadata:
  name: client
  labels: {{app: client}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: client
    image: {client}
    command: ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"]
"#,
        hostname = Image::Hostname.reference(NODE_REGISTRY_PORT),
        client = Image::Client.reference(NODE_REGISTRY_PORT),
    )
}

pub fn apply(layout: &Layout, bins: &Binaries) -> Result<()> {
    step("applying the demo: Deployment hostname (3 pods), Service hostname, Pod client");
    let path = layout.state_dir().join("demo.yaml");
    fs::write(&path, manifest())?;
    cmd::run(
        cmd::cmd(&bins.cli().display().to_string(), ["apply", "-f"])
            .arg(&path)
            .env("WEIR_SERVER", layout.server_url()),
    )
}

/// How to use the cluster, printed at the end of `up`.
pub fn usage(state: &ClusterState, layout: &Layout, demo: bool) -> String {
    let name_flag = if layout.name == "weir" {
        String::new()
    } else {
        format!(" --name {}", layout.name)
    };
    let server_hint = if layout.name == "weir" {
        "(~/.weir/config.yaml points the CLI at it)".to_string()
    } else {
        format!("(export WEIR_SERVER={})", state.server)
    };
    let mut s = format!(
        "\nweir cluster {:?} is up: {} node(s), API server {} {server_hint}\n\n\
         \x20 export PATH={}:$PATH\n\
         \x20 weir get nodes\n\
         \x20 weir get pods -A\n\
         \x20 weir get svc\n",
        layout.name,
        state.nodes.len(),
        state.server,
        state.bin_dir.display(),
    );
    if demo {
        let ip = cluster_ip(&state.server, "hostname")
            .unwrap_or_else(|| "<CLUSTER-IP of svc/hostname>".into());
        s.push_str(&format!(
            "\n  # call the hostname Service from the client pod (each answer is the name of the pod that served it):\n\
             \x20 cargo xtask exec{name_flag} client -- wget -q -O - http://{ip}/\n"
        ));
    }
    s.push_str(&format!(
        "\n  images:  {} (push yours with skopeo --dest-tls-verify=false; pods pull 127.0.0.1:5000/...)\n\
         \x20 logs:    {}/ (control, etcd, containerd, agent, registries)\n\
         \x20 status:  cargo xtask status{name_flag}\n\
         \x20 stop:    cargo xtask down{name_flag}\n",
        state.registry,
        state.logs_dir.display(),
    ));
    s
}

fn cluster_ip(server: &str, svc: &str) -> Option<String> {
    block_on(async {
        let c = weir_client::Client::connect(server).await.ok()?;
        let s: Service = c.get("default", svc).await.ok()?;
        s.spec?.cluster_ip
    })
    .ok()
    .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_manifest_uses_the_node_registry_images() {
        let m = manifest();
        assert!(m.contains("image: 127.0.0.1:5000/weir/hostname:v1"));
        assert!(m.contains("image: 127.0.0.1:5000/weir/client:v1"));
        assert_eq!(m.matches("\n---\n").count(), 2, "three documents");
        assert!(m.contains("targetPort: 8080"));
    }
}
