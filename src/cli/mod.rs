//! The `proxy-wifi` command: argument parsing, output for people, exit codes.
//! Nothing else lives here.

#[cfg(windows)]
mod console;
mod ctl;
mod guest;
mod serve;
mod transport_args;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

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
    let cli = Cli::parse();
    let level = match &cli.command {
        Command::Serve(args) => serve::config_log_level(args),
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
        }
    })
}
