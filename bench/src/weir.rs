//! The weir variant (placeholder until the agent's datapath is a library).

use std::process::Child;

use anyhow::{Result, bail};

use crate::netns::Topology;

pub const CHANGE_METHOD: &str = "not available";

pub fn start(_topo: &Topology, _services: u32, _lifetime: &str) -> Result<(Child, f64)> {
    bail!("the weir variant needs weir-agent's datapath as a library")
}

pub fn set_services(_helper: &mut Child, _total: u32) -> Result<()> {
    bail!("the weir variant needs weir-agent's datapath as a library")
}
