//! Standard status conditions (`metav1.Condition`) and the condition types and reasons trustmesh uses.
//!
//! Controllers build conditions through [`set_condition`], which keeps `lastTransitionTime` when
//! only the message changes, so `kubectl describe` shows when a state really began.

pub use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

/// `WorkloadIdentity`: certificates can be issued for the identity's pods.
pub const READY: &str = "Ready";
/// `WorkloadIdentity`: the identity is quarantined (`spec.suspended: true`).
pub const SUSPENDED: &str = "Suspended";
/// `AccessPolicy`: the policy compiled and is distributed to the target's proxies.
pub const ACCEPTED: &str = "Accepted";
/// `AccessPolicy`: every caller named in `from` resolved to an identity.
pub const RESOLVED_REFS: &str = "ResolvedRefs";

/// Builds a condition with `status` `"True"` or `"False"`.
pub fn condition(type_: &str, ok: bool, reason: &str, message: impl Into<String>, generation: Option<i64>, now: Time) -> Condition {
    Condition {
        type_: type_.to_owned(),
        status: if ok { "True" } else { "False" }.to_owned(),
        reason: reason.to_owned(),
        message: message.into(),
        observed_generation: generation,
        last_transition_time: now,
    }
}

/// Inserts or replaces the condition of the same type, keeping the old `lastTransitionTime` when
/// the status did not change.
pub fn set_condition(conditions: &mut Vec<Condition>, mut new: Condition) {
    match conditions.iter_mut().find(|c| c.type_ == new.type_) {
        Some(old) => {
            if old.status == new.status {
                new.last_transition_time = old.last_transition_time.clone();
            }
            *old = new;
        }
        None => conditions.push(new),
    }
}

/// The condition of `type_`, if present.
pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;

    fn at(secs: i64) -> Time {
        Time(Timestamp::from_second(secs).expect("valid timestamp"))
    }

    #[test]
    fn transition_time_moves_only_when_status_changes() {
        let mut cs = vec![];
        set_condition(&mut cs, condition(READY, true, "Issuing", "ok", Some(1), at(10)));
        set_condition(&mut cs, condition(READY, true, "Issuing", "still ok", Some(2), at(20)));
        assert_eq!(cs.len(), 1);
        assert_eq!(cs[0].last_transition_time, at(10));
        assert_eq!(cs[0].message, "still ok");
        set_condition(&mut cs, condition(READY, false, "Suspended", "quarantined", Some(3), at(30)));
        assert_eq!(cs[0].last_transition_time, at(30));
        assert_eq!(find(&cs, READY).map(|c| c.status.as_str()), Some("False"));
    }
}
