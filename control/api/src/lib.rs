//! weir's API types: the Kubernetes object schema (re-exported from `k8s-openapi`),
//! the registry of kinds weir serves, label/field selectors, validation, defaulting
//! and the pure allocators. This crate does no I/O.
#![forbid(unsafe_code)]

pub use k8s_openapi;

pub mod alloc;
pub mod cron;
pub mod defaults;
pub mod kinds;
pub mod selector;
pub mod validation;

pub use kinds::{KINDS, ResourceKind};
