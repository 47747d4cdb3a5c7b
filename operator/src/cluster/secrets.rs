//! The CA in a Secret, the trust bundle in every injected namespace, and the webhook's caBundle.

use std::collections::BTreeMap;

use base64::Engine;
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;
use trustmesh_api::labels::FIELD_MANAGER;
use trustmesh_core::spiffe::TrustDomain;

use crate::ca::CertificateAuthority;

/// Name of the ConfigMap holding the trust bundle (`ca.crt`) in each injected namespace.
pub const BUNDLE_CONFIGMAP: &str = "trustmesh-ca-bundle";

/// Why the CA or bundle could not be kept.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// A user-supplied CA Secret is missing.
    #[error("Secret {namespace}/{name} not found: create it with tls.crt, tls.key and ca.crt (cert-manager style), or unset ca.existingSecret to let the operator generate a root")]
    Missing {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
    },
    /// The Secret's contents are unusable.
    #[error("Secret {namespace}/{name}: {source}")]
    Invalid {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
        /// The CA's complaint (boxed: it is large and this path is rare).
        source: Box<crate::ca::CaError>,
    },
    /// An API call failed.
    #[error("{what}: {source}; check the operator's RBAC")]
    Api {
        /// What was attempted.
        what: String,
        /// The client error (boxed: it is large and this path is rare).
        source: Box<kube::Error>,
    },
}

/// Loads the CA from `namespace/name`, or generates a root and stores it there on first start.
/// Two replicas starting together race on the create; the loser reads the winner's root.
pub async fn load_or_create_ca(client: &Client, namespace: &str, name: &str, td: &TrustDomain, user_supplied: bool) -> Result<CertificateAuthority, SecretError> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let invalid = |source| SecretError::Invalid { namespace: namespace.into(), name: name.into(), source: Box::new(source) };
    let read = |s: Secret| -> Result<CertificateAuthority, SecretError> {
        let data: BTreeMap<String, Vec<u8>> = s.data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.0)).collect();
        CertificateAuthority::from_secret_data(&data, td).map_err(invalid)
    };
    let api_err = |what: &str| {
        let what = format!("{what} Secret {namespace}/{name}");
        move |source| SecretError::Api { what, source: Box::new(source) }
    };
    if let Some(s) = api.get_opt(name).await.map_err(api_err("reading"))? {
        return read(s);
    }
    if user_supplied {
        return Err(SecretError::Missing { namespace: namespace.into(), name: name.into() });
    }
    let ca = CertificateAuthority::generate(td).map_err(invalid)?;
    let secret = Secret {
        metadata: ObjectMeta { name: Some(name.into()), namespace: Some(namespace.into()), ..Default::default() },
        type_: Some("kubernetes.io/tls".into()),
        data: Some(ca.to_secret_data().into_iter().map(|(k, v)| (k, ByteString(v))).collect()),
        ..Default::default()
    };
    match api.create(&PostParams::default(), &secret).await {
        Ok(_) => {
            tracing::info!(secret = %format!("{namespace}/{name}"), "generated a new root CA");
            Ok(ca)
        }
        Err(kube::Error::Api(e)) if e.code == 409 => read(api.get(name).await.map_err(api_err("re-reading"))?),
        Err(e) => Err(api_err("creating")(e)),
    }
}

/// Keeps `trustmesh-ca-bundle` (key `ca.crt`) current in each namespace (server-side apply).
pub async fn publish_bundle(client: &Client, namespaces: &[String], bundle_pem: &str) -> Result<(), SecretError> {
    for ns in namespaces {
        let api: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
        let cm = json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": BUNDLE_CONFIGMAP, "namespace": ns, "labels": {"app.kubernetes.io/managed-by": "trustmesh"}},
            "data": {"ca.crt": bundle_pem},
        });
        api.patch(BUNDLE_CONFIGMAP, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&cm))
            .await
            .map_err(|source| SecretError::Api { what: format!("applying ConfigMap {ns}/{BUNDLE_CONFIGMAP}"), source: Box::new(source) })?;
    }
    Ok(())
}

/// Sets `clientConfig.caBundle` of every webhook in the MutatingWebhookConfiguration `name` to
/// the CA that signs the webhook's serving certificate. Returns false when it was already current.
pub async fn patch_webhook_ca(client: &Client, name: &str, bundle_pem: &str) -> Result<bool, SecretError> {
    let api: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let api_err = |what: &str| {
        let what = format!("{what} MutatingWebhookConfiguration {name}");
        move |source| SecretError::Api { what, source: Box::new(source) }
    };
    let current = api.get(name).await.map_err(api_err("reading"))?;
    let want = base64::engine::general_purpose::STANDARD.encode(bundle_pem);
    let webhooks = current.webhooks.unwrap_or_default();
    if webhooks.iter().all(|w| w.client_config.ca_bundle.as_ref().map(|b| base64::engine::general_purpose::STANDARD.encode(&b.0)) == Some(want.clone())) {
        return Ok(false);
    }
    let patch: Vec<_> = webhooks.iter().map(|w| json!({"name": w.name, "clientConfig": {"caBundle": want}})).collect();
    api.patch(name, &PatchParams::default(), &Patch::Strategic(json!({ "webhooks": patch })))
        .await
        .map_err(api_err("patching caBundle of"))?;
    Ok(true)
}
