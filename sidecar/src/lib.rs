//! trustmesh-sidecar: the data plane beside each workload.
//!
//! One request's path: [`inbound`] accepts, terminates mTLS and identifies the caller, detects
//! HTTP, normalizes the path, asks the policy engine (`trustmesh-core`) with the snapshot in force
//! ([`state`]) and forwards to the app or answers 403; [`outbound`] takes the app's connections
//! and originates mTLS to meshed destinations, checking the server's SPIFFE ID. [`identity`] keeps
//! the certificate fresh; [`admin`], [`metrics`] and [`accesslog`] make every decision visible.

pub mod accesslog;
pub mod admin;
pub mod config_stream;
pub mod control;
pub mod identity;
pub mod inbound;
pub mod io;
pub mod iptables;
pub mod metrics;
pub mod orig_dst;
pub mod outbound;
pub mod proxy;
pub mod run;
pub mod state;
pub mod upgrade;
pub mod svid_files;
