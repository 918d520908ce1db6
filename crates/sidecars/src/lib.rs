//! The hidden `bottle sidecar <kind>` servers that run inside the sidecar image.
//!
//! One module per kind: [`pipelock`] (the firewall), [`egress`] (the credential-injecting
//! proxy), [`git_gate`], [`supervise`], and [`agent_net`] (holds the agent's network
//! namespace), and [`netlock`] (on Kubernetes, the agent pod's first init container:
//! locks the pod's network to its sidecars, then exits), and [`seed`] (on Kubernetes, the
//! helper pod that writes a volume claim's files and, exec'd as `seed-trees`, its host
//! trees), and [`volume_files`] (on Kubernetes, exec'd as `read-files` and `write-file`:
//! small files in a sidecar's own volume, how `bottle queue` reaches supervise's state).
//! Shared pieces: [`certs`], [`hop`] (hop-by-hop headers), [`reload`] (live config files), [`status`]
//! (readiness, read by the host through `bottle sidecar probe`), and for the
//! two that set up their network namespace as root, [`netlink`] and [`privs`].
//! Test doubles (a TLS test PKI and upstream, a map resolver, an in-memory audit sink)
//! exist only with the `test-util` feature; the end-to-end tests' servers are the
//! `bottle-testkit` binary, never this crate's shipped kinds.
//! Sidecars never reach into `cli/`.

pub mod agent_net;
pub mod certs;
pub mod egress;
pub mod git_gate;
pub mod hop;
pub mod netlink;
pub mod netlock;
pub mod pipelock;
pub mod privs;
pub mod reload;
pub mod seed;
pub mod status;
pub mod supervise;
pub mod volume_files;

use clap::{Args, ValueEnum};

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Kind {
    Pipelock,
    Egress,
    GitGate,
    Supervise,
    /// Holds the agent's network namespace (see [`agent_net`]).
    AgentNet,
    /// Locks the pod's network to the endpoints given, then exits (see [`netlock`]).
    Netlock,
    /// The node's chained CNI plugin that writes netlock's table into a gVisor agent
    /// pod's network namespace (see [`netlock::cni`]).
    #[value(hide = true)]
    Cni,
    /// Writes a volume claim's files and owners, then exits (see [`seed`]).
    Seed,
    /// Unpacks the host trees sent on stdin into the seeding helper's claims (see
    /// [`seed::receive_trees`]); exec'd into the helper by the engine.
    #[value(hide = true)]
    SeedTrees,
    /// Prints the regular files directly in `--dir` (after `--after`), framed as
    /// `bottle_contract::volume_files::Listing`; exec'd by the engine (see [`volume_files`]).
    #[value(hide = true)]
    ReadFiles,
    /// Writes exactly `--bytes` bytes of stdin (checked against `--sha256`) as
    /// `--dir`/`--name`; exec'd by the engine (see [`volume_files`]).
    #[value(hide = true)]
    WriteFile,
    /// The git-gate's `pre-receive` hook, run by `git receive-pack` inside the gate.
    #[value(hide = true)]
    GitGateHook,
    /// Print this container's sidecar status; exit 0 when it serves (see [`status`]).
    Probe,
}

