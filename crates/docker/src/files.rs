//! Small files in a running container's filesystem through the engine's archive API:
//! how `bottle queue` reads the supervise state volume and writes decisions into it,
//! with no network path from the bottle to the operator. CLI features, like
//! `session.rs`, not reconciler operations.

use std::io::Read as _;

use bollard::query_parameters::{
    DownloadFromContainerOptionsBuilder, UploadToContainerOptionsBuilder,
};
use futures_util::StreamExt;

use super::Docker;
use bottle_engine::EngineError;

/// The most read back from one directory: proposals are small and bounded in number.
const MAX_ARCHIVE: usize = 16 << 20;

impl Docker {
    /// The regular files directly in `dir` of `container` (name, contents); an empty list
    /// when `dir` does not exist.
    pub async fn read_dir_files(
        &self,
        container: &str,
        dir: &str,
    ) -> Result<Vec<(String, Vec<u8>)>, EngineError> {
        let options = DownloadFromContainerOptionsBuilder::default()
            .path(dir)
            .build();
        let mut stream = self
            .client
            .download_from_container(container, Some(options));
        let mut buf = Vec::new();
        while let Some(chunk) = stream.next().await {
            let chunk = match chunk {
                Ok(c) => c,
                Err(e) => match self.error(e, "read files", "container", container) {
                    EngineError::NotFound { .. } => return Ok(Vec::new()),
                    e => return Err(e),
                },
            };
            if buf.len() + chunk.len() > MAX_ARCHIVE {
                return Err(EngineError::Api {
                    op: "read files",
                    name: format!("{container}:{dir}"),
                    message: format!("more than {MAX_ARCHIVE} bytes"),
                });
            }
            buf.extend_from_slice(&chunk);
        }
        untar_files(&buf).map_err(|e| EngineError::Api {
            op: "read files",
            name: format!("{container}:{dir}"),
            message: e.to_string(),
        })
    }

    /// Write `contents` as `dir/name` in `container` (mode 0644, root-owned); `dir` is
    /// created when missing.
    pub async fn write_file(
        &self,
        container: &str,
        dir: &str,
        name: &str,
        contents: &[u8],
    ) -> Result<(), EngineError> {
        let (parent, leaf) = dir.rsplit_once('/').unwrap_or(("", dir));
        let parent = if parent.is_empty() { "/" } else { parent };
        let mut tar = tar::Builder::new(Vec::new());
        let mut head = tar::Header::new_gnu();
        head.set_entry_type(tar::EntryType::Directory);
        head.set_mode(0o755);
        head.set_size(0);
        let io = |e: std::io::Error| EngineError::Api {
            op: "write file",
            name: format!("{container}:{dir}/{name}"),
            message: e.to_string(),
        };
        tar.append_data(&mut head, format!("{leaf}/"), std::io::empty())
            .map_err(io)?;
        let mut head = tar::Header::new_gnu();
        head.set_mode(0o644);
        head.set_size(contents.len() as u64);
        tar.append_data(&mut head, format!("{leaf}/{name}"), contents)
            .map_err(io)?;
        let archive = tar.into_inner().map_err(io)?;
        let options = UploadToContainerOptionsBuilder::default()
            .path(parent)
            .build();
        self.client
            .upload_to_container(container, Some(options), bollard::body_full(archive.into()))
            .await
            .map_err(|e| self.error(e, "write file", "container", container))
    }
}

/// The regular files of a directory archive as the engine sends it (`dir/`, `dir/f`).
fn untar_files(buf: &[u8]) -> std::io::Result<Vec<(String, Vec<u8>)>> {
    let mut out = Vec::new();
    let mut ar = tar::Archive::new(buf);
    for entry in ar.entries()? {
        let mut entry = entry?;
        if entry.header().entry_type() != tar::EntryType::Regular {
            continue;
        }
        let path = entry.path()?.into_owned();
        let parts: Vec<_> = path.components().collect();
        // Only files directly in the directory: `dir/name`.
        if parts.len() != 2 {
            continue;
        }
        let name = parts[1].as_os_str().to_string_lossy().into_owned();
        let mut data = Vec::new();
        entry.read_to_end(&mut data)?;
        out.push((name, data));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_direct_regular_files_are_read() {
        let mut tar = tar::Builder::new(Vec::new());
        for (path, data) in [("d/a.json", &b"1"[..]), ("d/sub/b.json", b"2")] {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            tar.append_data(&mut h, path, data).unwrap();
        }
        let buf = tar.into_inner().unwrap();
        let files = super::untar_files(&buf).unwrap();
        assert_eq!(files, vec![("a.json".to_string(), b"1".to_vec())]);
    }
}
