//! `bottle completions SHELL`: print a completion script for bash, zsh, fish,
//! PowerShell or elvish (clap_complete, from the same command definition the parser
//! uses; hidden commands such as `sidecar` stay out).

use clap::CommandFactory as _;
use clap_complete::Shell;

use super::{Cli, CompletionsArgs, write_stdout};

/// The completion script for `shell`.
pub fn script(shell: Shell) -> Vec<u8> {
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut visible_command(), "bottle", &mut out);
    out
}

/// The command line less its hidden subcommands. clap_complete's generators offer
/// hidden subcommands too (clap-rs/clap#1335) and clap cannot remove one, so the root
/// is put together again from [`Cli`]'s own arguments and visible subcommands: nothing
/// of the command line is restated here.
fn visible_command() -> clap::Command {
    let full = Cli::command();
    let mut root = clap::Command::new("bottle")
        .version(env!("CARGO_PKG_VERSION"))
        .args(full.get_arguments().cloned())
        .subcommands(full.get_subcommands().filter(|c| !c.is_hide_set()).cloned());
    if let Some(about) = full.get_about() {
        root = root.about(about.clone());
    }
    root
}

pub fn run(args: CompletionsArgs) -> anyhow::Result<i32> {
    write_stdout(&script(args.shell))?;
    Ok(0)
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory as _, Parser as _, ValueEnum as _};

    use super::*;

    /// `word` in `line`, not as part of a longer word (`sidecar`, not `sidecars`).
    fn has_word(line: &str, word: &str) -> bool {
        let part = |c: Option<char>| c.is_some_and(char::is_alphanumeric);
        line.match_indices(word).any(|(i, _)| {
            !part(line[..i].chars().next_back()) && !part(line[i + word.len()..].chars().next())
        })
    }

    #[test]
    fn every_shell_gets_a_script_naming_the_commands_but_not_the_hidden_ones() {
        let hidden: Vec<String> = Cli::command()
            .get_subcommands()
            .filter(|c| c.is_hide_set())
            .map(|c| c.get_name().to_owned())
            .collect();
        assert_eq!(hidden, ["sidecar"]);
        for shell in Shell::value_variants() {
            let text = String::from_utf8(script(*shell)).expect("UTF-8");
            assert!(!text.is_empty(), "{shell}");
            for command in ["apply", "diff", "queue", "schema", "completions"] {
                assert!(text.contains(command), "{shell} lacks {command}");
            }
            for name in &hidden {
                let shown: Vec<&str> = text.lines().filter(|l| has_word(l, name)).collect();
                assert!(shown.is_empty(), "{shell} offers hidden {name}: {shown:#?}");
            }
        }
    }

    #[test]
    fn the_shell_is_an_argument() {
        let cli = Cli::try_parse_from(["bottle", "completions", "zsh"]).expect("parses");
        assert!(matches!(
            cli.command,
            super::super::Command::Completions(CompletionsArgs { shell: Shell::Zsh })
        ));
        assert!(Cli::try_parse_from(["bottle", "completions", "tcsh"]).is_err());
        assert!(Cli::try_parse_from(["bottle", "schema"]).is_ok());
    }
}
