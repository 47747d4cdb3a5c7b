//! SVID fetch, refusal mapping, response checks and renewal timing, against a fake CA on paused
//! tokio time.

use std::collections::VecDeque;
use std::sync::Mutex;

use rcgen::{
    BasicConstraints, CertificateSigningRequestParams, CertifiedIssuer, ExtendedKeyUsagePurpose, IsCa, KeyUsagePurpose,
    PublicKeyData, SanType,
};
use rustls::pki_types::CertificateSigningRequestDer;
use tokio::time::Instant;
use tonic::Status;

use super::*;

const TD_ROOT: &str = "spiffe://td.test";
const DEMO: &str = "spiffe://td.test/ns/default/sa/demo";
const MIN: Duration = Duration::from_secs(60);

/// What the fake CA answers (besides scripted failures).
#[derive(Clone, Debug)]
enum Answer {
    /// A leaf for the CSR's key naming `DEMO`, and `spiffe_id: DEMO`.
    Honest,
    /// An honest certificate, but the response's `spiffe_id` field says this.
    Claims(&'static str),
    /// A certificate for a key the CA made up, not the CSR's.
    ForeignKey,
    /// No certificate at all.
    EmptyChain,
}

#[derive(Default)]
struct Log {
    calls: Vec<Instant>,
    requests: Vec<SignRequest>,
    /// SubjectPublicKeyInfo of each CSR.
    csr_keys: Vec<Vec<u8>>,
    /// (leaf DER, notAfter) of each certificate issued.
    issued: Vec<(Vec<u8>, SystemTime)>,
    fail: VecDeque<Status>,
}

/// A tiny CA: a P-256 root `spiffe://td.test` issuing SVIDs for `DEMO`.
#[derive(Clone)]
struct FakeCa(Arc<Inner>);

struct Inner {
    root: CertifiedIssuer<'static, KeyPair>,
    ttl: Duration,
    answer: Answer,
    log: Mutex<Log>,
}

impl FakeCa {
    fn new(ttl: Duration, answer: Answer) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.subject_alt_names = vec![SanType::URI(TD_ROOT.try_into().unwrap())];
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let root = CertifiedIssuer::self_signed(params, key).unwrap();
        Self(Arc::new(Inner { root, ttl, answer, log: Mutex::default() }))
    }

    /// The first `n` calls fail with `status`.
    fn failing(self, n: usize, status: Status) -> Self {
        self.log().fail.extend(std::iter::repeat_n(status, n));
        self
    }

    fn log(&self) -> std::sync::MutexGuard<'_, Log> {
        self.0.log.lock().unwrap()
    }

    fn root_der(&self) -> CertificateDer<'static> {
        self.0.root.der().clone()
    }

    fn gaps(&self) -> Vec<Duration> {
        self.log().calls.windows(2).map(|w| w[1] - w[0]).collect()
    }

    fn issue(&self, csr_der: &[u8]) -> Result<(Vec<u8>, SystemTime), Status> {
        let csr = CertificateSigningRequestParams::from_der(&CertificateSigningRequestDer::from(csr_der.to_vec()))
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        self.log().csr_keys.push(csr.public_key.subject_public_key_info());
        let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap();
        // Whole seconds, rounded up: what X.509 can express, never shorter than the TTL.
        let not_after = SystemTime::UNIX_EPOCH + Duration::from_secs(now.as_secs() + 1) + self.0.ttl;
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.subject_alt_names = vec![SanType::URI(DEMO.try_into().unwrap())];
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        params.not_before = (SystemTime::now() - MIN).into();
        params.not_after = not_after.into();
        let cert = if matches!(self.0.answer, Answer::ForeignKey) {
            let other = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
            params.signed_by(&other, &self.0.root)
        } else {
            CertificateSigningRequestParams { params, public_key: csr.public_key }.signed_by(&self.0.root)
        };
        Ok((cert.map_err(|e| Status::internal(e.to_string()))?.der().to_vec(), not_after))
    }
}

impl Signer for FakeCa {
    async fn sign(&self, req: SignRequest) -> Result<SignResponse, Status> {
        {
            let mut log = self.log();
            log.calls.push(Instant::now());
            log.requests.push(req.clone());
            if let Some(status) = log.fail.pop_front() {
                return Err(status);
            }
        }
        let (leaf, not_after) = self.issue(&req.csr_der)?;
        self.log().issued.push((leaf.clone(), not_after));
        let spiffe_id = match self.0.answer {
            Answer::Claims(id) => id.to_owned(),
            _ => DEMO.to_owned(),
        };
        let chain = if matches!(self.0.answer, Answer::EmptyChain) { vec![] } else { vec![leaf] };
        let not_after_unix = not_after.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs() as i64;
        Ok(SignResponse { spiffe_id, cert_chain_der: chain, trust_bundle_der: vec![self.root_der().to_vec()], not_after_unix })
    }
}

fn token_file(content: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("demo");
    std::fs::write(&path, content).unwrap();
    (dir, path)
}

