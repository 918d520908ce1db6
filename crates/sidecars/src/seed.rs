//! `bottle sidecar seed`: the Kubernetes backend's helper pod (docs/design.md section
//! 9.10). Reads the plan `bottle_contract::seed` describes from the Secret mounted at
//! `seed::MOUNT`, writes each file into its volume with its mode and owner (parent
//! directories made as the file's owner), gives each volume's root its owner, and exits.
//! Runs as root with `CHOWN`, `FOWNER` and `DAC_OVERRIDE` only; a path that would leave
//! its volume is refused before anything is written.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use bottle_contract::seed::{self, SeedVolume};

/// Why seeding failed.
#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    #[error("reading the seed plan {0}")]
    Plan(String, #[source] std::io::Error),
    #[error("the seed plan is not valid")]
    Parse(#[from] serde_json::Error),
    #[error("{0}: a path that leaves its volume")]
    Escapes(String),
    #[error("{0}")]
    Io(String, #[source] std::io::Error),
}

/// Seed every volume of the plan under `mount`.
pub fn run(mount: &Path) -> Result<(), SeedError> {
    let plan_path = mount.join(seed::PLAN_FILE);
    let text = std::fs::read(&plan_path)
        .map_err(|e| SeedError::Plan(plan_path.display().to_string(), e))?;
    let plan: Vec<SeedVolume> = serde_json::from_slice(&text)?;
    if let Some(f) = plan
        .iter()
        .flat_map(|v| &v.files)
        .find(|f| !seed::contained(&f.path) || !seed::contained(&f.key))
    {
        return Err(SeedError::Escapes(f.path.clone()));
    }
    for v in &plan {
        seed_one(mount, v)?;
    }
    Ok(())
}

fn io(what: String) -> impl FnOnce(std::io::Error) -> SeedError {
    move |e| SeedError::Io(what, e)
}

fn seed_one(mount: &Path, v: &SeedVolume) -> Result<(), SeedError> {
    let root = Path::new(&v.dir);
    for f in &v.files {
        let target = root.join(&f.path);
        // Parent directories below the root, made as the file's owner.
        let mut dir = root.to_path_buf();
        if let Some(parent) = Path::new(&f.path).parent() {
            for c in parent.components() {
                dir.push(c);
                if !dir.exists() {
                    std::fs::create_dir(&dir).map_err(io(format!("mkdir {}", dir.display())))?;
                    std::os::unix::fs::chown(&dir, Some(f.uid as u32), Some(f.gid as u32))
                        .map_err(io(format!("chown {}", dir.display())))?;
                }
            }
        }
        let contents = std::fs::read(mount.join(&f.key))
            .map_err(io(format!("reading the contents of {}", f.path)))?;
        std::fs::write(&target, contents).map_err(io(format!("writing {}", target.display())))?;
        std::os::unix::fs::chown(&target, Some(f.uid as u32), Some(f.gid as u32))
            .map_err(io(format!("chown {}", target.display())))?;
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(f.mode))
            .map_err(io(format!("chmod {}", target.display())))?;
    }
    if let Some((uid, gid)) = v.owner {
        std::os::unix::fs::chown(root, Some(uid as u32), Some(gid as u32))
            .map_err(io(format!("chown {}", root.display())))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bottle_contract::seed::SeedFile;

    #[test]
    fn files_land_at_their_paths_with_their_modes_and_escapes_are_refused() {
        let base = std::env::temp_dir().join(format!("bottle-seed-test-{}", std::process::id()));
        let mount = base.join("seed");
        let vol = base.join("vol");
        std::fs::create_dir_all(&mount).expect("mount");
        std::fs::create_dir_all(&vol).expect("vol");
        std::fs::write(mount.join("f0"), b"hello").expect("contents");
        // Our own uid and gid: chown to them needs no privilege.
        let meta = std::fs::metadata(&vol).expect("meta");
        let (uid, gid) = (
            std::os::unix::fs::MetadataExt::uid(&meta) as u64,
            std::os::unix::fs::MetadataExt::gid(&meta) as u64,
        );
        let mut plan = vec![SeedVolume {
            dir: vol.display().to_string(),
            owner: Some((uid, gid)),
            files: vec![SeedFile {
                key: "f0".into(),
                path: "a/b/prompt.md".into(),
                mode: 0o600,
                uid,
                gid,
            }],
        }];
        std::fs::write(
            mount.join(seed::PLAN_FILE),
            serde_json::to_vec(&plan).expect("json"),
        )
        .expect("plan");
        run(&mount).expect("seeded");
        let written = vol.join("a/b/prompt.md");
        assert_eq!(std::fs::read(&written).expect("read"), b"hello");
        assert_eq!(
            std::fs::metadata(&written)
                .expect("meta")
                .permissions()
                .mode()
                & 0o777,
            0o600
        );
        plan[0].files[0].path = "../escape".into();
        std::fs::write(
            mount.join(seed::PLAN_FILE),
            serde_json::to_vec(&plan).expect("json"),
        )
        .expect("plan");
        assert!(matches!(run(&mount), Err(SeedError::Escapes(_))));
        assert!(!base.join("escape").exists());
        let _ = std::fs::remove_dir_all(&base);
    }
}
