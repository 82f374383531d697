//! Windows console control events for `serve`: Ctrl-C, Ctrl-Break, closing
//! the console, logoff and shutdown all stop the service cleanly.
//!
//! tokio's Windows listeners return from the handler routine at once. For
//! CTRL_CLOSE, CTRL_LOGOFF and CTRL_SHUTDOWN Windows ends the process as
//! soon as the handler returns (or after about 5 s), which would cut the
//! shutdown short; this handler waits until `serve` reports it has stopped
//! (or [`CLOSE_GRACE`] passed) before it returns.

use std::io;
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::Duration;

use tokio::sync::mpsc;
use windows_sys::core::BOOL;
use windows_sys::Win32::System::Console::{
    SetConsoleCtrlHandler, CTRL_BREAK_EVENT, CTRL_CLOSE_EVENT, CTRL_C_EVENT, CTRL_LOGOFF_EVENT,
    CTRL_SHUTDOWN_EVENT,
};

/// How long a close, logoff or shutdown event holds the process open for
/// the shutdown: under the 5 s Windows allows.
const CLOSE_GRACE: Duration = Duration::from_millis(4500);

const TRUE: BOOL = 1;
const FALSE: BOOL = 0;

struct Handler {
    events: mpsc::UnboundedSender<u32>,
    stopped: Mutex<bool>,
    stopped_changed: Condvar,
}

static HANDLER: OnceLock<Handler> = OnceLock::new();

/// The console control events, from [`install`].
pub struct ConsoleEvents {
    events: mpsc::UnboundedReceiver<u32>,
}

impl ConsoleEvents {
    /// The next stop request, named as a person would say it.
    pub async fn recv(&mut self) -> &'static str {
        match self.events.recv().await {
            Some(CTRL_C_EVENT) => "Ctrl-C",
            Some(CTRL_BREAK_EVENT) => "Ctrl-Break",
            Some(CTRL_CLOSE_EVENT) => "the console was closed",
            Some(CTRL_LOGOFF_EVENT) => "logoff",
            Some(CTRL_SHUTDOWN_EVENT) => "system shutdown",
            Some(_) => "a console control event",
            // The sender lives in a static: never closed.
            None => std::future::pending().await,
        }
    }
}

/// Installs the handler routine (once per process).
pub fn install() -> io::Result<ConsoleEvents> {
    let (tx, rx) = mpsc::unbounded_channel();
    let handler = Handler {
        events: tx,
        stopped: Mutex::new(false),
        stopped_changed: Condvar::new(),
    };
    if HANDLER.set(handler).is_err() {
        return Err(io::Error::other("the console handler is already installed"));
    }
    // SAFETY: `on_control` is a valid handler routine for the whole process.
    if unsafe { SetConsoleCtrlHandler(Some(on_control), TRUE) } == 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(ConsoleEvents { events: rx })
}

/// The service has stopped: a close, logoff or shutdown handler waiting
/// for it returns (and Windows ends the process).
pub fn stopped() {
    if let Some(h) = HANDLER.get() {
        *h.stopped.lock().unwrap_or_else(|e| e.into_inner()) = true;
        h.stopped_changed.notify_all();
    }
}

/// Runs on a thread Windows creates for each event.
unsafe extern "system" fn on_control(ctrl: u32) -> BOOL {
    let Some(h) = HANDLER.get() else {
        return FALSE;
    };
    match ctrl {
        CTRL_C_EVENT | CTRL_BREAK_EVENT => {
            let _ = h.events.send(ctrl);
            TRUE
        }
        CTRL_CLOSE_EVENT | CTRL_LOGOFF_EVENT | CTRL_SHUTDOWN_EVENT => {
            if h.events.send(ctrl).is_err() {
                return FALSE;
            }
            let stopped = h.stopped.lock().unwrap_or_else(|e| e.into_inner());
            let _ = h
                .stopped_changed
                .wait_timeout_while(stopped, CLOSE_GRACE, |stopped| !*stopped);
            TRUE
        }
        _ => FALSE,
    }
}
