//! The one integration-test binary: it runs the real `bottle` against the real Docker
//! engine. Set-up (base image, static sidecar binary) is done by `scripts/test.sh`.

// Shared helpers: temp manifests, running `bottle`, Docker queries and cleanup.
mod util;

// Issue 2: the declarative core (diff / apply / delete / get) end to end.
mod core;

// Issue 3: the agent inside (workspace, prompt, skills, exec, logs, gVisor).
mod agent;

// Issue 4: the egress proxy (credential injection) end to end.
mod egress;

// Codex on the host's ChatGPT login: egress injects the host's token, the agent holds none.
mod codex_login;

// Claude Code's Remote Control: `bottle exec` passes the flag, egress tunnels its hosts.
mod remote_control;

// Issue 5: pipelock, the bottle's firewall, end to end.
mod pipelock;

// Issue 7: the git-gate (secret-scanned pushes forwarded over SSH).
mod gitgate;

// Issue 8: supervise (MCP proposals, the operator's queue, grants).
mod supervise;

// Issue 6: `apply --watch` keeps Docker converged (events, manifest edits, one writer).
mod watch;

// Issue 16: a hostile agent tries every evasion class against egress and pipelock.
mod containment;

// Issue 20: the operator's console in a real browser (headless Chromium, WebDriver).
mod console;
// Issue 17 (point 3): `bottle verify` checks a running bottle from inside its agent.
mod verify;

// Issue 18: each network on a /28 of bottle's own pool, many bottles, concurrent applies.
mod subnets;
