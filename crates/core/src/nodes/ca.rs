//! The bottle's own certificate authority, generated with rcgen and kept in Docker.
//!
//! Two volumes: `<bottle>-ca` holds the certificate and the private key (mode 0400, owned
//! by the sidecar user) and is mounted only into the sidecars that mint certificates;
//! `<bottle>-ca-cert` holds the certificate alone and is what the agent mounts. The key
//! never enters the agent. The two are one node: if either is missing, both are made
//! again from one fresh CA.

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};

use super::{BottleCtx, DesiredObject, NodeKind};
use crate::hash::SpecHasher;
pub use bottle_contract::ca::{
    AGENT_TRUST_DIR, BUNDLE_FILE, CERT_FILE, KEY_FILE, MOUNT, SIDECAR_UID,
};
use bottle_engine::VolumeFile;

/// The host bundle the agent's trust store starts from.
const HOST_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";
/// Validity of a bottle CA, in days.
const VALID_DAYS: i64 = 365;

/// Failure to generate a CA.
#[derive(Debug, thiserror::Error)]
#[error("generating the CA of bottle {bottle}: {source}")]
pub struct CaError {
    bottle: String,
    source: rcgen::Error,
}

/// A freshly generated CA: certificate and key in PEM.
pub struct CaMaterial {
    pub cert_pem: String,
    key_pem: String,
}

/// Generate a CA for `bottle` of `project` (ECDSA P-256).
pub fn generate(project: &str, bottle: &str) -> Result<CaMaterial, CaError> {
    let err = |source| CaError {
        bottle: bottle.to_string(),
        source,
    };
    let key = KeyPair::generate().map_err(err)?;
    let mut params = CertificateParams::default();
    params
        .distinguished_name
        .push(DnType::CommonName, format!("bottle {project}/{bottle} CA"));
    params
        .distinguished_name
        .push(DnType::OrganizationName, "bottle");
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let now = time_now();
    params.not_before = now - rcgen_days(1);
    params.not_after = now + rcgen_days(VALID_DAYS);
    let cert = params.self_signed(&key).map_err(err)?;
    Ok(CaMaterial {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

fn time_now() -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc()
}

fn rcgen_days(d: i64) -> time::Duration {
    time::Duration::days(d)
}

/// The two volume objects of the CA node, seeded from `material`.
pub fn objects(ctx: &BottleCtx<'_>, material: &CaMaterial) -> Vec<DesiredObject> {
    // The CA's content is random; its spec is its parameters.
    let hash = SpecHasher::new(ctx.key)
        .field("params", format!("ecdsa-p256;days={VALID_DAYS};pathlen=0"))
        .finish();
    let cert = |uid| VolumeFile {
        path: CERT_FILE.into(),
        contents: material.cert_pem.clone().into_bytes(),
        mode: 0o444,
        uid,
        gid: uid,
    };
    let key = VolumeFile {
        path: KEY_FILE.into(),
        contents: material.key_pem.clone().into_bytes(),
        mode: 0o400,
        uid: SIDECAR_UID,
        gid: SIDECAR_UID,
    };
    let trust = VolumeFile {
        path: BUNDLE_FILE.into(),
        contents: bundle(&material.cert_pem),
        mode: 0o444,
        uid: 0,
        gid: 0,
    };
    let mut private = ctx.files_volume(
        NodeKind::Ca,
        "ca",
        hash.clone(),
        vec![cert(SIDECAR_UID), key],
        None,
    );
    let mut public = ctx.files_volume(NodeKind::Ca, "ca-cert", hash, vec![cert(0), trust], None);
    // One CA: if either volume is made anew, so is the other.
    private.binds.push(public.key.clone());
    public.binds.push(private.key.clone());
    vec![private, public]
}

/// The host's trust roots (when it has a Debian-style bundle) followed by the CA.
fn bundle(cert_pem: &str) -> Vec<u8> {
    let mut b = std::fs::read(HOST_BUNDLE).unwrap_or_default();
    if !b.is_empty() && !b.ends_with(b"\n") {
        b.push(b'\n');
    }
    b.extend_from_slice(cert_pem.as_bytes());
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_call_makes_a_different_ca() {
        let a = generate("p", "b").unwrap();
        let b = generate("p", "b").unwrap();
        assert_ne!(a.cert_pem, b.cert_pem);
        assert!(a.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(a.key_pem.contains("PRIVATE KEY"));
    }
}