async fn fetch_with(ca: &FakeCa) -> Result<Svid, IdentityError> {
    let (_dir, path) = token_file("tok-123\n");
    fetch_svid(ca, &CredentialSource::JoinTokenFile(path)).await
}

#[tokio::test]
async fn fetch_svid_returns_the_issued_certificate_for_our_key_and_sends_the_trimmed_token() {
    let ca = FakeCa::new(60 * MIN, Answer::Honest);
    let (_dir, path) = token_file("  join-token-abc \n");
    let svid = fetch_svid(&ca, &CredentialSource::JoinTokenFile(path)).await.unwrap();

    let log = ca.log();
    assert_eq!(log.requests.len(), 1);
    assert_eq!(log.requests[0].credential, Some(Credential::JoinToken("join-token-abc".into())));
    let (leaf, not_after) = &log.issued[0];
    assert_eq!(svid.spiffe_id.as_str(), DEMO);
    assert_eq!(svid.not_after, *not_after);
    assert_eq!(svid.chain, [CertificateDer::from(leaf.clone())]);
    assert_eq!(svid.bundle, [ca.root_der()]);
    // The key we hold is the one the CSR carried, and the certificate is for that key.
    let ours = KeyPair::try_from(&svid.key).unwrap().subject_public_key_info();
    assert_eq!(ours, log.csr_keys[0]);
    assert!(leaf.windows(ours.len()).any(|w| w == ours.as_slice()), "the leaf certifies our key");
    // The key never shows up in Debug output.
    let debug = format!("{svid:?}");
    assert!(debug.contains(DEMO) && !debug.contains("key"), "{debug}");
}

#[tokio::test]
async fn a_service_account_token_is_sent_as_such() {
    let ca = FakeCa::new(60 * MIN, Answer::Honest);
    let (_dir, path) = token_file("eyJhbGciOi.sa.token\n");
    fetch_svid(&ca, &CredentialSource::ServiceAccountTokenFile(path)).await.unwrap();
    assert_eq!(ca.log().requests[0].credential, Some(Credential::ServiceAccountToken("eyJhbGciOi.sa.token".into())));
}

#[tokio::test]
async fn a_missing_token_file_is_a_credential_error_and_nothing_is_sent() {
    let ca = FakeCa::new(60 * MIN, Answer::Honest);
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("tokens/nope");
    let err = fetch_svid(&ca, &CredentialSource::JoinTokenFile(missing.clone())).await.unwrap_err();
    assert!(matches!(&err, IdentityError::Credential { path, .. } if *path == missing), "{err:?}");
    assert_eq!(err.reason(), "credential");
    assert!(err.to_string().contains("tokens/nope"), "{err}");
    assert!(ca.log().calls.is_empty());
}

#[tokio::test]
async fn refusals_keep_the_operators_message_and_map_to_stable_reasons() {
    let cases = [
        (Status::permission_denied("identity spiffe://td.test/x is suspended"), "suspended"),
        (Status::resource_exhausted("too many signing requests; retry in 3s"), "rate_limited"),
        (Status::unavailable("connection refused"), "unreachable"),
        (Status::deadline_exceeded("timed out"), "unreachable"),
        (Status::not_found("no WorkloadIdentity selects service account default/demo"), "refused"),
    ];
    for (status, reason) in cases {
        let (code, message) = (status.code(), status.message().to_owned());
        let ca = FakeCa::new(60 * MIN, Answer::Honest).failing(1, status);
        let err = fetch_with(&ca).await.unwrap_err();
        assert!(matches!(&err, IdentityError::Refused { code: c, message: m } if *c == code && *m == message), "{err:?}");
        assert_eq!(err.reason(), reason, "{code:?}");
        assert!(err.to_string().contains(&message), "{err}");
    }
}

#[tokio::test]
async fn answers_that_do_not_hold_our_certificate_are_refused() {
    let cases = [
        (Answer::Claims("spiffe://td.test/ns/default/sa/admin"), "response says spiffe://td.test/ns/default/sa/admin"),
        (Answer::ForeignKey, "does not match the leaf certificate's public key"),
        (Answer::EmptyChain, "no certificate"),
    ];
    for (answer, says) in cases {
        let ca = FakeCa::new(60 * MIN, answer.clone());
        let err = fetch_with(&ca).await.unwrap_err();
        assert!(matches!(err, IdentityError::BadResponse(_)), "{answer:?}: {err:?}");
        assert_eq!(err.reason(), "bad_response");
        assert!(err.to_string().contains(says), "{answer:?}: {err}");
    }
}

