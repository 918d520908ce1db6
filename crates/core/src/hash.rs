//! The one place that hashes specs.
//!
//! A node's spec is hashed field by field: each field gets a short digest, and the spec
//! hash is the digest of all of them. The per-field digests go on a label so `diff` can
//! name the field that changed. A secret enters a digest only through HMAC-SHA256 keyed
//! with a host-local key ([`DigestKey`]), so a label never lets anyone test a guess of a
//! secret offline.

use std::collections::BTreeMap;

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// Hex characters kept of each field digest.
const FIELD_DIGEST_LEN: usize = 12;
/// Hex characters kept of a spec hash or content hash.
pub const HASH_LEN: usize = 16;

/// The key for digests of secrets: 32 random bytes, which the binary keeps at
/// `$XDG_STATE_HOME/bottle/digest.key` (mode 0600). Losing it only changes digests: the
/// affected nodes are recreated once.
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

    /// The key made of `bytes` (the binary keeps it in a file: see `edge::digest_key`).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        DigestKey(bytes)
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
}
