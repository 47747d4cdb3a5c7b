//! The pure part of sidecar injection: a pod and its namespace's facts in, a JSON patch (or the
//! reason there is none) out. No I/O, no Kubernetes client.
//!
//! What an injected pod gets, in this order in `spec.initContainers`:
//!
//! 1. `trustmesh-init` — `trustmesh-sidecar init` installs the iptables redirection (root with
//!    `NET_ADMIN` and `NET_RAW` only, every other capability dropped). It runs first, so every
//!    later container, including the pod's own init containers, is already intercepted.
//! 2. `trustmesh-sidecar` — `trustmesh-sidecar run --transparent`, a *native sidecar*
//!    (`restartPolicy: Always`, Kubernetes 1.29+): it starts before the pod's own init
//!    containers and app containers and stops after them. Its startup probe waits for `/ready`
//!    (certificate and first policy snapshot), so the app starts only once the mesh can carry
//!    its traffic.
//! 3. the pod's own init containers, unchanged.
//!
//! plus the volumes `trustmesh-token` (projected service-account token, audience `trustmesh`),
//! `trustmesh-bundle` (the trust bundle ConfigMap, key `ca.crt`) and `trustmesh-run` (a small
//! in-memory `/run` for the iptables lock file, since the init container's root file system is
//! read-only), rewritten health probes (see [`super::probes`]) and the annotation
//! `trustmesh.dev/status: injected`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, PatchOperation};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource, HTTPGetAction, KeyToPath, Pod,
    Probe, ProjectedVolumeSource, ResourceRequirements, SeccompProfile, SecurityContext, ServiceAccountTokenProjection,
    Volume, VolumeMount, VolumeProjection,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::Value;

use super::{
    ADMIN_PORT, BUNDLE_DIR, BUNDLE_KEY, BUNDLE_VOLUME, EXCLUDE_INBOUND_PORTS, EXCLUDE_OUTBOUND_CIDRS, EXCLUDE_OUTBOUND_PORTS,
    INBOUND_PORT, INCLUDE_INBOUND_PORTS, INCLUDE_OUTBOUND_PORTS, INIT_CONTAINER, OUTBOUND_PORT, PROBE_EXCLUDED_PORTS, RUN_VOLUME, SIDECAR_CONTAINER,
    STATUS, STATUS_INJECTED, TOKEN_AUDIENCE, TOKEN_DIR, TOKEN_PATH, TOKEN_VOLUME, probes,
};

/// Strict (mTLS required inbound) or permissive (plaintext callers accepted as `unauthenticated`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MtlsMode {
    /// Inbound connections must present a mesh certificate.
    #[default]
    Strict,
    /// The sidecar runs with `--permissive` (a migration aid).
    Permissive,
}

/// Mesh-wide injection settings (from the operator's configuration / Helm values).
#[derive(Debug, Clone, PartialEq)]
pub struct InjectConfig {
    /// Image with the `trustmesh-sidecar` binary (used for both injected containers).
    pub sidecar_image: String,
    /// `imagePullPolicy` of the injected containers (`None`: the cluster's default).
    pub image_pull_policy: Option<String>,
    /// The operator's gRPC address as the sidecar dials it, `host:port`
    /// (e.g. `trustmesh-operator.trustmesh-system.svc:15012`), passed as `--operator`.
    pub operator_address: String,
    /// The operator's SPIFFE ID, passed as `--operator-id`.
    pub operator_id: String,
    /// The mesh's trust domain (informational: the sidecar learns it from its SVID).
    pub trust_domain: String,
    /// Strict or permissive mTLS.
    pub mtls_mode: MtlsMode,
    /// The sidecar's uid and gid (1337); its own traffic is never redirected.
    pub proxy_uid: i64,
    /// Requests and limits of both injected containers.
    pub resources: ResourceRequirements,
    /// Lifetime of the projected service-account token (the kubelet renews it; minimum 600).
    pub token_expiration_seconds: i64,
    /// The ConfigMap (in the pod's namespace) holding the trust bundle under `ca.crt`.
    pub bundle_configmap: String,
    /// Also install the redirection with `ip6tables` (dual-stack / IPv6 clusters).
    pub ipv6: bool,
}

