//! This host's key for digests of secrets, kept in a file: `$XDG_STATE_HOME/bottle/digest.key`
//! (or `~/.local/state/bottle/digest.key`), 32 random bytes, mode 0600, created on first
//! use. `bottle_core::hash::DigestKey` is the key as a value; this is where it lives.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use bottle_core::hash::DigestKey;

/// Where the key lives on this host.
pub fn default_path() -> Option<PathBuf> {
    super::state_path("digest.key")
}

/// Read the key at `path`, creating it (0600) if absent.
pub fn load_or_create(path: &Path) -> std::io::Result<DigestKey> {
    match std::fs::read(path) {
        Ok(bytes) if bytes.len() == 32 => {
            let mut k = [0u8; 32];
            k.copy_from_slice(&bytes);
            return Ok(DigestKey::from_bytes(k));
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
    load_or_create(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_file_is_created_once_with_mode_0600() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s/digest.key");
        let a = load_or_create(&p).unwrap();
        let b = load_or_create(&p).unwrap();
        // The same key: the same digest of the same secret.
        let digest = |k: &DigestKey| {
            bottle_core::hash::SpecHasher::new(k)
                .secret_field("env", [("T", Some("s"))])
                .finish()
                .hash
        };
        assert_eq!(digest(&a), digest(&b));
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
}