#[test]
fn renewal_is_at_half_life_with_ten_percent_jitter() {
    let hour = 60 * MIN;
    let close = |a: Duration, b: Duration| a.abs_diff(b) < Duration::from_millis(1);
    assert_eq!(renew_after(hour, 0.0), 30 * MIN);
    assert!(close(renew_after(hour, 1.0), 33 * MIN), "{:?}", renew_after(hour, 1.0));
    assert!(close(renew_after(hour, -1.0), 27 * MIN), "{:?}", renew_after(hour, -1.0));
    assert!(close(renew_after(hour, 7.5), 33 * MIN), "out-of-range jitter is clamped");
    assert!(close(renew_after(hour, -40.0), 27 * MIN), "out-of-range jitter is clamped");
    assert_eq!(renew_after(Duration::ZERO, -1.0), Duration::ZERO);
    for i in 0..=20 {
        let wait = renew_after(hour, f64::from(i) / 10.0 - 1.0);
        assert!((27 * MIN..=33 * MIN + Duration::from_millis(1)).contains(&wait), "{i}: {wait:?}");
    }
    for _ in 0..200 {
        let j = jitter();
        assert!((-1.0..=1.0).contains(&j), "{j}");
    }
}

#[test]
fn backoff_doubles_from_one_second_to_thirty() {
    let secs: Vec<u64> = (1..=7).map(|n| backoff(n).as_secs()).collect();
    assert_eq!(secs, [1, 2, 4, 8, 16, 30, 30]);
    assert_eq!(backoff(u32::MAX), Duration::from_secs(30));
}

struct Running {
    slot: Arc<SwappableCert>,
    bundle: watch::Receiver<Vec<CertificateDer<'static>>>,
    metrics: Arc<Metrics>,
    task: tokio::task::JoinHandle<()>,
    _token_dir: tempfile::TempDir,
}

fn start(ca: &FakeCa) -> Running {
    let (dir, path) = token_file("tok-123\n");
    let slot = SwappableCert::new();
    let (tx, bundle) = watch::channel(Vec::new());
    let metrics = Metrics::new();
    let task = tokio::spawn(keep_fresh(ca.clone(), CredentialSource::JoinTokenFile(path), slot.clone(), tx, metrics.clone()));
    Running { slot, bundle, metrics, task, _token_dir: dir }
}

#[tokio::test(start_paused = true)]
async fn keep_fresh_renews_at_half_life_and_installs_each_certificate() {
    let ca = FakeCa::new(60 * MIN, Answer::Honest);
    let run = start(&ca);
    tokio::time::sleep(3 * 60 * MIN).await;

    let calls = ca.log().calls.len();
    assert!((5..=8).contains(&calls), "{calls} renewals in 3 h with 1 h certificates");
    // X.509 times are whole seconds: allow one second either side.
    let window = 27 * MIN - Duration::from_secs(1)..=33 * MIN + Duration::from_secs(1);
    for gap in ca.gaps() {
        assert!(window.contains(&gap), "renewed after {gap:?}");
    }
    let held = run.slot.current().expect("a certificate is installed");
    let last = ca.log().issued.last().unwrap().0.clone();
    assert_eq!(held.cert[0].as_ref(), last.as_slice(), "the newest certificate is the one presented");
    assert_eq!(run.metrics.svid_renewals.get(), calls as u64);
    assert_eq!(*run.bundle.borrow(), [ca.root_der()]);
    let expiry = ca.log().issued.last().unwrap().1.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs() as i64;
    assert_eq!(run.metrics.svid_expiry_seconds.get(), expiry);
    assert!(!run.metrics.encode().contains("svid_renewal_failures_total{"), "no failures");
    run.task.abort();
}

#[tokio::test(start_paused = true)]
async fn keep_fresh_backs_off_exponentially_then_recovers() {
    let ca = FakeCa::new(60 * MIN, Answer::Honest).failing(3, Status::unavailable("operator restarting"));
    let run = start(&ca);
    tokio::time::sleep(Duration::from_secs(60)).await;

    assert_eq!(ca.log().calls.len(), 4, "3 failures, then a certificate valid for 30 min more");
    let gaps = ca.gaps();
    for (gap, want) in gaps.iter().zip([1, 2, 4]) {
        assert!(gap.abs_diff(Duration::from_secs(want)) <= Duration::from_millis(10), "{gaps:?}");
    }
    let text = run.metrics.encode();
    assert!(text.contains("trustmesh_svid_renewal_failures_total{reason=\"unreachable\"} 3"), "{text}");
    assert_eq!(run.metrics.svid_renewals.get(), 1);
    assert!(run.slot.current().is_some());
    assert_eq!(*run.bundle.borrow(), [ca.root_der()]);
    run.task.abort();
}

#[tokio::test(start_paused = true)]
async fn an_unusable_answer_is_not_installed_and_is_retried() {
    let ca = FakeCa::new(60 * MIN, Answer::ForeignKey);
    let run = start(&ca);
    tokio::time::sleep(Duration::from_secs(10)).await;
    // Calls at 0, 1, 3, 7 s.
    assert_eq!(ca.log().calls.len(), 4);
    assert!(run.slot.current().is_none(), "fail closed: no certificate for a key we do not hold");
    assert!(run.bundle.borrow().is_empty(), "nothing from a refused answer is published");
    assert!(run.metrics.encode().contains("trustmesh_svid_renewal_failures_total{reason=\"bad_response\"} 4"));
    run.task.abort();
}
