//! Small files in a running container's volume (`bottle_engine::VolumeFiles`), how
//! `bottle queue` reads supervise's proposals and writes its decisions on Kubernetes
//! (docs/design.md section 9.10). The sidecar image has no shell and no `tar`, so the
//! engine execs the hidden `bottle sidecar read-files` and `write-file` in the container
//! (through the pod `exec` subresource, as the container's own user); the commands, the
//! listing's frame and its bounds are `bottle_contract::volume_files`, which the
//! sidecar's side calls too.

use bottle_contract::volume_files::{self as vf, Listing};
use bottle_engine::{EngineError, VolumeFiles};

use super::KubeEngine;

fn failed(op: &'static str, container: &str, message: String) -> EngineError {
    EngineError::Api {
        op,
        name: container.into(),
        message,
    }
}

impl<I> VolumeFiles for KubeEngine<I> {
    /// Listing after listing (each at most one batch, `--after` the last name of the
    /// one before) until the directory is read, at most [`vf::MAX_TOTAL`] bytes in all.
    async fn read_dir_files(
        &self,
        container: &str,
        dir: &str,
    ) -> Result<Vec<(String, Vec<u8>)>, EngineError> {
        let op = "read files";
        let mut out: Vec<(String, Vec<u8>)> = Vec::new();
        let mut total = 0usize;
        let mut after: Option<String> = None;
        loop {
            let cmd = vf::read_command(dir, after.as_deref())
                .map_err(|e| failed(op, container, e.to_string()))?;
            let run = self
                .exec_captured(container, &cmd, None, &[])
                .await?
                .succeeded(
                    op,
                    container,
                    &format!("`bottle sidecar read-files` in {dir}"),
                )?;
            let listing = Listing::decode(&run.stdout, after.as_deref())
                .map_err(|e| failed(op, container, format!("{dir}: {e}")))?;
            for f in listing.files {
                total += f.contents.len();
                if total > vf::MAX_TOTAL {
                    return Err(failed(
                        op,
                        container,
                        format!("{dir}: more than {} bytes", vf::MAX_TOTAL),
                    ));
                }
                out.push((f.name, f.contents));
            }
            if !listing.more {
                return Ok(out);
            }
            after = out.last().map(|(n, _)| n.clone());
        }
    }

    /// `write-file` fed exactly the contents (its input is held open, never ended:
    /// before Kubernetes 1.30 that would end the session); it writes them to a temporary
    /// file and renames it over `name`.
    async fn write_file(
        &self,
        container: &str,
        dir: &str,
        name: &str,
        contents: &[u8],
    ) -> Result<(), EngineError> {
        let op = "write file";
        let cmd = vf::write_command(dir, name, contents)
            .map_err(|e| failed(op, container, e.to_string()))?;
        let input = std::io::Cursor::new(contents.to_vec());
        self.exec_fed(container, &cmd, input)
            .await?
            .succeeded(
                op,
                container,
                &format!("`bottle sidecar write-file` of {dir}/{name}"),
            )
            .map(drop)
    }
}
