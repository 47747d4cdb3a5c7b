//! The access log: one JSON line per decision, written by a background task so the request path
//! only formats a line and hands it over (never blocks on the output).
//!
//! Fields: `time`, `id` (also in the 403 response), `direction`, `src`, `dst`, `port`, `method`,
//! `path`, `decision`, `policy` (`namespace/name@generation`) and `rule`, or `default`, `mode`,
//! and `audit` ("would deny by ...") when audit rules or an audit default had an opinion.

use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use trustmesh_core::policy::{Decided, Decision};

/// One decision to log.
pub struct Entry<'a> {
    /// Request id (matches the 403 response's `x-trustmesh-request-id`).
    pub id: &'a str,
    /// `inbound` or `outbound`.
    pub direction: &'static str,
    /// Caller SPIFFE ID, or `unauthenticated`.
    pub src: &'a str,
    /// Callee SPIFFE ID or address.
    pub dst: &'a str,
    /// Destination port.
    pub port: u16,
    /// HTTP method and path (`None` for opaque TCP).
    pub http: Option<(&'a str, &'a str)>,
    /// What happened.
    pub outcome: Outcome<'a>,
}

/// What happened to a connection or request.
pub enum Outcome<'a> {
    /// The policy decided (inbound).
    Decided(&'a Decision<'a>),
    /// Refused before or without a policy decision (malformed path, revocation, locked egress,
    /// failed handshake, ...): `deny` plus why.
    Refused(&'a str),
    /// Let through without a policy decision (outbound: `meshed` or `passthrough`).
    Passed(&'a str),
}

/// Where access log lines go.
#[derive(Clone)]
pub struct AccessLog {
    tx: Option<std::sync::mpsc::SyncSender<String>>,
}

/// How often the writer drains and flushes: lines are batched instead of waking a thread per line.
const FLUSH_EVERY: std::time::Duration = std::time::Duration::from_millis(20);

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A short request id, unique within the process (`<pid hex>-<counter hex>`).
pub fn request_id() -> String {
    format!("{:x}-{:x}", std::process::id(), NEXT_ID.fetch_add(1, Ordering::Relaxed))
}

impl AccessLog {
    /// Logs to stdout through a background writer.
    pub fn stdout() -> Self {
        let (tx, rx) = std::sync::mpsc::sync_channel::<String>(65536);
        std::thread::spawn(move || {
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::with_capacity(64 * 1024, stdout.lock());
            loop {
                std::thread::sleep(FLUSH_EVERY);
                loop {
                    match rx.try_recv() {
                        Ok(line) => {
                            let _ = out.write_all(line.as_bytes());
                        }
                        Err(std::sync::mpsc::TryRecvError::Empty) => break,
                        Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                            let _ = out.flush();
                            return;
                        }
                    }
                }
                let _ = out.flush();
            }
        });
        Self { tx: Some(tx) }
    }

    /// Logs nothing.
    pub fn off() -> Self {
        Self { tx: None }
    }

    /// Formats and hands over one line (dropped, and counted by the caller, if the writer lags).
    pub fn log(&self, e: &Entry<'_>) -> bool {
        let Some(tx) = &self.tx else { return true };
        tx.try_send(format_line(e)).is_ok()
    }
}

/// The JSON line for an entry.
pub fn format_line(e: &Entry<'_>) -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let mut s = String::with_capacity(256);
    let _ = write!(s, "{{\"time\":{}.{:03},\"id\":", now.as_secs(), now.subsec_millis());
    json_str(&mut s, e.id);
    let _ = write!(s, ",\"direction\":\"{}\",\"src\":", e.direction);
    json_str(&mut s, e.src);
    s.push_str(",\"dst\":");
    json_str(&mut s, e.dst);
    let _ = write!(s, ",\"port\":{}", e.port);
    if let Some((method, path)) = e.http {
        s.push_str(",\"method\":");
        json_str(&mut s, method);
        s.push_str(",\"path\":");
        json_str(&mut s, path);
    }
    match e.outcome {
        Outcome::Decided(d) => {
            let _ = write!(s, ",\"decision\":\"{}\"", d.verdict.as_str());
            by(&mut s, "", &d.by);
            if let Some((would, who)) = &d.audit {
                let _ = write!(s, ",\"audit\":\"would {}\"", would.as_str());
                by(&mut s, "audit_", who);
            }
        }
        Outcome::Refused(reason) => {
            s.push_str(",\"decision\":\"deny\",\"reason\":");
            json_str(&mut s, reason);
        }
        Outcome::Passed(reason) => {
            s.push_str(",\"decision\":\"allow\",\"reason\":");
            json_str(&mut s, reason);
        }
    }
    s.push_str("}\n");
    s
}

