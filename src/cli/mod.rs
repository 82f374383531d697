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
use proxy_wifi::logging::{self, LogFormat, LogSink};

#[derive(Debug, Parser)]
#[command(
    name = "proxy-wifi",
    version,
    about = "Lets virtual machines use the host's Wi-Fi"
)]
struct Cli {
    /// Log lines as text (the systemd journal when JOURNAL_STREAM is set)
    /// or as JSON objects, on stderr.
    #[arg(long, value_enum, global = true, default_value_t = LogFormatArg::Text)]
    log_format: LogFormatArg,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormatArg {
    Text,
    Json,
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
    let matches = help::command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    if !matches!(cli.command, Command::Serve(_)) {
        end_quietly_on_closed_output();
    }
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
    // Read before logging starts, like the level: the file is loaded
    // (and its warnings logged) once more by `serve`.
    let threads = match &cli.command {
        Command::Serve(args) => serve::runtime_threads(args),
        _ => 1,
    };
    let format = match cli.log_format {
        LogFormatArg::Text => LogFormat::Text,
        LogFormatArg::Json => LogFormat::Json,
    };
    // The level: RUST_LOG, else the configuration's log_level, else info.
    if let LogSink::TextJournalUnavailable(why) = logging::init(format, level.as_deref()) {
        eprintln!("proxy-wifi: JOURNAL_STREAM is set but the journal is unreachable ({why}); logging to stderr");
    }
    let runtime = match build_runtime(threads) {
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

/// The async runtime. One thread by default: a current-thread runtime on
/// the main thread, so a guest request (accept, read, handler, reply) is
/// served where the socket's wakeup lands, with one wakeup per request and
/// no hand-off to a second thread (a cross-CPU wakeup costs more than the
/// request's work; BENCHMARKS.md). Work that may block (observer calls,
/// WlanAPI calls, file I/O of the iwd backend) goes to the blocking pool.
/// `threads` > 1 (`serve --threads`, the file's `threads`): a multi-thread
/// runtime with that many workers, for hosts whose guests keep more than
/// one CPU busy.
fn build_runtime(threads: usize) -> std::io::Result<tokio::runtime::Runtime> {
    if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
    }
}
