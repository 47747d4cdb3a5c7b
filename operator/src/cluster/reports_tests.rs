//! Two replicas' reports through an in-memory API (kube-fake-client): the leader counts the
//! proxies connected to both, sums the certificates, and ignores a dead replica's report.

use kube_fake_client::ClientBuilder;

use super::*;

fn key(name: &str) -> ObjectKey {
    ObjectKey { namespace: "shop".into(), name: name.into() }
}

fn report(proxies: &[(&str, &str, Option<&str>, Option<&str>)], issued: &[(&str, i64)]) -> Report {
    let mut r = Report::default();
    for (identity, name, sent, acked) in proxies {
        let entry = ProxyEntry { name: (*name).into(), sent: sent.map(Into::into), acked: acked.map(Into::into) };
        r.proxies.entry(format!("shop/{identity}")).or_default().push(entry);
    }
    r.issued = issued.iter().map(|(i, n)| (format!("shop/{i}"), *n)).collect();
    r
}

#[tokio::test]
async fn the_leader_counts_every_replicas_proxies_and_ignores_stale_reports() {
    let client = ClientBuilder::new().with_resource::<Lease>().build().await.expect("fake client");
    // Replica a: two orders proxies (one behind on its acks). Replica b: one more, up to date.
    let a = report(&[("orders", "orders-1", Some("7"), Some("7")), ("orders", "orders-2", Some("7"), Some("6"))], &[("orders", 3)]);
    let b = report(&[("orders", "orders-3", Some("12"), Some("12"))], &[("orders", 2), ("payments", 1)]);
    publish(&client, "trustmesh-system", "op-a", &a).await.unwrap();
    publish(&client, "trustmesh-system", "op-b", &b).await.unwrap();
    // Writing again updates the same Lease.
    publish(&client, "trustmesh-system", "op-b", &b).await.unwrap();

    let now = Timestamp::now();
    let merged = collect(&client, "trustmesh-system", now).await.unwrap();
    let orders = &merged.proxies[&key("orders")];
    assert_eq!(orders.len(), 3);
    assert_eq!(orders.iter().filter(|p| p.acked.is_some() && p.acked == p.sent_version()).count(), 2, "enforcing: acked what its replica sent");
    assert_eq!((merged.issued[&key("orders")], merged.issued[&key("payments")]), (5, 1));

    // A minute later, with neither replica renewing, both reports are stale.
    let later = now + SignedDuration::from_secs(60);
    let merged = collect(&client, "trustmesh-system", later).await.unwrap();
    assert!(merged.proxies.is_empty() && merged.issued.is_empty());
}

#[test]
fn a_replicas_report_is_what_its_registry_and_counters_hold() {
    let registry = ProxyRegistry::default();
    let issued: IssuedCounts = Default::default();
    issued.lock().unwrap().insert(key("orders"), 4);
    let r = Report::of(&registry, &issued);
    assert!(r.proxies.is_empty());
    assert_eq!(r.issued["shop/orders"], 4);
}
