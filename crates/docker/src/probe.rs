//! [`RuntimeProbe`] on the real engine: the registered runtimes from `docker info`,
//! and one throwaway container under a runtime (created, started, waited for, its logs
//! read, removed), which is how the binary learns whether the engine's runsc can give an
//! agent a working `ls` before any agent gets it.

use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{CreateContainerOptionsBuilder, LogsOptionsBuilder};
use futures_util::StreamExt;

use super::Docker;
use bottle_engine::{EngineError, ExecOutput, RuntimeEntry, RuntimeInfo, RuntimeProbe};

impl RuntimeProbe for Docker {
    async fn runtime_info(&self) -> Result<RuntimeInfo, EngineError> {
        let info = self
            .client
            .info()
            .await
            .map_err(|e| self.error(e, "info", "engine", &self.socket))?;
        let mut runtimes: Vec<RuntimeEntry> = info
            .runtimes
            .unwrap_or_default()
            .into_iter()
            .map(|(name, r)| RuntimeEntry {
                path: r.path.unwrap_or_else(|| name.clone()),
                args: r.runtime_args.unwrap_or_default(),
                name,
            })
            .collect();
        runtimes.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(RuntimeInfo {
            engine_id: info.id.unwrap_or_default(),
            runtimes,
        })
    }

    async fn probe_runtime(
        &self,
        runtime: &str,
        image: &str,
        cmd: &[String],
    ) -> Result<ExecOutput, EngineError> {
        // A name of our own, so a probe interrupted half-way is recognisable.
        let name = format!(
            "bottle-probe-{runtime}-{}-{:x}",
            std::process::id(),
            rand::random::<u32>()
        );
        let body = ContainerCreateBody {
            image: Some(image.to_string()),
            cmd: Some(cmd.to_vec()),
            network_disabled: Some(true),
            host_config: Some(HostConfig {
                runtime: Some(runtime.to_string()),
                network_mode: Some("none".into()),
                cap_drop: Some(vec!["ALL".into()]),
                security_opt: Some(vec!["no-new-privileges".into()]),
                readonly_rootfs: Some(true),
                ..Default::default()
            }),
            ..Default::default()
        };
        let options = CreateContainerOptionsBuilder::default().name(&name).build();
        let created = self
            .client
            .create_container(Some(options), body)
            .await
            .map_err(|e| self.error(e, "create probe container", "image", image))?;
        let out = self.run_probe(&created.id, &name).await;
        // Whatever happened, the probe leaves nothing behind.
        let _ = self.force_remove(&created.id).await;
        out
    }
}

impl Docker {
    /// Start the created probe `id`, wait for it, and read what it printed.
    async fn run_probe(&self, id: &str, name: &str) -> Result<ExecOutput, EngineError> {
        self.client
            .start_container(id, None)
            .await
            .map_err(|e| self.error(e, "start probe container", "container", name))?;
        let mut code = -1;
        let mut wait = self.client.wait_container(id, None);
        while let Some(r) = wait.next().await {
            match r {
                Ok(w) => code = w.status_code,
                // bollard reports a non-zero exit as this error; it is an answer here.
                Err(bollard::errors::Error::DockerContainerWaitError { code: c, .. }) => code = c,
                Err(e) => return Err(self.error(e, "wait for probe container", "container", name)),
            }
        }
        let opts = LogsOptionsBuilder::new().stdout(true).stderr(true).build();
        let mut logs = std::pin::pin!(self.client.logs(id, Some(opts)));
        let out = super::session::capture(&mut logs, |e| {
            self.error(e, "probe logs", "container", name)
        })
        .await?;
        Ok(ExecOutput { code, ..out })
    }
}

#[cfg(all(test, feature = "live-tests"))]
mod live_tests {
    //! Against the real engine: a probe under runc reports its output and exit status,
    //! and leaves no container behind.

    use super::*;

    fn sh(script: &str) -> Vec<String> {
        ["sh", "-c", script].map(String::from).to_vec()
    }

    fn probes_left() -> String {
        let out = std::process::Command::new("docker")
            .args(["ps", "-aq", "--filter", "name=bottle-probe-runc-"])
            .output()
            .expect("docker ps");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    #[tokio::test]
    async fn a_probe_reports_what_it_printed_and_leaves_nothing() {
        let docker = Docker::connect().expect("the Docker engine must be reachable");
        let info = docker.runtime_info().await.expect("info");
        assert!(!info.engine_id.is_empty());
        assert!(info.runtimes.iter().any(|r| r.name == "runc"), "{info:?}");
        let out = docker
            .probe_runtime(
                "runc",
                "debian:bookworm-slim",
                &sh("ls -d /; echo oops >&2; exit 3"),
            )
            .await
            .expect("probe");
        assert_eq!(out.code, 3, "{out:?}");
        assert_eq!(out.stdout, "/\n");
        assert_eq!(out.stderr, "oops\n");
        let missing = docker
            .probe_runtime("runc", "bottle-no-such-image:0", &sh("true"))
            .await;
        assert!(missing.is_err(), "{missing:?}");
        assert_eq!(probes_left(), "", "a probe container was left behind");
    }
}
