//! The configuration snapshot a sidecar enforces: everything it needs for one workload, in one
//! value, replaced as a whole (a request always sees one consistent snapshot).
//!
//! The control plane streams it (`Config.Watch`); standalone sidecars read the same content from
//! a JSON file. No snapshot means no traffic (fail closed).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::policy::WorkloadPolicy;
use crate::spiffe::SpiffeId;

/// What happens to outbound connections to destinations the snapshot does not know. Users
/// write `open` or `locked` (namespace label, mesh settings); the snapshot says `allow`/`deny`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Egress {
    /// Pass them through unchanged (plain TCP).
    #[default]
    #[serde(alias = "open")]
    Allow,
    /// Refuse them (locked egress).
    #[serde(alias = "locked")]
    Deny,
}

impl std::str::FromStr for Egress {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "open" => Ok(Self::Allow),
            "locked" => Ok(Self::Deny),
            other => Err(format!("unknown egress mode {other:?}: use open or locked")),
        }
    }
}

/// A meshed destination: where it is and who must answer there (secure naming).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Destination {
    /// The identities allowed to serve at the address; the server must prove one of them.
    pub identities: BTreeSet<SpiffeId>,
}

/// Everything one sidecar enforces.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Snapshot {
    /// Opaque version, acknowledged back to the control plane and shown in logs and `/config`.
    pub version: String,
    /// Inbound policy of this workload (its `workload` is this sidecar's identity).
    pub inbound: WorkloadPolicy,
    /// Meshed destinations by address (`ip:port` as the app dials it).
    #[serde(default)]
    pub destinations: BTreeMap<SocketAddr, Destination>,
    /// Unknown destinations: allow (pass through) or deny.
    #[serde(default)]
    pub egress: Egress,
    /// Quarantined identities: refused as callers and as servers; open connections are closed.
    #[serde(default)]
    pub revoked: BTreeSet<SpiffeId>,
    /// Inbound ports that are opaque TCP (no protocol detection, authorized once per connection).
    #[serde(default)]
    pub opaque_ports: BTreeSet<u16>,
}

impl Snapshot {
    /// Whether `id` is quarantined.
    pub fn is_revoked(&self, id: &SpiffeId) -> bool {
        self.revoked.contains(id)
    }
}
