//! One daemon for many VMs: a configuration file with one `[[guest]]` per
//! VM, one shared host backend, per-guest policy, a control socket and
//! metrics.

pub mod config;

pub use config::{BackendKind, ConfigError, DaemonConfig, GuestConfig, PolicyConfig};