#[derive(Debug, Args)]
pub struct SidecarArgs {
    pub kind: Kind,
    /// Address to listen on.
    #[arg(long, env = "BOTTLE_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: String,
    /// netlock's sidecar endpoints, IPv4 `ADDR:PORT` each (no other kind takes any).
    pub endpoints: Vec<String>,
    /// netlock: only prove the lock someone else wrote is in force (see [`netlock::verify`]).
    #[arg(long)]
    pub verify: bool,
    /// agent-net: set no trap, only hold the namespace (a gVisor agent pod on
    /// Kubernetes, where the node's lock refuses every other way out and gVisor has no
    /// TUN device; see [`agent_net`]).
    #[arg(long)]
    pub no_trap: bool,
    /// read-files, write-file: the directory.
    #[arg(long)]
    pub dir: Option<String>,
    /// read-files: list only the names after this one.
    #[arg(long)]
    pub after: Option<String>,
    /// write-file: the file's name in `--dir`.
    #[arg(long)]
    pub name: Option<String>,
    /// seed-trees, write-file: the exact length of what it reads from stdin.
    #[arg(long)]
    pub bytes: Option<u64>,
    /// seed-trees, write-file: the SHA-256 of what it reads, in hex.
    #[arg(long)]
    pub sha256: Option<String>,
    /// seed: wait at most this many seconds for seed-trees before writing the files.
    #[arg(long)]
    pub await_trees: Option<u64>,
    /// pipelock's gateway sink, set up by [`prepare`] before the runtime starts.
    #[arg(skip)]
    pub gateway: Option<pipelock::sink::Gateway>,
    /// agent-net's trap, set up by [`prepare`] before the runtime starts.
    #[arg(skip)]
    pub trap: Option<agent_net::Trap>,
}

