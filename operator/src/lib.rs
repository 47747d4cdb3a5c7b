//! trustmesh-operator: the control plane.
//!
//! - [`compile`]: resources -> per-workload compiled policy (pure).
//! - [`ca`]: the certificate authority that issues X.509-SVIDs.
//! - [`crdgen`]: the CustomResourceDefinitions as YAML, one document per CRD.
//!
//! The binary (`main.rs`) wires these to the command line.

pub mod ca;
pub mod cluster;
pub mod compile;
pub mod crdgen;
pub mod demo;
pub mod fsutil;
pub mod local;
pub mod metrics;
pub mod run;
pub mod server;
pub mod state;
pub mod webhook;
