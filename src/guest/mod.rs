//! The guest side of the protocol, in user space: a client that scans,
//! connects and disconnects like the `proxy_wifi` driver, and a listener for
//! the host's notifications.
//!
//! Users: this project's end-to-end tests and benchmarks, people checking a
//! host from inside a VM without the kernel driver, and VM software that
//! wants the host's Wi-Fi view. Every reply and notification is validated as
//! a careful guest would (sizes, counts, offsets, channels, elements, the
//! reply operation); a violation is a [`GuestError`] naming the rule
//! ([`Violation::rule`]). The transport is whatever [`TransportConfig`]
//! says; this module never looks at which.
//!
//! [`TransportConfig`]: crate::transport::TransportConfig

mod client;
mod connect;
mod display;
mod error;
mod notify;
mod secret;
#[cfg(test)]
mod tests;

pub use client::{reply_operation, GuestClient, DEFAULT_REQUEST_TIMEOUT};
pub use connect::{ConnectSecurity, ConnectSpec};
pub use display::{signal_bars, signal_percent, BssSummary};
pub use error::{ErrorClass, GuestError, Stage, Violation};
pub use notify::{
    Notification, NotificationWatcher, DEFAULT_NOTIFICATION_READ_TIMEOUT,
    DRIVER_NOTIFICATION_READ_TIMEOUT,
};
pub use secret::{read_secret, secret_from_env, SecretError, MAX_SECRET_LEN};
