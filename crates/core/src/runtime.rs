//! Which runtime each container gets, decided without I/O from facts the binary gathers:
//! the engine's runtimes and the verdict of one probe of its runsc (gVisor).
//!
//! A runsc can be registered and still unusable for an agent: Debian's runsc
//! 0.0~20221219 rejects `statx` and `fstatat` with `AT_NO_AUTOMOUNT` (EINVAL), which
//! coreutils' `ls` and `stat` pass, so an agent's `ls` fails. The binary runs `ls -d /`
//! under runsc once per engine and runsc build ([`PROBE_CMD`] in [`PROBE_IMAGE`]), turns
//! the result into a [`Runsc`] verdict with [`verdict`], and attaches the
//! [`RuntimeFacts`] to the desired state. [`resolve`] then decides per container:
//!
//! | `runtime:` | runsc usable | runsc broken | no runsc |
//! |---|---|---|---|
//! | `auto` | runsc | runc, warning naming the defect and the fix | runc, warning |
//! | `runsc` | runsc | runsc, warning naming the defect and the fix | error, nothing touched |
//! | `runc` | runc | runc | runc |
//!
//! The resolved runtime is part of a container's identity: the planner recreates a
//! container whose `bottle.runtime` label differs from it (`plan::compare`). The verdict
//! is cached by the binary, so the resolution, and with it the plan, does not flap.

use bottle_engine::ExecOutput;
use bottle_model::RuntimeChoice;

use crate::apply::ApplyError;
use crate::graph::DesiredState;
use crate::nodes::ObjectSpec;

/// The image the probe runs in: the base image setup makes, always in the engine.
pub const PROBE_IMAGE: &str = "debian:bookworm-slim";

/// What the probe runs: exactly the `statx` coreutils' `ls` makes in an agent.
pub const PROBE_CMD: [&str; 3] = ["ls", "-d", "/"];

/// The fix named by every warning about a broken runsc.
pub const FIX: &str = "install a newer runsc (a gVisor release that accepts AT_NO_AUTOMOUNT \
                       in statx), then clear bottle's probe cache (see README, gVisor)";

/// What is known of the engine's runsc.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "verdict", rename_all = "lowercase")]
pub enum Runsc {
    /// The engine has no runtime named `runsc`.
    Absent,
    /// The probe passed under it.
    Usable,
    /// The probe failed under it; `defect` says how.
    Broken {
        /// What failed, as the probe saw it.
        defect: String,
    },
}

/// What [`resolve`] decides from: gathered by the binary, attached to the desired state
/// ([`DesiredState::runtimes`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuntimeFacts {
    /// The names of the engine's runtimes (for the error when runsc is required).
    pub available: Vec<String>,
    /// The verdict on its runsc.
    pub runsc: Runsc,
}

impl RuntimeFacts {
    /// Facts from the runtimes' names alone (no probe): a listed runsc is presumed
    /// usable.
    pub fn unprobed(available: Vec<String>) -> RuntimeFacts {
        let runsc = if available.iter().any(|r| r == "runsc") {
            Runsc::Usable
        } else {
            Runsc::Absent
        };
        RuntimeFacts { available, runsc }
    }
}

/// The verdict of one probe run ([`PROBE_CMD`] under runsc): usable when it exited 0,
/// else broken with what it printed on stderr (its last line, bounded), and the
/// diagnosis when it is the known `statx` defect.
pub fn verdict(probe: &ExecOutput) -> Runsc {
    if probe.code == 0 {
        return Runsc::Usable;
    }
    let said: String = probe
        .stderr
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .chars()
        .filter(|c| !c.is_control())
        .take(200)
        .collect();
    let cmd = PROBE_CMD.join(" ");
    let mut defect = format!("`{cmd}` exits {} under it", probe.code);
    if !said.is_empty() {
        defect.push_str(&format!(" ({said})"));
    }
    if said.contains("Invalid argument") {
        defect.push_str(
            ": its statx rejects AT_NO_AUTOMOUNT, which coreutils' ls and stat pass, \
             so they fail in the agent",
        );
    }
    Runsc::Broken { defect }
}

/// The runtime a container gets, and what the operator should be told about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolution {
    /// The runtime to ask the engine for; `None` is the engine's default (runc).
    pub runtime: Option<String>,
    /// A warning for `diff` and `apply` to print, naming the bottle.
    pub warning: Option<String>,
}

impl Resolution {
    /// The runtime's name as the `bottle.runtime` label records it.
    pub fn label(&self) -> &str {
        self.runtime.as_deref().unwrap_or("runc")
    }
}

/// Decide the runtime of a container of `bottle` that asks for `choice` (see the table
/// in the module's header). Only `runtime: runsc` on an engine without runsc is an
/// error.
pub fn resolve(
    bottle: &str,
    choice: RuntimeChoice,
    facts: &RuntimeFacts,
) -> Result<Resolution, ApplyError> {
    let runsc = || Some("runsc".to_string());
    let r = match (choice, &facts.runsc) {
        (RuntimeChoice::Runc, _) => Resolution {
            runtime: None,
            warning: None,
        },
        (_, Runsc::Usable) => Resolution {
            runtime: runsc(),
            warning: None,
        },
        (RuntimeChoice::Auto, Runsc::Absent) => Resolution {
            runtime: None,
            warning: Some(format!(
                "bottle {bottle}: runtime auto: the engine has no runsc (gVisor); using runc"
            )),
        },
        (RuntimeChoice::Auto, Runsc::Broken { defect }) => Resolution {
            runtime: None,
            warning: Some(format!(
                "bottle {bottle}: runtime auto: using runc, not the engine's runsc (gVisor): \
                 {defect}; to use gVisor, {FIX}"
            )),
        },
        (RuntimeChoice::Runsc, Runsc::Broken { defect }) => Resolution {
            runtime: runsc(),
            warning: Some(format!(
                "bottle {bottle}: runtime runsc: the engine's runsc (gVisor) is broken: \
                 {defect}; {FIX}, or set `runtime: auto` to get runc"
            )),
        },
        (RuntimeChoice::Runsc, Runsc::Absent) => {
            return Err(ApplyError::NoRunsc {
                bottle: bottle.to_string(),
                available: facts.available.clone(),
            });
        }
    };
    Ok(r)
}