/// A sidecar that must not start: its privileged set-up failed.
#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    #[error("pipelock")]
    Pipelock(#[from] privs::PrivError),
    #[error("agent-net")]
    AgentNet(#[from] agent_net::TrapError),
    #[error(transparent)]
    Netlock(#[from] netlock::LockError),
    #[error("only netlock takes endpoints")]
    Endpoints,
    #[error("only agent-net takes --no-trap")]
    NoTrap,
}

/// What a sidecar must do before the async runtime (and its threads) exist, as root:
/// pipelock takes net-internal's gateway (see [`pipelock::sink`]), agent-net sets up
/// the agent's network (see [`agent_net`]); both then drop root. netlock does all of
/// its work here (see [`netlock`]). An error means the sidecar must not start.
pub fn prepare(args: &mut SidecarArgs) -> Result<(), PrepareError> {
    // Arguments a kind does not take are refused before any privileged work.
    if !matches!(args.kind, Kind::Netlock) && !args.endpoints.is_empty() {
        return Err(PrepareError::Endpoints);
    }
    if args.no_trap && !matches!(args.kind, Kind::AgentNet) {
        return Err(PrepareError::NoTrap);
    }
    match args.kind {
        Kind::Pipelock => args.gateway = pipelock::sink::prepare()?,
        Kind::AgentNet if args.no_trap => agent_net::hold()?,
        Kind::AgentNet => args.trap = Some(agent_net::prepare()?),
        Kind::Netlock if args.verify => {
            netlock::verify(&netlock::parse_endpoints(&args.endpoints)?)?
        }
        Kind::Netlock => netlock::lock(&netlock::parse_endpoints(&args.endpoints)?)?,
        _ => {}
    }
    Ok(())
}

/// Run the sidecar until killed.
pub async fn run(args: SidecarArgs) -> anyhow::Result<()> {
    if !matches!(
        args.kind,
        Kind::Probe
            | Kind::GitGateHook
            | Kind::Netlock
            | Kind::Cni
            | Kind::Seed
            | Kind::SeedTrees
            | Kind::ReadFiles
            | Kind::WriteFile
    ) {
        status::listen_for_nudges();
    }
    match args.kind {
        Kind::Egress => Ok(egress::run(&args.listen).await?),
        Kind::Pipelock => Ok(pipelock::run(&args.listen, args.gateway).await?),
        Kind::GitGate => git_gate::serve(&args.listen).await,
        Kind::Supervise => supervise::run(&args.listen).await,
        Kind::AgentNet if args.no_trap => {
            status::ready(agent_net::NO_TRAP);
            tracing::info!("agent-net: {}", agent_net::NO_TRAP);
            // Nothing to serve: it holds the namespace until it is stopped.
            std::future::pending().await
        }
        Kind::AgentNet => {
            let trap = args
                .trap
                .ok_or_else(|| anyhow::anyhow!("agent-net was not prepared"))?;
            status::ready("the trap is in place");
            tokio::task::spawn_blocking(move || trap.run()).await??;
            anyhow::bail!("agent-net: the TUN device closed");
        }
        Kind::GitGateHook => {
            // Its output goes to the pushing agent: the exit status is the verdict.
            let code = tokio::task::spawn_blocking(git_gate::hook::run).await?;
            std::process::exit(code);
        }
        Kind::Probe => std::process::exit(status::probe()),
        // Locked in `prepare`: nothing runs on.
        Kind::Netlock => Ok(()),
        Kind::Cni => std::process::exit(netlock::cni::run().await),
        Kind::Seed => {
            let wait = args.await_trees.map(std::time::Duration::from_secs);
            tokio::task::spawn_blocking(move || {
                seed::run_after_trees(
                    std::path::Path::new(bottle_contract::seed::MOUNT),
                    std::path::Path::new(bottle_contract::seed::SPOOL),
                    wait,
                )
            })
            .await??;
            Ok(())
        }
        Kind::SeedTrees => {
            let (Some(bytes), Some(sha256)) = (args.bytes, args.sha256) else {
                anyhow::bail!("seed-trees takes --bytes and --sha256");
            };
            tokio::task::spawn_blocking(move || {
                seed::receive_trees(
                    std::path::Path::new(bottle_contract::seed::VOLUMES),
                    std::path::Path::new(bottle_contract::seed::SPOOL),
                    std::io::stdin().lock(),
                    bytes,
                    &sha256,
                )
            })
            .await??;
            Ok(())
        }
        Kind::ReadFiles => {
            let dir = checked_dir(args.dir.as_deref())?;
            let listing = tokio::task::spawn_blocking(move || {
                volume_files::list(std::path::Path::new(&dir), args.after.as_deref())
            })
            .await??;
            use std::io::Write as _;
            let mut out = std::io::stdout().lock();
            out.write_all(listing.encode().as_bytes())?;
            out.flush()?;
            Ok(())
        }
        Kind::WriteFile => {
            let dir = checked_dir(args.dir.as_deref())?;
            let (Some(name), Some(bytes), Some(sha256)) = (args.name, args.bytes, args.sha256)
            else {
                anyhow::bail!("write-file takes --dir, --name, --bytes and --sha256");
            };
            tokio::task::spawn_blocking(move || {
                let data = bottle_contract::volume_files::read_input(
                    std::io::stdin().lock(),
                    bytes,
                    &sha256,
                )?;
                volume_files::write(std::path::Path::new(&dir), &name, &data)
            })
            .await??;
            Ok(())
        }
    }
}

/// read-files' and write-file's `--dir`: an absolute path of plain components.
fn checked_dir(dir: Option<&str>) -> anyhow::Result<String> {
    let dir = dir.ok_or_else(|| anyhow::anyhow!("read-files and write-file take --dir"))?;
    if !bottle_contract::volume_files::valid_dir(dir) {
        return Err(bottle_contract::volume_files::FramingError::BadDir(dir.into()).into());
    }
    Ok(dir.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: SidecarArgs,
    }

    fn parse(argv: &[&str]) -> SidecarArgs {
        Cli::try_parse_from(std::iter::once("sidecar").chain(argv.iter().copied()))
            .expect("parses")
            .args
    }

    #[test]
    fn only_agent_net_takes_no_trap() {
        // agent-net's own prepare would drop this test's root: `hold` is run by the
        // Kubernetes engine test that runs a gVisor bottle.
        assert!(parse(&["agent-net", "--no-trap"]).no_trap);
        assert!(!parse(&["agent-net"]).no_trap);
        let mut e = parse(&["egress", "--no-trap"]);
        assert!(matches!(prepare(&mut e), Err(PrepareError::NoTrap)));
    }
}
