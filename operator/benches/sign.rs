//! SVIDs signed per second on one core, from CSRs: what one `Identity.Sign` costs the CA
//! (parse + verify the CSR's P-256 signature, build and sign the certificate), without gRPC.
//!
//! Run: `cargo bench -p trustmesh-operator --bench sign`. The floor is one P-256 verify (~88 us
//! with ring) plus one sign (~26 us): about 8,700/s per core.

use std::hint::black_box;
use std::time::{Duration, SystemTime};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rcgen::{CertificateParams, KeyPair, PKCS_ECDSA_P256_SHA256};
use trustmesh_core::spiffe::{SpiffeId, TrustDomain};
use trustmesh_operator::ca::CertificateAuthority;

fn bench(c: &mut Criterion) {
    let td = TrustDomain::new("bench.local").expect("valid td");
    let ca = CertificateAuthority::generate(&td).expect("CA");
    let id = SpiffeId::parse("spiffe://bench.local/ns/default/sa/app").expect("valid id");
    let csrs: Vec<Vec<u8>> = (0..64)
        .map(|_| {
            let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("key");
            CertificateParams::default().serialize_request(&key).expect("csr").der().to_vec()
        })
        .collect();
    let mut group = c.benchmark_group("ca");
    group.throughput(Throughput::Elements(1));
    let mut i = 0;
    group.bench_function("sign_csr", |b| {
        b.iter(|| {
            i = (i + 1) % csrs.len();
            black_box(ca.sign_csr(black_box(&csrs[i]), &id, Duration::from_secs(3600), SystemTime::now()).expect("signed"))
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
