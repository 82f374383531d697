//! Readiness notification for a service manager (systemd `Type=notify`):
//! `READY=1` once every guest listener is bound, `RELOADING=1` (with
//! `MONOTONIC_USEC`, as systemd 253 and later require) then `READY=1`
//! around a reload, `STOPPING=1` on shutdown. Without `NOTIFY_SOCKET` (not
//! started by systemd) these do nothing; on other platforms too.

#[cfg(unix)]
fn send(states: &[sd_notify::NotifyState<'_>]) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    if let Err(e) = sd_notify::notify(false, states) {
        tracing::warn!("cannot notify the service manager: {e}");
    }
}

/// `READY=1`.
pub fn notify_ready() {
    #[cfg(unix)]
    send(&[sd_notify::NotifyState::Ready]);
}

/// `RELOADING=1` and `MONOTONIC_USEC=...`.
pub fn notify_reloading() {
    #[cfg(unix)]
    match sd_notify::NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[sd_notify::NotifyState::Reloading, now]),
        Err(e) => {
            tracing::warn!("cannot read the monotonic clock: {e}");
            send(&[sd_notify::NotifyState::Reloading]);
        }
    }
}

/// `STOPPING=1`.
pub fn notify_stopping() {
    #[cfg(unix)]
    send(&[sd_notify::NotifyState::Stopping]);
}
