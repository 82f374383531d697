//! The `proxy-wifi` command: argument parsing, output for people, exit codes.
//! Nothing else lives here.

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
    let fallback = default.unwrap_or("info");
    // An invalid RUST_LOG (or one that would silence everything, like a
    // bare word) is said on stderr, never silently applied.
    let from_env = std::env::var("RUST_LOG").ok().filter(|v| !v.is_empty());
    let chosen = match from_env {
        Some(text) => match proxy_wifi::daemon::config::check_log_filter(&text) {
            Ok(()) => text,
            Err(e) => {
                eprintln!("proxy-wifi: ignoring RUST_LOG: {e}; logging at {fallback}");
                fallback.to_string()
            }
        },
        None => fallback.to_string(),
    };
    let filter = tracing_subscriber::EnvFilter::try_new(&chosen)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        // A log line that cannot be written (the reader of stderr went
        // away) is dropped: reporting that on stderr would panic, and a
        // daemon must not die because its log reader did.
        .log_internal_errors(false)
        .try_init();
}

/// The one-shot commands (`guest`, `ctl`) end quietly, as `cat` does, when
/// the reader of their output goes away (`| head -1`): the default SIGPIPE
/// action, which Rust's runtime replaces with an error that `println!`
/// turns into a panic. `serve` keeps ignoring SIGPIPE: a closed log pipe or
/// guest socket is an error to handle, never a reason to die.
fn end_quietly_on_closed_output() {
    #[cfg(unix)]
    // SAFETY: sets a signal disposition to its default, before any thread
    // of ours starts; no handler code runs.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Serve(_)) {
        end_quietly_on_closed_output();
    }
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