impl InjectConfig {
    /// Settings with the defaults for everything but what names this installation.
    pub fn new(sidecar_image: impl Into<String>, operator_address: impl Into<String>, operator_id: impl Into<String>, trust_domain: impl Into<String>) -> Self {
        Self {
            sidecar_image: sidecar_image.into(),
            image_pull_policy: None,
            operator_address: operator_address.into(),
            operator_id: operator_id.into(),
            trust_domain: trust_domain.into(),
            mtls_mode: MtlsMode::Strict,
            proxy_uid: 1337,
            resources: default_resources(),
            token_expiration_seconds: 3600,
            bundle_configmap: "trustmesh-ca-bundle".into(),
            ipv6: false,
        }
    }
}

/// Requests 50m CPU / 64Mi, limit 256Mi memory (no CPU limit: throttling a proxy hurts latency).
pub fn default_resources() -> ResourceRequirements {
    let q = |s: &str| Quantity(s.to_owned());
    ResourceRequirements {
        requests: Some(BTreeMap::from([("cpu".to_owned(), q("50m")), ("memory".to_owned(), q("64Mi"))])),
        limits: Some(BTreeMap::from([("memory".to_owned(), q("256Mi"))])),
        ..ResourceRequirements::default()
    }
}

/// Everything [`inject`] needs besides the pod.
#[derive(Debug, Clone, PartialEq)]
pub struct InjectionContext {
    /// The pod's namespace (from the AdmissionRequest).
    pub namespace: String,
    /// The namespace's labels, or `None` when the operator's namespace cache does not know the
    /// namespace (yet). A pod that would need them to decide is then denied (it is retried by
    /// its controller) rather than silently left out of the mesh.
    pub namespace_labels: Option<BTreeMap<String, String>>,
    /// The namespace the operator runs in (never injected).
    pub operator_namespace: String,
    /// Mesh-wide settings.
    pub config: InjectConfig,
}

/// The outcome for one pod.
#[derive(Debug, Clone, PartialEq)]
pub enum Injection {
    /// Leave the pod alone, for this reason.
    Skip(&'static str),
    /// Apply this patch (RFC 6902, against the pod as submitted).
    Patch {
        /// The operations.
        ops: Vec<PatchOperation>,
        /// Things the pod's author should know (returned as admission warnings).
        warnings: Vec<String>,
    },
}

/// Why a pod that asked for the mesh cannot join it. The webhook denies the pod with this message.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum InjectError {
    /// An annotation value trustmesh cannot use.
    #[error("annotation {annotation}: {value:?} is not valid: {reason}; {fix}")]
    InvalidAnnotation {
        /// The annotation key.
        annotation: &'static str,
        /// Its value.
        value: String,
        /// What is wrong.
        reason: String,
        /// How to write it.
        fix: &'static str,
    },
    /// The pod already uses a name the injection adds.
    #[error("the pod already has a {kind} named {name:?}, a name trustmesh injects; rename it or set annotation trustmesh.dev/inject: disabled")]
    NameConflict {
        /// `container` or `volume`.
        kind: &'static str,
        /// The name.
        name: String,
    },
    /// A container declares one of the sidecar's ports.
    #[error("container {container:?} declares port {port}, which the trustmesh sidecar uses (15001, 15006, 15020); use another port or set annotation trustmesh.dev/inject: disabled")]
    PortConflict {
        /// The container.
        container: String,
        /// The port.
        port: i32,
    },
    /// A container would run as the sidecar's uid, whose traffic is never intercepted.
    #[error("container {container:?} runs as uid {uid}, the trustmesh sidecar's uid, so its traffic would bypass the mesh; run it as another uid")]
    ProxyUid {
        /// The container.
        container: String,
        /// The uid.
        uid: i64,
    },
    /// The namespace's labels are needed and not known yet.
    #[error("trustmesh does not know namespace {0:?} yet (its namespace cache is still syncing); try again, the pod's controller retries on its own")]
    NamespaceUnknown(String),
    /// Building the patch failed (a bug).
    #[error("building the injection patch failed: {0}")]
    Internal(String),
}

