//! Label and annotation names trustmesh reads or writes, in one place.

/// Namespace label that overrides the mesh-wide default action for one namespace
/// (`deny`, `audit` or `allow`), e.g. to pilot the mesh in audit mode.
pub const DEFAULT_POLICY_LABEL: &str = "trustmesh.dev/default-policy";
/// Namespace label that overrides the mesh-wide egress mode for one namespace: `locked` refuses
/// outbound connections to anything that is not a meshed destination, `open` passes them through.
pub const EGRESS_LABEL: &str = "trustmesh.dev/egress";
/// Namespace label (`enabled`) or pod annotation (`enabled` / `disabled`) that opts pods into
/// sidecar injection.
pub const INJECT: &str = "trustmesh.dev/inject";
/// Field manager name used for server-side apply of status and owned objects.
pub const FIELD_MANAGER: &str = "trustmesh-operator";
