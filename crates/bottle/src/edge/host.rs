//! What the desired state takes from the host besides the manifest, read once per command:
//! the static sidecar binary (the sidecar image is made from it) and the host's trust
//! roots (each agent's trust store starts from them).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use bottle_core::images::{self, Context, ImageError};

/// Where Debian keeps the host's trust roots.
const HOST_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// Where the static sidecar binary is: `BOTTLE_SIDECAR_BINARY`, else this very
/// executable when it is static.
pub fn find_sidecar_binary() -> Result<PathBuf, ImageError> {
    if let Some(p) = std::env::var_os("BOTTLE_SIDECAR_BINARY").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    let me = std::env::current_exe().map_err(|_| ImageError::NoSidecarBinary)?;
    let head = read_head(&me).map_err(|_| ImageError::NoSidecarBinary)?;
    if images::is_static_elf(&head) {
        Ok(me)
    } else {
        Err(ImageError::NoSidecarBinary)
    }
}

/// The sidecar image's build context, from the binary at `binary`.
pub fn sidecar_context(binary: &Path) -> anyhow::Result<Context> {
    let bytes = std::fs::read(binary)
        .with_context(|| format!("reading the sidecar binary {}", binary.display()))?;
    Ok(images::sidecar_context(binary, &bytes)?)
}

/// The first 64 KiB of `path`: enough for the ELF program headers.
fn read_head(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut buf = vec![0u8; 64 << 10];
    let mut f = std::fs::File::open(path)?;
    let n = f.read(&mut buf)?;
    buf.truncate(n);
    Ok(buf)
}

/// The host's trust roots. A host without the bundle gives none (the agent then trusts
/// only its bottle's CA, and a warning says so); any other failure to read it is an
/// error, never silently an empty bundle.
pub fn trust_roots() -> anyhow::Result<Arc<[u8]>> {
    match std::fs::read(HOST_BUNDLE) {
        Ok(b) => Ok(b.into()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            tracing::warn!(
                path = HOST_BUNDLE,
                "no host trust roots: agents trust only their bottle's CA"
            );
            Ok(Arc::from(&[][..]))
        }
        Err(e) => {
            Err(anyhow::Error::new(e)
                .context(format!("reading the host trust roots {HOST_BUNDLE}")))
        }
    }
}
