//! The `bottle` binary: parse the command line, run the command, map errors to exit
//! statuses (0 ok, 1 differences for `diff`, 2 errors).

use clap::Parser;

fn main() {
    let mut cli = bottle::cli::Cli::parse();
    let (json, default_filter) = match &cli.command {
        bottle::cli::Command::Sidecar(_) => (true, "warn"),
        bottle::cli::Command::Apply(a) => (
            a.log_format == bottle::cli::LogFormat::Json,
            if a.watch { "info" } else { "warn" },
        ),
        _ => (false, "warn"),
    };
    init_tracing(json, default_filter);
    // Before the runtime: privileges can only be dropped for every thread while there
    // is one.
    if let bottle::cli::Command::Sidecar(args) = &mut cli.command
        && let Err(e) = bottle::sidecar::prepare(args)
    {
        eprintln!("error: {}", bottle_contract::ErrorChain(&e));
        std::process::exit(2);
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            std::process::exit(2);
        }
    };
    let code = match rt.block_on(bottle::cli::run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("{}", bottle::cli::error_line(&e));
            2
        }
    };
    std::process::exit(code);
}

/// Logs go to stderr; `RUST_LOG` filters them (default `default_filter`). Sidecars, and
/// `apply --log-format json`, log JSON.
fn init_tracing(json: bool, default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    use std::io::IsTerminal as _;
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    if json {
        b.json().init();
    } else {
        b.without_time().with_target(false).init();
    }
}
