//! Where logs go: stderr as text (the default) or JSON lines for log
//! shippers, or the systemd journal with its priorities when the service
//! runs under systemd (`JOURNAL_STREAM` set), so `journalctl -p err` finds
//! errors. The level comes from `RUST_LOG`, else the caller's default, else
//! `info`. Every line of a guest's work carries the guest's span (name and
//! transport); no key, PMK or passphrase is ever logged.

use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

/// How lines are written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Text for people; the journal instead when systemd's `JOURNAL_STREAM`
    /// is set.
    #[default]
    Text,
    /// One JSON object per line (span fields included), always on stderr.
    Json,
}

/// Where the logs ended up, for the caller to mention.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogSink {
    /// Text on stderr.
    Text,
    /// JSON lines on stderr.
    Json,
    /// The systemd journal.
    Journal,
    /// Text on stderr because the journal could not be reached (why).
    TextJournalUnavailable(String),
}

/// Installs the global subscriber (once; later calls change nothing).
pub fn init(format: LogFormat, default_level: Option<&str>) -> LogSink {
    let fallback = default_level.unwrap_or("info");
    // An invalid RUST_LOG (or one that would silence everything, like a
    // bare word) is said on stderr, never silently applied.
    let chosen = match std::env::var("RUST_LOG").ok().filter(|v| !v.is_empty()) {
        Some(text) => match crate::daemon::config::check_log_filter(&text) {
            Ok(()) => text,
            Err(e) => {
                eprintln!("proxy-wifi: ignoring RUST_LOG: {e}; logging at {fallback}");
                fallback.to_string()
            }
        },
        None => fallback.to_string(),
    };
    let filter = || log_filter(&chosen);
    let text = || {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            // A line that cannot be written (the reader of stderr went
            // away) is dropped: reporting that on stderr would panic, and
            // a daemon must not die because its log reader did.
            .log_internal_errors(false)
    };
    match format {
        LogFormat::Json => {
            let json = tracing_subscriber::fmt::layer()
                .json()
                .with_current_span(true)
                .with_span_list(false)
                .with_writer(std::io::stderr)
                .log_internal_errors(false);
            let _ = tracing_subscriber::registry()
                .with(filter())
                .with(json)
                .try_init();
            LogSink::Json
        }
        LogFormat::Text if std::env::var_os("JOURNAL_STREAM").is_some() => match journal() {
            Ok(journal) => {
                let _ = tracing_subscriber::registry()
                    .with(filter())
                    .with(journal)
                    .try_init();
                LogSink::Journal
            }
            Err(why) => {
                let _ = tracing_subscriber::registry()
                    .with(filter())
                    .with(text())
                    .try_init();
                LogSink::TextJournalUnavailable(why)
            }
        },
        LogFormat::Text => {
            let _ = tracing_subscriber::registry()
                .with(filter())
                .with(text())
                .try_init();
            LogSink::Text
        }
    }
}

/// The filter for `directives` (checked already). Per-target levels only
/// (no `[span]` directive, the usual case) are a `Targets` filter, which
/// keeps no state per span: `EnvFilter` looks each span up in a locked map
/// on every enter and exit, and a guest's span is entered on every poll of
/// its tasks, so on the request path of every request.
fn log_filter(
    directives: &str,
) -> Box<dyn tracing_subscriber::Layer<tracing_subscriber::Registry> + Send + Sync> {
    // Empty pieces (`info,`) are nothing to `EnvFilter`; `Targets` would
    // read one as a bare level (ERROR), so they are left out for it.
    let pieces: Vec<&str> = directives
        .split(',')
        .map(str::trim)
        .filter(|piece| !piece.is_empty())
        .collect();
    if !pieces.is_empty() && !directives.contains('[') {
        if let Ok(targets) = pieces.join(",").parse::<Targets>() {
            return Box::new(targets);
        }
    }
    Box::new(EnvFilter::try_new(directives).unwrap_or_else(|_| EnvFilter::new("info")))
}

#[cfg(unix)]
fn journal() -> Result<tracing_journald::Layer, String> {
    tracing_journald::layer().map_err(|e| e.to_string())
}

/// The journal is systemd's, so Unix only.
#[cfg(not(unix))]
fn journal() -> Result<tracing_subscriber::layer::Identity, String> {
    Err("there is no systemd journal on this platform".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing::Level;

    /// What `directives` enables, per (target, level), through the filter
    /// `log_filter` chose and through `EnvFilter`, which it replaces.
    fn decisions(
        filter: Box<dyn tracing_subscriber::Layer<tracing_subscriber::Registry> + Send + Sync>,
    ) -> Vec<bool> {
        let subscriber = tracing_subscriber::registry().with(filter);
        tracing::subscriber::with_default(subscriber, || {
            let mut seen = Vec::new();
            macro_rules! probe {
                ($($target:literal),*) => {$(
                    seen.push(tracing::enabled!(target: $target, Level::ERROR));
                    seen.push(tracing::enabled!(target: $target, Level::WARN));
                    seen.push(tracing::enabled!(target: $target, Level::INFO));
                    seen.push(tracing::enabled!(target: $target, Level::DEBUG));
                    seen.push(tracing::enabled!(target: $target, Level::TRACE));
                )*};
            }
            probe!(
                "proxy_wifi",
                "proxy_wifi::service::requests",
                "proxy_wifi_other",
                "zbus",
                "tokio::net"
            );
            seen
        })
    }

    #[test]
    fn the_light_filter_enables_what_env_filter_does() {
        for directives in [
            "info",
            "WARN",
            "debug",
            "off",
            "proxy_wifi=debug",
            "proxy_wifi=debug,warn",
            "warn,proxy_wifi::service=trace",
            "proxy_wifi=off,info",
            "error,zbus=debug,proxy_wifi=info",
            "info,",
            "proxy_wifi=debug,",
            ",warn",
            "debug,,proxy_wifi=trace",
        ] {
            crate::daemon::config::check_log_filter(directives).unwrap();
            let light = decisions(log_filter(directives));
            let env = decisions(Box::new(EnvFilter::try_new(directives).unwrap()));
            assert_eq!(light, env, "{directives}");
            assert!(
                light.iter().any(|&on| on) || directives == "off",
                "{directives}: nothing enabled, so the comparison shows nothing"
            );
        }
    }

    #[test]
    fn span_directives_keep_env_filter() {
        // `Targets` cannot read them; they must not be dropped silently.
        let directives = "warn,proxy_wifi[guest{guest=vm1}]=debug";
        crate::daemon::config::check_log_filter(directives).unwrap();
        let subscriber = tracing_subscriber::registry().with(log_filter(directives));
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!(target: "proxy_wifi", "guest", guest = "vm1");
            assert!(!tracing::enabled!(target: "proxy_wifi", Level::DEBUG));
            span.in_scope(|| assert!(tracing::enabled!(target: "proxy_wifi", Level::DEBUG)));
        });
    }
}
