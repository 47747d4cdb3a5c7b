//! Leader election with a `coordination.k8s.io/v1` Lease, so two operator replicas run the
//! status controllers once while both serve the webhook and the gRPC APIs.
//!
//! [`decide`] is pure (the Lease as read, who we are, the time) and says what to do; the loop
//! writes with the Lease's resourceVersion, so of two replicas racing only one write wins.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use tokio::sync::watch;

/// What to do with the Lease.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// No Lease yet: create it, holding it.
    Create,
    /// We hold it: renew.
    Renew,
    /// The holder stopped renewing: take it over.
    TakeOver,
    /// Someone else holds it and renews: follow.
    Follow,
}

/// Decides from the Lease as read.
pub fn decide(lease: Option<&LeaseSpec>, me: &str, now: Timestamp, duration: Duration) -> Step {
    let Some(spec) = lease else { return Step::Create };
    if spec.holder_identity.as_deref() == Some(me) {
        return Step::Renew;
    }
    let held_for = spec.lease_duration_seconds.map_or(duration, |s| Duration::from_secs(s.max(1) as u64));
    let expired = match &spec.renew_time {
        Some(MicroTime(t)) => *t + SignedDuration::try_from(held_for).unwrap_or(SignedDuration::MAX) < now,
        None => true,
    };
    if spec.holder_identity.is_none() || expired { Step::TakeOver } else { Step::Follow }
}

/// The elector's settings.
#[derive(Clone, Debug)]
pub struct Elector {
    /// Namespace of the Lease.
    pub namespace: String,
    /// Name of the Lease.
    pub name: String,
    /// This replica (the pod name).
    pub identity: String,
    /// How long a holder that stopped renewing keeps the Lease.
    pub duration: Duration,
    /// How often to renew or retry.
    pub retry: Duration,
}

impl Elector {
    /// One round: read, decide, write. Returns whether we lead afterwards.
    pub async fn round(&self, api: &Api<Lease>, now: Timestamp) -> Result<bool, kube::Error> {
        let current = api.get_opt(&self.name).await?;
        let step = decide(current.as_ref().and_then(|l| l.spec.as_ref()), &self.identity, now, self.duration);
        let holding = |prev: Option<&LeaseSpec>, transition: bool| LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(self.duration.as_secs() as i32),
            renew_time: Some(MicroTime(now)),
            acquire_time: if transition { Some(MicroTime(now)) } else { prev.and_then(|p| p.acquire_time.clone()) },
            lease_transitions: Some(prev.and_then(|p| p.lease_transitions).unwrap_or(0) + i32::from(transition && prev.is_some())),
            ..Default::default()
        };
        let result = match (step, current) {
            (Step::Create, _) => {
                let lease = Lease {
                    metadata: ObjectMeta { name: Some(self.name.clone()), namespace: Some(self.namespace.clone()), ..Default::default() },
                    spec: Some(holding(None, true)),
                };
                api.create(&PostParams::default(), &lease).await.map(|_| true)
            }
            (Step::Follow, _) => Ok(false),
            (step, Some(mut lease)) => {
                lease.spec = Some(holding(lease.spec.as_ref(), step == Step::TakeOver));
                api.replace(&self.name, &PostParams::default(), &lease).await.map(|_| true)
            }
            (_, None) => Ok(false),
        };
        match result {
            // Another replica wrote first: it leads.
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            other => other,
        }
    }

    /// Runs forever, publishing leadership on `leading`.
    pub async fn run(self, client: Client, leading: watch::Sender<bool>) {
        let api: Api<Lease> = Api::namespaced(client, &self.namespace);
        // A round that hangs (a slow API server) must not keep us leading while another replica
        // takes the Lease over after `duration`: give it a third of that, then step down.
        let deadline = self.duration / 3;
        loop {
            let lead = match tokio::time::timeout(deadline, self.round(&api, Timestamp::now())).await {
                Ok(Ok(l)) => l,
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "leader election round failed; stepping down until it succeeds");
                    false
                }
                Err(_) => {
                    tracing::warn!(timeout = ?deadline, "leader election round timed out; stepping down until one succeeds");
                    false
                }
            };
            if *leading.borrow() != lead {
                tracing::info!(leader = lead, identity = %self.identity, "leadership changed");
                leading.send_replace(lead);
            }
            tokio::time::sleep(self.retry).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube_fake_client::ClientBuilder;

    fn spec(holder: &str, renewed: Timestamp) -> LeaseSpec {
        LeaseSpec { holder_identity: Some(holder.into()), renew_time: Some(MicroTime(renewed)), lease_duration_seconds: Some(15), ..Default::default() }
    }

    #[test]
    fn decisions_read_like_the_protocol() {
        let now = Timestamp::from_second(1_000_000).unwrap();
        let d = Duration::from_secs(15);
        let ago = |s: i64| now - SignedDuration::from_secs(s);
        assert_eq!(decide(None, "a", now, d), Step::Create, "no lease: create it");
        assert_eq!(decide(Some(&spec("a", ago(3))), "a", now, d), Step::Renew, "ours: renew");
        assert_eq!(decide(Some(&spec("b", ago(3))), "a", now, d), Step::Follow, "b renews: follow");
        assert_eq!(decide(Some(&spec("b", ago(16))), "a", now, d), Step::TakeOver, "b stopped renewing: take over");
        assert_eq!(decide(Some(&LeaseSpec::default()), "a", now, d), Step::TakeOver, "nobody holds it: take it");
    }

    #[tokio::test]
    async fn two_replicas_one_leader_and_failover() {
        let client = ClientBuilder::new().build().await.expect("fake client");
        let api: Api<Lease> = Api::namespaced(client, "trustmesh-system");
        let elector = |id: &str| Elector { namespace: "trustmesh-system".into(), name: "trustmesh-operator".into(), identity: id.into(), duration: Duration::from_secs(15), retry: Duration::from_secs(5) };
        let (a, b) = (elector("op-a"), elector("op-b"));
        let t0 = Timestamp::from_second(2_000_000).unwrap();
        assert!(a.round(&api, t0).await.unwrap(), "a creates the lease and leads");
        assert!(!b.round(&api, t0).await.unwrap(), "b follows");
        let t1 = t0 + SignedDuration::from_secs(5);
        assert!(a.round(&api, t1).await.unwrap(), "a renews");
        assert!(!b.round(&api, t1 + SignedDuration::from_secs(10)).await.unwrap(), "a renewed 10 s ago: b still follows");
        let t2 = t1 + SignedDuration::from_secs(16);
        assert!(b.round(&api, t2).await.unwrap(), "a stopped renewing: b takes over");
        assert!(!a.round(&api, t2).await.unwrap(), "a now follows");
        let lease = api.get("trustmesh-operator").await.unwrap().spec.unwrap();
        assert_eq!(lease.holder_identity.as_deref(), Some("op-b"));
        assert_eq!(lease.lease_transitions, Some(1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_leader_whose_round_hangs_steps_down() {
        // An API server that takes every request and never answers.
        let (svc, _handle) = tower_test::mock::pair::<http::Request<kube::client::Body>, http::Response<kube::client::Body>>();
        let client = Client::new(svc, "trustmesh-system");
        let (tx, mut rx) = watch::channel(true);
        let elector = Elector { namespace: "trustmesh-system".into(), name: "trustmesh".into(), identity: "a".into(), duration: Duration::from_secs(15), retry: Duration::from_secs(2) };
        tokio::spawn(elector.run(client, tx));
        let stepped_down = tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|leading| !*leading)).await;
        assert!(stepped_down.is_ok(), "a leader that cannot renew within a third of the lease duration must stop leading");
    }
}
