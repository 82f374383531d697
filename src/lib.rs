//! proxy-wifi: lets virtual machines use the host's Wi-Fi.
//!
//! A guest running the Linux `proxy_wifi` cfg80211 driver sees a Wi-Fi card;
//! its scans, connects and disconnects arrive here over a VM socket and are
//! honoured on the host, and the host tells the guest when signal changes or
//! scan results arrive. See the README for the architecture.
//!
//! Layers, ground floor first: [`protocol`] (wire format, no I/O), [`wifi`]
//! (the interface trait and its implementations), [`transport`] (VM sockets),
//! then the handler, service and daemon built on them.

#![warn(missing_docs)]

pub mod protocol;
pub mod transport;
pub mod wifi;

mod accept_backoff;
pub mod control;
pub mod daemon;
pub mod guest;
pub mod handler;
pub mod logging;
pub mod metrics;
pub mod observer;
pub mod service;
#[doc(hidden)]
pub mod test_utils;