const NS_OPT_IN: &str = "enabled";

/// Decides whether and how to inject `pod`. Pure: same input, same output.
pub fn inject(pod: &Pod, ctx: &InjectionContext) -> Result<Injection, InjectError> {
    if ctx.namespace == "kube-system" {
        return Ok(Injection::Skip("kube-system is never injected"));
    }
    if ctx.namespace == ctx.operator_namespace {
        return Ok(Injection::Skip("the operator's namespace is never injected"));
    }
    let annotations = pod.metadata.annotations.as_ref();
    let annotation = |k: &str| annotations.and_then(|a| a.get(k)).map(String::as_str);
    let spec = pod.spec.as_ref();
    let init_containers = spec.and_then(|s| s.init_containers.as_deref()).unwrap_or_default();
    if annotation(STATUS) == Some(STATUS_INJECTED) || init_containers.iter().any(|c| c.name == SIDECAR_CONTAINER) {
        return Ok(Injection::Skip("already injected"));
    }
    // The pod's own choice: annotation, or label (the chart's webhook selects opted-in pods by label).
    let label = pod.metadata.labels.as_ref().and_then(|l| l.get(trustmesh_api::labels::INJECT)).map(String::as_str);
    match annotation(trustmesh_api::labels::INJECT).or(label) {
        Some("disabled") => return Ok(Injection::Skip("disabled by pod annotation or label trustmesh.dev/inject")),
        Some("enabled") => {}
        Some(other) => {
            return Err(InjectError::InvalidAnnotation {
                annotation: trustmesh_api::labels::INJECT,
                value: other.to_owned(),
                reason: "expected enabled or disabled".into(),
                fix: "write trustmesh.dev/inject: enabled (or disabled)",
            });
        }
        None => match &ctx.namespace_labels {
            None => return Err(InjectError::NamespaceUnknown(ctx.namespace.clone())),
            Some(labels) if labels.get(trustmesh_api::labels::INJECT).map(String::as_str) == Some(NS_OPT_IN) => {}
            Some(_) => return Ok(Injection::Skip("not opted in (namespace label or pod annotation trustmesh.dev/inject=enabled)")),
        },
    }
    let Some(spec) = spec else { return Ok(Injection::Skip("the pod has no spec")) };
    if spec.host_network == Some(true) {
        return Ok(Injection::Skip("hostNetwork pod: it shares the node's network namespace, so the sidecar cannot intercept its traffic"));
    }
    check_conflicts(pod, &ctx.config)?;
    let interception = Interception::from_annotations(|k| annotation(k))?;
    let probes = probes::plan(spec);
    build(pod, &ctx.config, &interception, probes)
}

fn check_conflicts(pod: &Pod, cfg: &InjectConfig) -> Result<(), InjectError> {
    let Some(spec) = &pod.spec else { return Ok(()) };
    let all = || spec.containers.iter().chain(spec.init_containers.iter().flatten());
    let pod_uid = spec.security_context.as_ref().and_then(|s| s.run_as_user);
    for c in all() {
        if c.name == INIT_CONTAINER || c.name == SIDECAR_CONTAINER {
            return Err(InjectError::NameConflict { kind: "container", name: c.name.clone() });
        }
        if let Some(p) = c.ports.iter().flatten().find(|p| [i32::from(INBOUND_PORT), i32::from(OUTBOUND_PORT), i32::from(ADMIN_PORT)].contains(&p.container_port)) {
            return Err(InjectError::PortConflict { container: c.name.clone(), port: p.container_port });
        }
        let uid = c.security_context.as_ref().and_then(|s| s.run_as_user).or(pod_uid);
        if uid == Some(cfg.proxy_uid) {
            return Err(InjectError::ProxyUid { container: c.name.clone(), uid: cfg.proxy_uid });
        }
    }
    for v in spec.volumes.iter().flatten() {
        if [TOKEN_VOLUME, BUNDLE_VOLUME, RUN_VOLUME].contains(&v.name.as_str()) {
            return Err(InjectError::NameConflict { kind: "volume", name: v.name.clone() });
        }
    }
    Ok(())
}

