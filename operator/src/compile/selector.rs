//! Label selectors (`matchLabels` + `matchExpressions`), evaluated the way the apiserver does.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

/// Why a selector cannot be evaluated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    /// `operator` is not one of the four Kubernetes knows.
    #[error("matchExpressions[{index}].operator {operator:?} is unknown; use In, NotIn, Exists or DoesNotExist")]
    UnknownOperator {
        /// Position in `matchExpressions`.
        index: usize,
        /// The operator as written.
        operator: String,
    },
    /// `In`/`NotIn` without values, or `Exists`/`DoesNotExist` with values.
    #[error("matchExpressions[{index}] ({operator}) {problem}")]
    BadValues {
        /// Position in `matchExpressions`.
        index: usize,
        /// The operator.
        operator: String,
        /// What is wrong with `values`.
        problem: &'static str,
    },
}

/// Checks the selector once, so [`matches`] can assume it is well formed.
pub fn validate(selector: &LabelSelector) -> Result<(), SelectorError> {
    for (index, req) in selector.match_expressions.iter().flatten().enumerate() {
        let has_values = req.values.as_ref().is_some_and(|v| !v.is_empty());
        match (req.operator.as_str(), has_values) {
            ("In" | "NotIn", false) => {
                return Err(SelectorError::BadValues { index, operator: req.operator.clone(), problem: "needs at least one value" });
            }
            ("Exists" | "DoesNotExist", true) => {
                return Err(SelectorError::BadValues { index, operator: req.operator.clone(), problem: "takes no values; remove them" });
            }
            ("In" | "NotIn" | "Exists" | "DoesNotExist", _) => {}
            (other, _) => return Err(SelectorError::UnknownOperator { index, operator: other.to_owned() }),
        }
    }
    Ok(())
}

/// Whether `labels` satisfy the (validated) selector. An empty selector matches everything.
pub fn matches(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let by_labels = selector.match_labels.iter().flatten().all(|(k, v)| labels.get(k) == Some(v));
    by_labels
        && selector.match_expressions.iter().flatten().all(|req| {
            let value = labels.get(&req.key);
            let listed = |v: &String| req.values.iter().flatten().any(|x| x == v);
            match req.operator.as_str() {
                "In" => value.is_some_and(listed),
                "NotIn" => !value.is_some_and(listed),
                "Exists" => value.is_some(),
                "DoesNotExist" => value.is_none(),
                _ => false,
            }
        })
}

/// Whether the selector is `{}` (selects everything).
pub fn is_empty(selector: &LabelSelector) -> bool {
    selector.match_labels.as_ref().is_none_or(BTreeMap::is_empty) && selector.match_expressions.as_ref().is_none_or(Vec::is_empty)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn expr(key: &str, op: &str, values: &[&str]) -> LabelSelectorRequirement {
        LabelSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: if values.is_empty() { None } else { Some(values.iter().map(|v| v.to_string()).collect()) },
        }
    }

    #[test]
    fn selectors_match_like_the_apiserver() {
        let env_prod = labels(&[("env", "prod"), ("team", "pay")]);
        let sel = |l: &[(&str, &str)], e: Vec<LabelSelectorRequirement>| LabelSelector {
            match_labels: if l.is_empty() { None } else { Some(labels(l)) },
            match_expressions: if e.is_empty() { None } else { Some(e) },
        };
        assert!(matches(&sel(&[], vec![]), &env_prod), "{{}} selects everything");
        assert!(matches(&sel(&[("env", "prod")], vec![]), &env_prod));
        assert!(!matches(&sel(&[("env", "dev")], vec![]), &env_prod));
        assert!(matches(&sel(&[], vec![expr("env", "In", &["prod", "stage"])]), &env_prod));
        assert!(!matches(&sel(&[], vec![expr("env", "NotIn", &["prod"])]), &env_prod));
        assert!(matches(&sel(&[], vec![expr("tier", "NotIn", &["web"])]), &env_prod), "NotIn holds when the label is absent");
        assert!(matches(&sel(&[], vec![expr("team", "Exists", &[])]), &env_prod));
        assert!(!matches(&sel(&[], vec![expr("team", "DoesNotExist", &[])]), &env_prod));
        assert!(!matches(&sel(&[("env", "prod")], vec![expr("team", "In", &["web"])]), &env_prod), "all terms must hold");
    }

    #[test]
    fn malformed_selectors_are_named() {
        let s = LabelSelector { match_expressions: Some(vec![expr("a", "Equals", &["x"])]), match_labels: None };
        assert!(validate(&s).unwrap_err().to_string().contains("use In, NotIn, Exists or DoesNotExist"));
        let s = LabelSelector { match_expressions: Some(vec![expr("a", "In", &[])]), match_labels: None };
        assert!(validate(&s).unwrap_err().to_string().contains("needs at least one value"));
    }
}
