//! The local cluster: `up`, `down`, `status`, `exec`.

pub mod cleanup;
pub mod config;
pub mod demo;
pub mod exec;
#[cfg(test)]
mod infra_tests;
#[cfg(test)]
mod lifecycle_tests;

/// Serialises the privileged tests that build a cluster: they share the
/// test-image build directory and would otherwise load 2 cores twice over.
#[cfg(test)]
pub(crate) static CLUSTER_TESTS: std::sync::Mutex<()> = std::sync::Mutex::new(());
pub mod procs;
pub mod state;
pub mod topology;
pub mod up;

use anyhow::Result;
use k8s_openapi::api::core::v1::{Node, Pod};

use crate::layout::Layout;
use state::ClusterState;

/// `cargo xtask status`: what runs, and what the API server says about nodes and pods.
pub fn status(layout: &Layout) -> Result<()> {
    let Some(state) = ClusterState::load(&layout.state_file())? else {
        println!(
            "cluster {:?}: not up (no {})",
            layout.name,
            layout.state_file().display()
        );
        return Ok(());
    };
    println!(
        "cluster {:?}: API server {}, registry {}, logs {}",
        state.name,
        state.server,
        state.registry,
        state.logs_dir.display()
    );
    println!("{:<22} {:>8}  {:<8} LOG", "PROCESS", "PID", "STATE");
    for p in &state.processes {
        let alive = if procs::is_alive(p) {
            "running"
        } else {
            "DEAD"
        };
        println!(
            "{:<22} {:>8}  {:<8} {}",
            p.name,
            p.pid,
            alive,
            p.log.display()
        );
    }
    let server = state.server.clone();
    let listed = up::block_on(async move {
        let c = weir_client::Client::connect(&server).await?;
        let nodes = c.list::<Node>("", &Default::default()).await?;
        let pods = c.list::<Pod>("", &Default::default()).await?;
        Ok::<_, weir_client::Error>((nodes.items, pods.items))
    })?;
    match listed {
        Ok((nodes, pods)) => {
            for n in &state.nodes {
                let ready = match up::node_readiness(&nodes, &n.name) {
                    Ok(()) => "Ready".to_string(),
                    Err(e) => e,
                };
                let on_node = pods
                    .iter()
                    .filter(|p| {
                        p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(&n.name)
                    })
                    .count();
                println!(
                    "node {:<8} {:<15} {:<24} pods: {on_node}",
                    n.name, n.ip, ready
                );
            }
        }
        Err(e) => println!("API server not answering: {e}"),
    }
    Ok(())
}