/// The pod's interception settings from its annotations, validated and normalized.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Interception {
    include_inbound: Option<String>,
    include_outbound: Option<String>,
    exclude_inbound: BTreeSet<u16>,
    exclude_outbound: BTreeSet<u16>,
    exclude_cidrs: Vec<String>,
}

const PORTS_FIX: &str = "use a comma-separated list of port numbers such as \"9090,9091\"";

impl Interception {
    fn from_annotations<'a>(get: impl Fn(&str) -> Option<&'a str>) -> Result<Self, InjectError> {
        let mut me = Self::default();
        let include = |annotation: &'static str, v: &str| -> Result<String, InjectError> {
            if v.trim() == "*" {
                return Ok("*".to_owned());
            }
            Ok(join(&ports(annotation, v, "use \"*\" for every port or a comma-separated list such as \"8080,8443\"")?))
        };
        if let Some(v) = get(INCLUDE_INBOUND_PORTS) {
            me.include_inbound = Some(include(INCLUDE_INBOUND_PORTS, v)?);
        }
        if let Some(v) = get(INCLUDE_OUTBOUND_PORTS) {
            me.include_outbound = Some(include(INCLUDE_OUTBOUND_PORTS, v)?);
        }
        if let Some(v) = get(EXCLUDE_INBOUND_PORTS) {
            me.exclude_inbound = ports(EXCLUDE_INBOUND_PORTS, v, PORTS_FIX)?;
        }
        if let Some(v) = get(EXCLUDE_OUTBOUND_PORTS) {
            me.exclude_outbound = ports(EXCLUDE_OUTBOUND_PORTS, v, PORTS_FIX)?;
        }
        if let Some(v) = get(EXCLUDE_OUTBOUND_CIDRS) {
            for item in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                let cidr = cidr(item).map_err(|reason| InjectError::InvalidAnnotation {
                    annotation: EXCLUDE_OUTBOUND_CIDRS,
                    value: v.to_owned(),
                    reason: format!("{item:?} {reason}"),
                    fix: "use a comma-separated list of CIDRs such as \"10.0.0.0/8,169.254.169.254/32\"",
                })?;
                if !me.exclude_cidrs.contains(&cidr) {
                    me.exclude_cidrs.push(cidr);
                }
            }
        }
        Ok(me)
    }
}

fn ports(annotation: &'static str, value: &str, fix: &'static str) -> Result<BTreeSet<u16>, InjectError> {
    let bad = |reason: String| InjectError::InvalidAnnotation { annotation, value: value.to_owned(), reason, fix };
    let mut out = BTreeSet::new();
    for item in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        match item.parse::<u16>() {
            Ok(0) => return Err(bad("port 0 cannot be used".into())),
            Ok(p) => {
                out.insert(p);
            }
            Err(_) => return Err(bad(format!("{item:?} is not a port number between 1 and 65535"))),
        }
    }
    Ok(out)
}

/// Validates a CIDR like `trustmesh-sidecar init` does and normalizes it (`ADDR/LEN`).
fn cidr(s: &str) -> Result<String, &'static str> {
    let (addr, prefix) = s.split_once('/').map_or((s, None), |(a, p)| (a, Some(p)));
    let ip: IpAddr = addr.parse().map_err(|_| "is not an IPv4 or IPv6 address")?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let len = match prefix {
        None => max,
        Some(p) => p.parse::<u8>().ok().filter(|l| *l <= max).ok_or("has a prefix length out of range")?,
    };
    Ok(format!("{ip}/{len}"))
}

fn join(ports: &BTreeSet<u16>) -> String {
    ports.iter().map(u16::to_string).collect::<Vec<_>>().join(",")
}

