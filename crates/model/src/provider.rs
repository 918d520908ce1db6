//! What each agent provider means inside a bottle: its default image, the CLI that
//! `bottle exec` starts, the environment it needs, and where its configuration lives.

use crate::Provider;

/// The agent's home inside the bottle (the `node` user of the provider images).
pub const HOME: &str = "/home/node";
/// The workspace volume's mount point.
pub const WORKSPACE: &str = "/home/node/workspace";
/// The prompt file, relative to the home.
pub const PROMPT_FILE: &str = ".bottle/prompt.md";
/// Set (to `1`) in an agent with `remote_control: true`: the session command then starts
/// Claude Code with [`REMOTE_CONTROL_FLAG`].
pub const REMOTE_CONTROL_ENV: &str = "BOTTLE_REMOTE_CONTROL";
/// Claude Code's flag for an interactive session with Remote Control on.
pub const REMOTE_CONTROL_FLAG: &str = "--remote-control";
/// The hosts Claude Code's Remote Control reaches from the agent, tunnelled untouched
/// (its own claude.ai login travels in them, which interception would strip or DLP
/// refuse): the Anthropic API, which relays the session (registration, polling, the
/// session's stream), and the OAuth token endpoints its login is made and refreshed
/// at. claude.ai itself is opened by the operator's browser, never by the agent.
pub const REMOTE_CONTROL_HOSTS: &[&str] = &[
    "api.anthropic.com",
    "console.anthropic.com",
    "platform.claude.com",
];