fn by(s: &mut String, prefix: &str, d: &Decided<'_>) {
    match d {
        Decided::Rule { policy, rule_index } => {
            let _ = write!(s, ",\"{prefix}policy\":");
            json_str(s, &policy.to_string());
            // The decision itself is always an enforced rule's; an audit finding an audit rule's.
            let mode = if prefix.is_empty() { "enforce" } else { "audit" };
            if *rule_index == u32::MAX {
                let _ = write!(s, ",\"{prefix}rule\":\"rejected-policy-fail-closed\",\"{prefix}mode\":\"enforce\"");
            } else {
                let _ = write!(s, ",\"{prefix}rule\":{rule_index},\"{prefix}mode\":\"{mode}\"");
            }
        }
        Decided::Default(a) => {
            let mode = if a.as_str() == "audit" { "audit" } else { "enforce" };
            let _ = write!(s, ",\"{prefix}policy\":\"default\",\"{prefix}default_action\":\"{}\",\"{prefix}mode\":\"{mode}\"", a.as_str());
        }
    }
}

fn json_str(s: &mut String, v: &str) {
    s.push('"');
    for c in v.chars() {
        match c {
            '"' => s.push_str("\\\""),
            '\\' => s.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(s, "\\u{:04x}", c as u32);
            }
            c => s.push(c),
        }
    }
    s.push('"');
}

#[cfg(test)]
mod tests {
    use trustmesh_core::policy::{DefaultAction, PolicyRef, Verdict};

    use super::*;

    fn line(http: Option<(&str, &str)>, decision: &Decision<'_>) -> serde_json::Value {
        let e = Entry { id: "1-2", direction: "inbound", src: "spiffe://td/ns/a/sa/b", dst: "spiffe://td/ns/c/sa/d", port: 8080, http, outcome: Outcome::Decided(decision) };
        let text = format_line(&e);
        assert!(text.ends_with("}\n") && text.matches('\n').count() == 1, "one line: {text:?}");
        serde_json::from_str(&text).expect("valid JSON")
    }

    #[test]
    fn a_rule_decision_names_policy_rule_and_mode_and_the_audit_finding() {
        let policy = PolicyRef { namespace: "shop".into(), name: "orders-callers".into(), generation: 7 };
        let audit = PolicyRef { namespace: "shop".into(), name: "tighten\"it".into(), generation: 1 };
        let d = Decision {
            verdict: Verdict::Allow,
            by: Decided::Rule { policy: &policy, rule_index: 2 },
            audit: Some((Verdict::Deny, Decided::Rule { policy: &audit, rule_index: 0 })),
        };
        let v = line(Some(("GET", "/api/\"x\"")), &d);
        assert_eq!(v["path"], "/api/\"x\"", "quotes are escaped");
        assert_eq!((&v["decision"], &v["policy"], &v["rule"], &v["mode"]), (&"allow".into(), &"shop/orders-callers@7".into(), &2.into(), &"enforce".into()));
        assert_eq!((&v["audit"], &v["audit_policy"], &v["audit_mode"]), (&"would deny".into(), &"shop/tighten\"it@1".into(), &"audit".into()));
    }

    #[test]
    fn a_default_decision_names_the_default_and_whether_it_enforces() {
        let d = Decision { verdict: Verdict::Deny, by: Decided::Default(DefaultAction::Deny), audit: None };
        let v = line(None, &d);
        assert_eq!((&v["policy"], &v["default_action"], &v["mode"]), (&"default".into(), &"deny".into(), &"enforce".into()));
        assert!(v.get("method").is_none() && v.get("audit").is_none(), "{v}");
        let d = Decision { verdict: Verdict::Allow, by: Decided::Default(DefaultAction::Audit), audit: Some((Verdict::Deny, Decided::Default(DefaultAction::Audit))) };
        let v = line(None, &d);
        assert_eq!((&v["mode"], &v["audit"]), (&"audit".into(), &"would deny".into()));
    }
}