fn build(pod: &Pod, cfg: &InjectConfig, icpt: &Interception, probes: probes::ProbePlan) -> Result<Injection, InjectError> {
    let spec = pod.spec.as_ref().ok_or_else(|| InjectError::Internal("no spec".into()))?;
    let mut ops = probes.ops;

    let init = to_value(&init_container(cfg, icpt, &probes.excluded_inbound_ports))?;
    let sidecar = to_value(&sidecar_container(cfg, &probes.probe_paths))?;
    if spec.init_containers.is_some() {
        ops.push(add(&["spec", "initContainers", "0"], init));
        ops.push(add(&["spec", "initContainers", "1"], sidecar));
    } else {
        ops.push(add(&["spec", "initContainers"], Value::Array(vec![init, sidecar])));
    }

    let volumes = volumes(cfg).iter().map(to_value).collect::<Result<Vec<_>, _>>()?;
    if spec.volumes.is_some() {
        ops.extend(volumes.into_iter().map(|v| add(&["spec", "volumes", "-"], v)));
    } else {
        ops.push(add(&["spec", "volumes"], Value::Array(volumes)));
    }

    let mut new_annotations = vec![(STATUS, STATUS_INJECTED.to_owned())];
    if !probes.excluded_inbound_ports.is_empty() {
        new_annotations.push((PROBE_EXCLUDED_PORTS, join(&probes.excluded_inbound_ports)));
    }
    if pod.metadata.annotations.is_some() {
        ops.extend(new_annotations.into_iter().map(|(k, v)| add(&["metadata", "annotations", k], Value::String(v))));
    } else {
        let map = new_annotations.into_iter().map(|(k, v)| (k.to_owned(), Value::String(v))).collect();
        ops.push(add(&["metadata", "annotations"], Value::Object(map)));
    }
    Ok(Injection::Patch { ops, warnings: probes.warnings })
}

/// `add` at the path made of these (unescaped) tokens; `/` and `~` in them are escaped.
fn add(tokens: &[&str], value: Value) -> PatchOperation {
    PatchOperation::Add(AddOperation { path: PointerBuf::from_tokens(tokens.iter().copied()), value })
}

fn to_value<T: serde::Serialize>(v: &T) -> Result<Value, InjectError> {
    serde_json::to_value(v).map_err(|e| InjectError::Internal(e.to_string()))
}

fn init_container(cfg: &InjectConfig, icpt: &Interception, probe_excluded: &BTreeSet<u16>) -> Container {
    let mut args = vec!["init".to_owned(), "--proxy-uid".to_owned(), cfg.proxy_uid.to_string()];
    if let Some(include) = &icpt.include_inbound {
        args.extend(["--inbound-ports".to_owned(), include.clone()]);
    }
    if let Some(include) = &icpt.include_outbound {
        args.extend(["--outbound-ports".to_owned(), include.clone()]);
    }
    let exclude_inbound: BTreeSet<u16> = icpt.exclude_inbound.union(probe_excluded).copied().collect();
    if !exclude_inbound.is_empty() {
        args.extend(["--exclude-inbound-ports".to_owned(), join(&exclude_inbound)]);
    }
    if !icpt.exclude_outbound.is_empty() {
        args.extend(["--exclude-outbound-ports".to_owned(), join(&icpt.exclude_outbound)]);
    }
    if !icpt.exclude_cidrs.is_empty() {
        args.extend(["--exclude-outbound-cidrs".to_owned(), icpt.exclude_cidrs.join(",")]);
    }
    if cfg.ipv6 {
        args.push("--ipv6".to_owned());
    }
    Container {
        name: INIT_CONTAINER.to_owned(),
        image: Some(cfg.sidecar_image.clone()),
        image_pull_policy: cfg.image_pull_policy.clone(),
        args: Some(args),
        resources: Some(cfg.resources.clone()),
        security_context: Some(SecurityContext {
            run_as_user: Some(0),
            run_as_group: Some(0),
            run_as_non_root: Some(false),
            privileged: Some(false),
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            capabilities: Some(Capabilities {
                add: Some(vec!["NET_ADMIN".into(), "NET_RAW".into()]),
                drop: Some(vec!["ALL".into()]),
            }),
            ..SecurityContext::default()
        }),
        volume_mounts: Some(vec![VolumeMount { name: RUN_VOLUME.into(), mount_path: "/run".into(), ..VolumeMount::default() }]),
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        ..Container::default()
    }
}

