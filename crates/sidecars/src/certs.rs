//! Leaf certificates minted on the fly from the bottle's CA, one per host, cached; and the
//! rustls server configuration that presents them. Shared by the two sidecars that
//! intercept TLS: egress (towards the agent) and pipelock (towards egress, or a client
//! that CONNECTs to it directly).
//!
//! rustls runs on the ring provider, called explicitly: the tree has no aws-lc-rs and
//! there is no process-wide default to rely on.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, Issuer, KeyPair};
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls_pki_types::{CertificateDer, PrivatePkcs8KeyDer};

/// A cached leaf is minted again after this long.
const LEAF_REFRESH: Duration = Duration::from_secs(24 * 3600);
/// Validity of a leaf certificate, in days.
const LEAF_DAYS: i64 = 7;
/// Cache bound: beyond it the cache is cleared (hosts are few in practice).
const CACHE_MAX: usize = 4096;

/// The rustls crypto provider of every TLS session of the sidecar.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The CA could not be loaded or a leaf could not be minted.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("loading the bottle CA: {0}")]
    Ca(rcgen::Error),
    #[error("minting a certificate for {host}")]
    Mint { host: String, source: rcgen::Error },
    #[error("building the TLS server configuration for {host}")]
    Tls { host: String, source: rustls::Error },
}

/// The bottle's CA and the leaves minted from it.
pub struct Authority {
    issuer: Issuer<'static, KeyPair>,
    ca_der: CertificateDer<'static>,
    provider: Arc<CryptoProvider>,
    cache: Mutex<HashMap<String, (Instant, Arc<ServerConfig>)>>,
}

impl Authority {
    /// From the CA certificate and key, both PEM.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Authority, CertError> {
        let key = KeyPair::from_pem(key_pem).map_err(CertError::Ca)?;
        let issuer = Issuer::from_ca_cert_pem(cert_pem, key).map_err(CertError::Ca)?;
        let ca_der = rustls_pki_types::pem::PemObject::from_pem_slice(cert_pem.as_bytes())
            .map_err(|_| CertError::Ca(rcgen::Error::CouldNotParseCertificate))?;
        Ok(Authority {
            issuer,
            ca_der,
            provider: provider(),
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// The server configuration presenting a leaf for `host` (a name or an IP literal).
    pub fn server_config(&self, host: &str) -> Result<Arc<ServerConfig>, CertError> {
        self.cached(host)
    }

    /// The server configuration for `host` offering exactly `alpn` (one protocol the
    /// upstream already agreed to, or none): the same cached leaf, another ALPN list.
    pub fn server_config_alpn(
        &self,
        host: &str,
        alpn: Option<&[u8]>,
    ) -> Result<Arc<ServerConfig>, CertError> {
        let base = self.cached(host)?;
        let mut cfg = (*base).clone();
        cfg.alpn_protocols = alpn.map(|p| vec![p.to_vec()]).unwrap_or_default();
        Ok(Arc::new(cfg))
    }

    /// The CA certificate (DER), for clients that trust leaves minted here.
    pub fn ca_der(&self) -> &CertificateDer<'static> {
        &self.ca_der
    }

    fn cached(&self, host: &str) -> Result<Arc<ServerConfig>, CertError> {
        let host = host.to_ascii_lowercase();
        if let Some((at, cfg)) = self.lock().get(&host)
            && at.elapsed() < LEAF_REFRESH
        {
            return Ok(cfg.clone());
        }
        let cfg = Arc::new(self.mint(&host)?);
        let mut cache = self.lock();
        if cache.len() >= CACHE_MAX {
            cache.clear();
        }
        cache.insert(host, (Instant::now(), cfg.clone()));
        Ok(cfg)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Instant, Arc<ServerConfig>)>> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn mint(&self, host: &str) -> Result<ServerConfig, CertError> {
        let mint_err = |source| CertError::Mint {
            host: host.to_string(),
            source,
        };
        let key = KeyPair::generate().map_err(mint_err)?;
        let mut params = CertificateParams::new(vec![host.to_string()]).map_err(mint_err)?;
        params.distinguished_name.push(DnType::CommonName, host);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::hours(1);
        params.not_after = now + time::Duration::days(LEAF_DAYS);
        let cert = params.signed_by(&key, &self.issuer).map_err(mint_err)?;
        let chain = vec![cert.der().clone(), self.ca_der.clone()];
        let key_der = PrivatePkcs8KeyDer::from(key.serialize_der());
        let tls_err = |source| CertError::Tls {
            host: host.to_string(),
            source,
        };
        let mut cfg = ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(tls_err)?
            .with_no_client_auth()
            .with_single_cert(chain, key_der.into())
            .map_err(tls_err)?;
        cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(cfg)
    }
}