impl Provider {
    /// The default Dockerfile, embedded at compile time.
    pub fn dockerfile(self) -> &'static str {
        match self {
            Provider::Claude => include_str!("../../../Dockerfile.claude"),
            Provider::Codex => include_str!("../../../Dockerfile.codex"),
        }
    }

    /// The CLI binary the provider runs.
    pub fn cli(self) -> &'static str {
        match self {
            Provider::Claude => "claude",
            Provider::Codex => "codex",
        }
    }

    /// Where its configuration lives, relative to the home.
    pub fn config_dir(self) -> &'static str {
        match self {
            Provider::Claude => ".claude",
            Provider::Codex => ".codex",
        }
    }

    /// The command `bottle exec NAME` runs by default: the CLI, with the prompt file
    /// when the bottle has one. Codex reads its instructions from `~/.codex/AGENTS.md`,
    /// provisioned from the prompt (see `nodes::agent`). Claude Code gets
    /// [`REMOTE_CONTROL_FLAG`] in an agent that has [`REMOTE_CONTROL_ENV`] set.
    pub fn session_command(self) -> Vec<String> {
        let cli = self.cli();
        let script = match self {
            Provider::Claude => format!(
                "set -- ${{{REMOTE_CONTROL_ENV}:+{REMOTE_CONTROL_FLAG}}} \"$@\"; f={HOME}/{PROMPT_FILE}; if [ -f \"$f\" ]; then exec {cli} --append-system-prompt-file \"$f\" \"$@\"; else exec {cli} \"$@\"; fi"
            ),
            Provider::Codex => format!("exec {cli} \"$@\""),
        };
        vec!["sh".into(), "-c".into(), script, cli.into()]
    }

    /// Environment the CLI needs in every bottle (no secrets: those stay in egress).
    pub fn env(self) -> Vec<(&'static str, &'static str)> {
        match self {
            // Under gVisor, Bun's JIT must be off (oven-sh/bun#22901); harmless on runc.
            Provider::Claude => vec![
                ("BUN_JSC_useJIT", "0"),
                ("DISABLE_AUTOUPDATER", "1"),
                ("CLAUDE_CONFIG_DIR", "/home/node/.claude"),
            ],
            Provider::Codex => vec![("CODEX_HOME", "/home/node/.codex")],
        }
    }

    /// Where the prompt goes besides the prompt file, relative to the home.
    /// The file (relative to the home directory) that registers the supervise MCP
    /// server at `url` with this provider's CLI, and its contents: Claude Code's user
    /// config in `CLAUDE_CONFIG_DIR`, Codex's `config.toml` in `CODEX_HOME`.
    pub fn mcp_config(self, url: &str) -> (String, String) {
        match self {
            Provider::Claude => (
                format!("{}/.claude.json", self.config_dir()),
                serde_json::json!({
                    "mcpServers": {"supervise": {"type": "http", "url": url}}
                })
                .to_string(),
            ),
            Provider::Codex => (
                format!("{}/config.toml", self.config_dir()),
                format!("[mcp_servers.supervise]\nurl = \"{url}\"\n"),
            ),
        }
    }

    pub fn prompt_copies(self) -> &'static [&'static str] {
        match self {
            Provider::Claude => &[],
            Provider::Codex => &[".codex/AGENTS.md"],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The default Dockerfiles cannot be built offline here, so check what they say:
    /// a Node base, the tools the issue names, and the CLI the provider runs.
    #[test]
    fn default_dockerfiles_install_the_cli_they_run() {
        for (p, package) in [
            (Provider::Claude, "@anthropic-ai/claude-code"),
            (Provider::Codex, "@openai/codex"),
        ] {
            let text = p.dockerfile();
            let lines: Vec<&str> = text
                .lines()
                .map(str::trim)
                .filter(|l| !l.starts_with('#') && !l.is_empty())
                .collect();
            assert!(lines[0].starts_with("FROM node:"), "{p:?}: {}", lines[0]);
            let joined = text.replace("\\\n", " ");
            let run_lines: Vec<&str> = joined
                .lines()
                .map(str::trim)
                .filter(|l| l.starts_with("RUN "))
                .collect();
            assert!(
                run_lines
                    .iter()
                    .any(|l| l.contains("npm install -g") && l.contains(package)),
                "{p:?} does not install {package}"
            );
            for tool in ["git", "curl", "ca-certificates", "python3"] {
                assert!(
                    run_lines
                        .iter()
                        .any(|l| l.contains("apt-get install") && l.contains(tool)),
                    "{p:?} lacks {tool}"
                );
            }
            assert!(lines.contains(&"USER node"), "{p:?} runs as root");
            // The CLI it installs is the one `exec` starts.
            assert!(p.session_command()[2].contains(&format!("exec {}", p.cli())));
            let known = [
                "FROM", "RUN", "ENV", "USER", "WORKDIR", "CMD", "ARG", "COPY", "LABEL",
            ];
            for l in joined.lines().map(str::trim).filter(|l| {
                !l.is_empty() && !l.starts_with('#') && !l.starts_with("&&") && !l.starts_with("||")
            }) {
                let word = l.split_whitespace().next().unwrap_or("");
                let continuation = !word.chars().all(|c| c.is_ascii_uppercase());
                assert!(
                    continuation || known.contains(&word),
                    "{p:?}: unknown instruction {l}"
                );
            }
        }
    }

    /// The session script, run by `sh` with a stub CLI that prints its arguments.
    fn run_session(provider: Provider, env: &[(&str, &str)], args: &[&str]) -> String {
        let dir = tempfile::tempdir().expect("tempdir");
        let stub = dir.path().join(provider.cli());
        std::fs::write(&stub, "#!/bin/sh\nprintf '%s|' \"$@\"\n").expect("stub");
        let mut perm = std::fs::metadata(&stub).expect("stat").permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o755);
        std::fs::set_permissions(&stub, perm).expect("chmod");
        let cmd = provider.session_command();
        assert_eq!(cmd[0], "sh");
        let out = std::process::Command::new("/bin/sh")
            .args(&cmd[1..])
            .args(args)
            .env_clear()
            .env("PATH", dir.path())
            .envs(env.iter().copied())
            .output()
            .expect("sh");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    #[test]
    fn remote_control_adds_the_flag_to_claudes_session_only_when_set() {
        let on = [(REMOTE_CONTROL_ENV, "1")];
        assert_eq!(
            run_session(Provider::Claude, &on, &["-p", "hi"]),
            "--remote-control|-p|hi|"
        );
        assert_eq!(run_session(Provider::Claude, &[], &["-p", "hi"]), "-p|hi|");
        assert_eq!(run_session(Provider::Claude, &on, &[]), "--remote-control|");
        // Codex has no such mode: the variable changes nothing.
        assert_eq!(run_session(Provider::Codex, &on, &["x"]), "x|");
    }

    #[test]
    fn claude_session_passes_the_prompt_file() {
        let cmd = Provider::Claude.session_command();
        assert!(cmd[2].contains("--append-system-prompt-file") && cmd[2].contains(PROMPT_FILE));
    }
}
