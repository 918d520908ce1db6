//! The one place that hashes specs.
//!
//! A node's spec is hashed field by field: each field gets a short digest, and the spec
//! hash is the digest of all of them. The per-field digests go on a label so `diff` can
//! name the field that changed. A secret enters a digest only through HMAC-SHA256 keyed
//! with a host-local key ([`DigestKey`]), so a label never lets anyone test a guess of a
//! secret offline.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// Hex characters kept of each field digest.
const FIELD_DIGEST_LEN: usize = 12;
/// Hex characters kept of a spec hash or content hash.
pub const HASH_LEN: usize = 16;

/// The key for digests of secrets: 32 random bytes kept at `$XDG_STATE_HOME/bottle/digest.key`
/// (mode 0600). Losing it only changes digests: the affected nodes are recreated once.
#[derive(Clone)]
pub struct DigestKey([u8; 32]);

impl std::fmt::Debug for DigestKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DigestKey(<redacted>)")
    }
}

impl DigestKey {
    /// A fixed key, for tests.
    pub fn fixed(byte: u8) -> Self {
        DigestKey([byte; 32])
    }

    /// Where the key lives on this host.
    pub fn default_path() -> Option<PathBuf> {
        if let Some(dir) = std::env::var_os("XDG_STATE_HOME").filter(|d| !d.is_empty()) {
            return Some(PathBuf::from(dir).join("bottle/digest.key"));
        }
        std::env::var_os("HOME")
            .filter(|d| !d.is_empty())
            .map(|h| PathBuf::from(h).join(".local/state/bottle/digest.key"))
    }

    /// Read the key at `path`, creating it (0600) if absent.
    pub fn load_or_create(path: &Path) -> std::io::Result<Self> {
        match std::fs::read(path) {
            Ok(bytes) if bytes.len() == 32 => {
                let mut k = [0u8; 32];
                k.copy_from_slice(&bytes);
                return Ok(DigestKey(k));
            }
            Ok(_) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("{} is not a 32-byte key", path.display()),
                ));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let key: [u8; 32] = rand::random();
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        {
            use std::os::unix::fs::OpenOptionsExt;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(&key)?;
            f.sync_all()?;
        }
        // Two processes racing: the first rename wins and both read the winner.
        if std::fs::hard_link(&tmp, path).is_err() && !path.exists() {
            std::fs::rename(&tmp, path)?;
        }
        let _ = std::fs::remove_file(&tmp);
        Self::load_or_create(path)
    }
}

/// Builds a spec hash from named fields.
#[derive(Default)]
pub struct SpecHasher<'k> {
    key: Option<&'k DigestKey>,
    fields: BTreeMap<&'static str, String>,
}

/// The result: the spec hash and the per-field digests.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct SpecHash {
    /// The spec hash: [`HASH_LEN`] hex characters of the digest over every field digest.
    pub hash: String,
    /// The short digest of each field, by field name.
    pub fields: BTreeMap<String, String>,
}

impl SpecHash {
    /// The per-field digests as a label value: `field=digest,...`.
    pub fn fields_label(&self) -> String {
        let parts: Vec<String> = self
            .fields
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        parts.join(",")
    }
}

impl<'k> SpecHasher<'k> {
    /// A hasher with no fields yet, whose secret fields are keyed with `key`.
    pub fn new(key: &'k DigestKey) -> Self {
        SpecHasher {
            key: Some(key),
            fields: BTreeMap::new(),
        }
    }

    /// A public field. `value` is any stable text rendering of it.
    pub fn field(&mut self, name: &'static str, value: impl AsRef<[u8]>) -> &mut Self {
        let d = Sha256::digest(value.as_ref());
        self.fields.insert(name, short(&d));
        self
    }

    /// A field that holds secrets: public parts go in plain, secret parts keyed.
    pub fn secret_field<'a>(
        &mut self,
        name: &'static str,
        parts: impl IntoIterator<Item = (&'a str, Option<&'a str>)>,
    ) -> &mut Self {
        let mut outer = Sha256::new();
        for (public, secret) in parts {
            outer.update((public.len() as u64).to_le_bytes());
            outer.update(public.as_bytes());
            match secret {
                Some(s) => {
                    outer.update([1]);
                    outer.update(keyed(self.key, s.as_bytes()));
                }
                None => outer.update([0]),
            }
        }
        self.fields.insert(name, short(&outer.finalize()));
        self
    }

    /// The spec hash of the fields added so far, with their digests.
    pub fn finish(&self) -> SpecHash {
        let mut all = Sha256::new();
        for (k, v) in &self.fields {
            all.update(k.as_bytes());
            all.update(b"=");
            all.update(v.as_bytes());
            all.update(b";");
        }
        let full = hex::encode(all.finalize());
        SpecHash {
            hash: full[..HASH_LEN].to_string(),
            fields: self
                .fields
                .iter()
                .map(|(k, v)| ((*k).to_string(), v.clone()))
                .collect(),
        }
    }
}

fn keyed(key: Option<&DigestKey>, data: &[u8]) -> [u8; 32] {
    let k = key.map(|k| &k.0[..]).unwrap_or(&[0u8; 32]);
    // HMAC accepts keys of any length; new_from_slice cannot fail for HMAC.
    let mut mac = match <Hmac<Sha256> as Mac>::new_from_slice(k) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC takes keys of any size"),
    };
    mac.update(data);
    mac.finalize().into_bytes().into()
}

fn short(d: &[u8]) -> String {
    hex::encode(&d[..FIELD_DIGEST_LEN / 2])
}

/// Content hash of bytes (image contexts, binaries), [`HASH_LEN`] hex characters.
pub fn content_hash(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))[..HASH_LEN].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changed_field_changes_only_its_digest() {
        let key = DigestKey::fixed(1);
        let a = SpecHasher::new(&key)
            .field("env", "A=1")
            .field("image", "x")
            .finish();
        let b = SpecHasher::new(&key)
            .field("env", "A=2")
            .field("image", "x")
            .finish();
        assert_ne!(a.hash, b.hash);
        assert_ne!(a.fields["env"], b.fields["env"]);
        assert_eq!(a.fields["image"], b.fields["image"]);
    }

    #[test]
    fn secret_digest_depends_on_key_and_never_contains_value() {
        let k1 = DigestKey::fixed(1);
        let k2 = DigestKey::fixed(2);
        let s = "sk-ant-very-secret";
        let a = SpecHasher::new(&k1)
            .secret_field("env", [("TOKEN", Some(s))])
            .finish();
        let b = SpecHasher::new(&k2)
            .secret_field("env", [("TOKEN", Some(s))])
            .finish();
        assert_ne!(a.hash, b.hash);
        assert!(!a.fields_label().contains(s));
        let c = SpecHasher::new(&k1)
            .secret_field("env", [("TOKEN", Some("other"))])
            .finish();
        assert_ne!(a.hash, c.hash);
    }

    #[test]
    fn key_file_is_created_once_with_mode_0600() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s/digest.key");
        let a = DigestKey::load_or_create(&p).unwrap();
        let b = DigestKey::load_or_create(&p).unwrap();
        assert_eq!(a.0, b.0);
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
}
