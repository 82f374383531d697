//! The `proxy-wifi` command: argument parsing, output for people, exit codes.
//! Nothing else lives here.

mod ctl;
mod guest;
mod help;
mod serve;
mod transport_args;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{FromArgMatches, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "proxy-wifi",
    version,
    about = "Lets virtual machines use the host's Wi-Fi"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the proxy_wifi protocol to guests (the host service).
    Serve(serve::ServeArgs),
    /// Act as a guest: scan, connect, disconnect, watch notifications.
    Guest(guest::GuestArgs),
    /// Control a running service through its control socket.
    Ctl(ctl::CtlArgs),
    /// Print a shell completion script (bash, zsh, fish, ...).
    #[command(after_help = "Examples:
  proxy-wifi completions bash > /etc/bash_completion.d/proxy-wifi
  proxy-wifi completions zsh > \"${fpath[1]}/_proxy-wifi\"
  proxy-wifi completions fish > ~/.config/fish/completions/proxy-wifi.fish")]
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write the man pages (proxy-wifi.1 and one per subcommand) into DIR.
    #[command(hide = true)]
    Man {
        /// The directory to write into (created if missing).
        dir: PathBuf,
    },
}

/// Logs go to stderr, level from RUST_LOG, else `default` (the daemon
/// configuration's `log_level`), else info.
fn init_logging(default: Option<&str>) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default.unwrap_or("info")));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

pub fn main() -> ExitCode {
    let matches = help::command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    let level = match &cli.command {
        Command::Serve(args) => serve::config_log_level(args),
        Command::Completions { shell } => {
            help::print_completions(*shell);
            return ExitCode::SUCCESS;
        }
        Command::Man { dir } => {
            return match help::write_man_pages(dir) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("proxy-wifi man: cannot write into {}: {e}", dir.display());
                    ExitCode::FAILURE
                }
            };
        }
        _ => None,
    };
    init_logging(level.as_deref());
    // One worker: a request's tasks (connection, handler) then hand off to
    // each other on one thread instead of waking a second worker for each
    // hop, which cost about a fifth of a request's latency in
    // `cargo bench --bench e2e` (BENCHMARKS.md). The work per request is
    // microseconds; one thread serves far more guests than a host runs.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("proxy-wifi: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => serve::run(args).await,
            Command::Guest(args) => guest::run(args).await,
            Command::Ctl(args) => ctl::run(args).await,
            // Answered above, without a runtime.
            Command::Completions { .. } | Command::Man { .. } => ExitCode::SUCCESS,
        }
    })
}