fn sidecar_container(cfg: &InjectConfig, probe_paths: &BTreeSet<String>) -> Container {
    let mut args: Vec<String> = [
        "run",
        "--transparent",
        "--operator",
        &cfg.operator_address,
        "--bundle",
        &format!("{BUNDLE_DIR}/{BUNDLE_KEY}"),
        "--sa-token-file",
        &format!("{TOKEN_DIR}/{TOKEN_PATH}"),
        "--operator-id",
        &cfg.operator_id,
        "--admin",
        &format!("0.0.0.0:{ADMIN_PORT}"),
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    for probe in probe_paths {
        args.extend(["--probe-path".to_owned(), probe.clone()]);
    }
    if cfg.mtls_mode == MtlsMode::Permissive {
        args.push("--permissive".to_owned());
    }
    if cfg.ipv6 {
        // The init container redirects IPv6 too: listen where those connections arrive.
        args.push("--ipv6".to_owned());
    }
    let http = |path: &str, period: i32, failures: i32| Probe {
        http_get: Some(HTTPGetAction { path: Some(path.to_owned()), port: IntOrString::Int(ADMIN_PORT.into()), scheme: Some("HTTP".into()), ..HTTPGetAction::default() }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        timeout_seconds: Some(3),
        ..Probe::default()
    };
    Container {
        name: SIDECAR_CONTAINER.to_owned(),
        image: Some(cfg.sidecar_image.clone()),
        image_pull_policy: cfg.image_pull_policy.clone(),
        args: Some(args),
        restart_policy: Some("Always".into()),
        ports: Some(vec![ContainerPort { name: Some("trustmesh-admin".into()), container_port: ADMIN_PORT.into(), protocol: Some("TCP".into()), ..ContainerPort::default() }]),
        // The app starts once the sidecar has its certificate and first snapshot (up to 5 min).
        startup_probe: Some(http("/ready", 1, 300)),
        readiness_probe: Some(http("/ready", 5, 3)),
        liveness_probe: Some(http("/live", 10, 3)),
        resources: Some(cfg.resources.clone()),
        security_context: Some(SecurityContext {
            run_as_user: Some(cfg.proxy_uid),
            run_as_group: Some(cfg.proxy_uid),
            run_as_non_root: Some(true),
            privileged: Some(false),
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            capabilities: Some(Capabilities { drop: Some(vec!["ALL".into()]), ..Capabilities::default() }),
            seccomp_profile: Some(SeccompProfile { type_: "RuntimeDefault".into(), ..SeccompProfile::default() }),
            ..SecurityContext::default()
        }),
        volume_mounts: Some(vec![
            VolumeMount { name: TOKEN_VOLUME.into(), mount_path: TOKEN_DIR.into(), read_only: Some(true), ..VolumeMount::default() },
            VolumeMount { name: BUNDLE_VOLUME.into(), mount_path: BUNDLE_DIR.into(), read_only: Some(true), ..VolumeMount::default() },
        ]),
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        ..Container::default()
    }
}

fn volumes(cfg: &InjectConfig) -> [Volume; 3] {
    [
        Volume {
            name: TOKEN_VOLUME.into(),
            projected: Some(ProjectedVolumeSource {
                sources: Some(vec![VolumeProjection {
                    service_account_token: Some(ServiceAccountTokenProjection {
                        audience: Some(TOKEN_AUDIENCE.into()),
                        expiration_seconds: Some(cfg.token_expiration_seconds),
                        path: TOKEN_PATH.into(),
                    }),
                    ..VolumeProjection::default()
                }]),
                ..ProjectedVolumeSource::default()
            }),
            ..Volume::default()
        },
        Volume {
            name: BUNDLE_VOLUME.into(),
            config_map: Some(ConfigMapVolumeSource {
                name: cfg.bundle_configmap.clone(),
                items: Some(vec![KeyToPath { key: BUNDLE_KEY.into(), path: BUNDLE_KEY.into(), ..KeyToPath::default() }]),
                ..ConfigMapVolumeSource::default()
            }),
            ..Volume::default()
        },
        Volume {
            name: RUN_VOLUME.into(),
            empty_dir: Some(EmptyDirVolumeSource { medium: Some("Memory".into()), size_limit: Some(Quantity("1Mi".into())) }),
            ..Volume::default()
        },
    ]
}