/// The warnings of every container of `desired` that asks for gVisor, one per bottle,
/// from the facts attached to it (none without facts). Errors are not warnings: the
/// planner reports them ([`crate::apply::plan_observed`]).
pub fn warnings(desired: &DesiredState) -> Vec<String> {
    let Some(facts) = desired.runtimes.as_deref() else {
        return Vec::new();
    };
    let mut out: Vec<String> = Vec::new();
    for d in desired.objects.values() {
        let ObjectSpec::Container(_, choice) = &d.spec else {
            continue;
        };
        if let Ok(Resolution {
            warning: Some(w), ..
        }) = resolve(&d.bottle, *choice, facts)
            && !out.contains(&w)
        {
            out.push(w);
        }
    }
    out
}

/// Fail when a container of `desired` requires a runtime the attached facts say the
/// engine lacks: checked before planning, so nothing is touched.
pub fn check(desired: &DesiredState) -> Result<(), ApplyError> {
    let Some(facts) = desired.runtimes.as_deref() else {
        return Ok(());
    };
    for d in desired.objects.values() {
        if let ObjectSpec::Container(_, choice) = &d.spec {
            resolve(&d.bottle, *choice, facts)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(runsc: Runsc) -> RuntimeFacts {
        RuntimeFacts {
            available: vec!["runc".into(), "runsc".into()],
            runsc,
        }
    }

    fn broken() -> Runsc {
        verdict(&ExecOutput {
            code: 2,
            stdout: String::new(),
            stderr: "ls: cannot access '/': Invalid argument\n".into(),
        })
    }

    #[test]
    fn the_probe_names_the_statx_defect() {
        let Runsc::Broken { defect } = broken() else {
            panic!("a failed probe is a broken runsc");
        };
        assert!(defect.contains("`ls -d /` exits 2"), "{defect}");
        assert!(defect.contains("Invalid argument"), "{defect}");
        assert!(defect.contains("AT_NO_AUTOMOUNT"), "{defect}");
        assert_eq!(verdict(&ExecOutput::default()), Runsc::Usable);
        // Another failure is reported as it is, bounded and without control characters.
        let other = verdict(&ExecOutput {
            code: 127,
            stdout: String::new(),
            stderr: format!("\x1b[31m{}\n\n", "x".repeat(5000)),
        });
        let Runsc::Broken { defect } = other else {
            panic!("broken");
        };
        assert!(!defect.contains('\x1b') && !defect.contains("AT_NO_AUTOMOUNT"));
        assert!(defect.len() < 300, "{defect}");
    }

    #[test]
    fn auto_with_a_broken_runsc_gets_runc_and_a_warning_naming_defect_and_fix() {
        let r = resolve("dev", RuntimeChoice::Auto, &facts(broken())).unwrap();
        assert_eq!(r.runtime, None);
        assert_eq!(r.label(), "runc");
        let w = r.warning.unwrap();
        assert!(w.starts_with("bottle dev: runtime auto: using runc"), "{w}");
        assert!(w.contains("AT_NO_AUTOMOUNT"), "{w}");
        assert!(w.contains("a newer runsc"), "{w}");
    }

    #[test]
    fn runsc_with_a_broken_runsc_keeps_it_and_warns() {
        let r = resolve("dev", RuntimeChoice::Runsc, &facts(broken())).unwrap();
        assert_eq!(r.runtime.as_deref(), Some("runsc"));
        let w = r.warning.unwrap();
        assert!(w.contains("runtime runsc") && w.contains("broken"), "{w}");
        assert!(w.contains("a newer runsc"), "{w}");
    }

    #[test]
    fn a_usable_runsc_is_used_without_a_word_and_runc_is_runc() {
        for choice in [RuntimeChoice::Auto, RuntimeChoice::Runsc] {
            let r = resolve("dev", choice, &facts(Runsc::Usable)).unwrap();
            assert_eq!((r.label(), r.warning.as_deref()), ("runsc", None));
        }
        for runsc in [Runsc::Usable, broken(), Runsc::Absent] {
            let r = resolve("dev", RuntimeChoice::Runc, &facts(runsc)).unwrap();
            assert_eq!((r.runtime, r.warning), (None, None));
        }
    }

    #[test]
    fn no_runsc_warns_under_auto_and_is_an_error_under_runsc() {
        let f = RuntimeFacts::unprobed(vec!["runc".into()]);
        assert_eq!(f.runsc, Runsc::Absent);
        let r = resolve("dev", RuntimeChoice::Auto, &f).unwrap();
        assert_eq!(r.runtime, None);
        assert!(r.warning.unwrap().contains("no runsc"));
        let e = resolve("dev", RuntimeChoice::Runsc, &f).unwrap_err();
        assert!(e.to_string().contains("offers only: runc"), "{e}");
    }

    #[test]
    fn the_verdict_round_trips_through_json() {
        for v in [Runsc::Absent, Runsc::Usable, broken()] {
            let text = serde_json::to_string(&v).unwrap();
            assert_eq!(serde_json::from_str::<Runsc>(&text).unwrap(), v);
        }
    }
}
