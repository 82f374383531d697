//! The operating system's requests to the daemon: SIGTERM and SIGINT stop
//! it, SIGHUP reloads its configuration (Unix); Ctrl-C stops it elsewhere.

/// What the operating system asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Signal {
    /// SIGTERM, SIGINT or Ctrl-C.
    Stop,
    /// SIGHUP (Unix only).
    #[cfg_attr(not(unix), allow(dead_code))]
    Reload,
}

/// The signals the daemon listens to, registered once.
pub(crate) struct Signals {
    #[cfg(unix)]
    unix: Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>,
}

impl Signals {
    /// Registers the handlers (a failure is logged; Ctrl-C still works).
    pub(crate) fn new() -> Signals {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let unix = match (
                signal(SignalKind::terminate()),
                signal(SignalKind::hangup()),
            ) {
                (Ok(term), Ok(hup)) => Some((term, hup)),
                (Err(e), _) | (_, Err(e)) => {
                    tracing::warn!("cannot watch SIGTERM/SIGHUP: {e}");
                    None
                }
            };
            Signals { unix }
        }
        #[cfg(not(unix))]
        Signals {}
    }

    /// Waits for the next signal.
    pub(crate) async fn next(&mut self) -> Signal {
        #[cfg(unix)]
        if let Some((term, hup)) = &mut self.unix {
            return tokio::select! {
                _ = tokio::signal::ctrl_c() => Signal::Stop,
                _ = term.recv() => Signal::Stop,
                _ = hup.recv() => Signal::Reload,
            };
        }
        let _ = tokio::signal::ctrl_c().await;
        Signal::Stop
    }
}
