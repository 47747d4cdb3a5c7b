//! Schema and CEL checks: what `kubectl apply` accepts and refuses, evaluated client-side with the
//! same CEL rules the apiserver runs.

use crate::*;
use kube::CustomResourceExt;
use serde_json::json;

fn wid(spec: serde_json::Value) -> Result<(), String> {
    let obj: WorkloadIdentity = serde_json::from_value(json!({
        "apiVersion": "trustmesh.dev/v1alpha1", "kind": "WorkloadIdentity",
        "metadata": {"name": "orders", "namespace": "shop"}, "spec": spec,
    }))
    .map_err(|e| format!("deserialize: {e}"))?;
    obj.validate_cel().map_err(|e| e.to_string())
}

fn acp(spec: serde_json::Value) -> Result<(), String> {
    let obj: AccessPolicy = serde_json::from_value(json!({
        "apiVersion": "trustmesh.dev/v1alpha1", "kind": "AccessPolicy",
        "metadata": {"name": "orders-callers", "namespace": "shop"}, "spec": spec,
    }))
    .map_err(|e| format!("deserialize: {e}"))?;
    obj.validate_cel().map_err(|e| e.to_string())
}

#[test]
fn workload_identity_ttl_bounds_are_enforced_by_cel() {
    assert_eq!(wid(json!({"serviceAccount": "orders"})), Ok(()), "default ttl 1h is valid");
    assert_eq!(wid(json!({"serviceAccount": "orders", "ttl": "30m"})), Ok(()));
    assert_eq!(wid(json!({"serviceAccount": "orders", "ttl": "24h"})), Ok(()));
    let too_short = wid(json!({"serviceAccount": "orders", "ttl": "1m"})).unwrap_err();
    assert!(too_short.contains("between 5m and 24h"), "{too_short}");
    assert!(wid(json!({"serviceAccount": "orders", "ttl": "25h"})).is_err());
}

#[test]
fn access_policy_source_must_name_exactly_one_caller_kind() {
    let ok = json!({"targetRef": {"name": "orders"}, "rules": [{"from": [{"identity": "frontend"}]}]});
    assert_eq!(acp(ok), Ok(()));
    let two = json!({"targetRef": {"name": "orders"},
        "rules": [{"from": [{"identity": "frontend", "spiffeId": "spiffe://td/x"}]}]});
    let e = acp(two).unwrap_err();
    assert!(e.contains("exactly one of identity, spiffeId or namespaceSelector"), "{e}");
    let none = json!({"targetRef": {"name": "orders"}, "rules": [{"from": [{}]}]});
    assert!(acp(none).is_err());
    let ns_alone = json!({"targetRef": {"name": "orders"},
        "rules": [{"from": [{"namespace": "web", "namespaceSelector": {}}]}]});
    let e = acp(ns_alone).unwrap_err();
    assert!(e.contains("qualifies identity"), "{e}");
}

#[test]
fn access_policy_destinations_must_say_something_and_paths_must_be_normalized() {
    let empty_to = json!({"targetRef": {"name": "orders"},
        "rules": [{"from": [{"identity": "frontend"}], "to": [{}]}]});
    assert!(acp(empty_to).unwrap_err().contains("at least one of ports, methods or paths"));
    for bad in ["/api//x", "/admin/../public", "/./x", "/a/.."] {
        let spec = json!({"targetRef": {"name": "orders"},
            "rules": [{"from": [{"identity": "frontend"}], "to": [{"paths": [bad]}]}]});
        assert!(acp(spec).unwrap_err().contains("normalized form"), "{bad} must be refused");
    }
    let good = json!({"targetRef": {"name": "orders"},
        "rules": [{"from": [{"identity": "frontend"}], "to": [{"ports": [8080], "methods": ["GET"], "paths": ["/api/*", "/healthz", "*", "/a.b/c..d"]}]}]});
    assert_eq!(acp(good), Ok(()));
}

#[test]
fn unknown_http_methods_do_not_even_deserialize() {
    let spec = json!({"targetRef": {"name": "orders"},
        "rules": [{"from": [{"identity": "frontend"}], "to": [{"methods": ["FETCH"]}]}]});
    assert!(acp(spec).unwrap_err().contains("unknown variant"));
}

#[test]
fn crds_carry_names_columns_status_and_schema_bounds() {
    let w = serde_json::to_value(WorkloadIdentity::crd()).unwrap();
    assert_eq!(w["spec"]["names"]["shortNames"], json!(["wid"]));
    assert_eq!(w["spec"]["names"]["categories"], json!(["trustmesh"]));
    let v = &w["spec"]["versions"][0];
    assert!(v["subresources"]["status"].is_object());
    let cols: Vec<_> = v["additionalPrinterColumns"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap().to_owned()).collect();
    assert_eq!(cols, ["SPIFFE ID", "Ready", "Suspended", "Pods", "TTL", "Age"]);
    let spec = &v["schema"]["openAPIV3Schema"]["properties"]["spec"];
    assert!(spec["properties"]["ttl"].get("default").is_none(), "the mesh default applies, not a schema default");
    assert_eq!(spec["required"], json!(["serviceAccount"]));
    assert!(spec["properties"]["serviceAccount"]["description"].as_str().unwrap().contains("SPIFFE ID"));
    let opaque = &spec["properties"]["opaquePorts"];
    assert_eq!((opaque["maxItems"].as_u64(), opaque["items"]["minimum"].as_f64(), opaque["items"]["maximum"].as_f64()), (Some(64), Some(1.0), Some(65535.0)));

    let a = serde_json::to_value(AccessPolicy::crd()).unwrap();
    assert_eq!(a["spec"]["names"]["shortNames"], json!(["acp"]));
    let s = &a["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
    assert_eq!(s["properties"]["rules"]["minItems"], json!(1));
    let to = &s["properties"]["rules"]["items"]["properties"]["to"]["items"]["properties"];
    assert_eq!(to["ports"]["items"]["minimum"].as_f64(), Some(1.0));
    assert_eq!(to["methods"]["items"]["enum"].as_array().unwrap().len(), 9);
}
