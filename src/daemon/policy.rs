//! Per-guest policy, applied through the observer's authorization hook, and
//! the daemon-wide registry of guest-directed connections.
//!
//! Rules, checked in this order for every guest connect (the first that
//! matches decides):
//!
//! 1. An SSID in the guest's `deny_ssids` is denied (mirrored or directed).
//! 2. With `allow_ssids` set, an SSID not in it is denied.
//! 3. A guest-directed connect of a guest with `guest_directed = false`
//!    (mirror only) is denied.
//! 4. A guest-directed connect while another guest holds (or is in the
//!    middle of making) a guest-directed connection to a different SSID is
//!    denied: the host has one Wi-Fi connection per interface and joining
//!    another network would take the first guest's network away.
//!    Mirroring is never refused by this rule.
//! 5. Everything else is approved.
//!
//! The registry is updated so that rule 4 never lets two guests through at
//! once: an approved guest-directed connect *reserves* its SSID inside the
//! authorization call itself, which the handler awaits before it touches
//! the host, so the reservation exists before the guest's connect even
//! starts (and so before its answer). The guest's connection completion
//! turns the reservation into a hold (success) or drops it (failure). A hold
//! ends with the guest's disconnect completion, when the host interface
//! holding it disconnects or joins another network, when the guest mirrors
//! another network instead, and when the guest's service stops. Those
//! events reach the registry through the guest's observer queue, shortly
//! after the guest is answered: in that window another guest may still be
//! denied. The window only ever errs towards denying.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::observer::{
    Authorization, ConnectOutcome, ConnectionKind, GuestConnectCompletion, GuestDisconnect,
    HostConnection, Observer,
};
use crate::protocol::Ssid;
use crate::wifi::InterfaceId;

use super::config::PolicyConfig;

/// What one guest holds in the registry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Entry {
    /// An approved guest-directed connect still in progress.
    reserved: Option<Ssid>,
    /// A guest-directed connection the guest holds, and on which interface.
    held: Option<(Ssid, InterfaceId)>,
}

/// Who holds a guest-directed connection, daemon-wide.
#[derive(Debug, Default)]
pub struct Registry {
    entries: Mutex<HashMap<String, Entry>>,
}

impl Registry {
    /// An empty registry, shared by the daemon's guests.
    pub fn new() -> Arc<Registry> {
        Arc::new(Registry::default())
    }

    fn entries(&self) -> MutexGuard<'_, HashMap<String, Entry>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reserves `ssid` for `guest`'s guest-directed connect, unless another
    /// guest holds or reserves a different SSID; returns that guest's name
    /// and SSID on conflict.
    pub fn try_reserve(&self, guest: &str, ssid: Ssid) -> Result<(), (String, Ssid)> {
        let mut entries = self.entries();
        for (name, entry) in entries.iter() {
            if name == guest {
                continue;
            }
            let theirs = entry
                .reserved
                .iter()
                .chain(entry.held.as_ref().map(|(s, _)| s));
            for other in theirs {
                if *other != ssid {
                    return Err((name.clone(), *other));
                }
            }
        }
        entries.entry(guest.to_string()).or_default().reserved = Some(ssid);
        Ok(())
    }

    fn update(&self, guest: &str, f: impl FnOnce(&mut Entry)) {
        let mut entries = self.entries();
        let entry = entries.entry(guest.to_string()).or_default();
        f(entry);
        if *entry == Entry::default() {
            entries.remove(guest);
        }
    }

    /// Forgets everything about `guest` (its service stopped).
    pub fn forget(&self, guest: &str) {
        self.entries().remove(guest);
    }

    /// The SSID `guest` holds through a guest-directed connection.
    #[cfg(test)]
    pub fn held_by(&self, guest: &str) -> Option<Ssid> {
        self.entries()
            .get(guest)
            .and_then(|e| e.held.as_ref().map(|(s, _)| *s))
    }
}

/// A guest's policy, checked: SSIDs as the guest sends them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    /// Guest-directed connects allowed (else mirroring only).
    pub guest_directed: bool,
    /// When set, the only SSIDs the guest may join.
    pub allow: Option<HashSet<Ssid>>,
    /// SSIDs the guest may never join.
    pub deny: HashSet<Ssid>,
}

impl Policy {
    /// From the configuration (whose SSIDs were checked when it was parsed;
    /// an SSID that cannot be one is skipped).
    pub fn from_config(config: &PolicyConfig) -> Policy {
        let set = |list: &[String]| {
            list.iter()
                .filter_map(|s| Ssid::new(s.as_bytes()).ok())
                .collect::<HashSet<_>>()
        };
        Policy {
            guest_directed: config.guest_directed,
            allow: config.allow_ssids.as_deref().map(set),
            deny: set(&config.deny_ssids),
        }
    }

    /// Rules 1 to 3; `Err` says why not.
    pub fn check(&self, kind: ConnectionKind, ssid: &Ssid) -> Result<(), &'static str> {
        if self.deny.contains(ssid) {
            return Err("the SSID is on the guest's deny list");
        }
        if self.allow.as_ref().is_some_and(|a| !a.contains(ssid)) {
            return Err("the SSID is not on the guest's allow list");
        }
        if kind == ConnectionKind::GuestDirected && !self.guest_directed {
            return Err("the guest may only mirror the host's connections");
        }
        Ok(())
    }
}

/// The observer of one guest: its policy, and its part of the registry.
pub struct GuestPolicy {
    guest: String,
    policy: Policy,
    registry: Arc<Registry>,
    /// Set when the daemon removes the guest: observer calls still running
    /// on the blocking pool then neither approve nor touch the registry, so
    /// no hold outlives the guest.
    retired: Arc<AtomicBool>,
}

impl GuestPolicy {
    /// The flag that retires this policy (see the field).
    pub fn retired_flag(&self) -> Arc<AtomicBool> {
        self.retired.clone()
    }

    fn update(&self, f: impl FnOnce(&mut Entry)) {
        if !self.retired.load(Ordering::Acquire) {
            self.registry.update(&self.guest, f);
        }
    }

    /// The policy of `guest`, registered in `registry`.
    pub fn new(guest: impl Into<String>, policy: Policy, registry: Arc<Registry>) -> GuestPolicy {
        GuestPolicy {
            guest: guest.into(),
            policy,
            registry,
            retired: Arc::default(),
        }
    }
}

impl Observer for GuestPolicy {
    /// Scans change nothing the policy tracks.
    fn wants_scan_events(&self) -> bool {
        false
    }

    /// In-memory bookkeeping under short locks: it never blocks nor waits
    /// for the service.
    fn runs_inline(&self) -> bool {
        true
    }

    fn authorize_guest_connection(&self, kind: ConnectionKind, ssid: &Ssid) -> Authorization {
        let guest = &self.guest;
        if self.retired.load(Ordering::Acquire) {
            tracing::info!(%guest, %ssid, "connection denied: the guest is being removed");
            return Authorization::Deny;
        }
        if let Err(why) = self.policy.check(kind, ssid) {
            tracing::info!(%guest, %ssid, %kind, "connection denied: {why}");
            return Authorization::Deny;
        }
        if kind == ConnectionKind::GuestDirected {
            if let Err((other, theirs)) = self.registry.try_reserve(guest, *ssid) {
                tracing::info!(
                    %guest, %ssid,
                    "connection denied: guest {other} holds a guest-directed connection to {theirs}"
                );
                return Authorization::Deny;
            }
        }
        Authorization::Approve
    }

    fn guest_connect_completed(&self, c: &GuestConnectCompletion) {
        self.update(|entry| {
            match (c.kind, c.outcome, c.interface) {
                (ConnectionKind::GuestDirected, ConnectOutcome::Succeeded, Some(iface)) => {
                    entry.held = Some((c.ssid, iface));
                }
                // The guest now uses another (mirrored) connection.
                (ConnectionKind::HostMirroring, ConnectOutcome::Succeeded, _) => {
                    entry.held = None;
                }
                _ => {}
            }
            if c.kind == ConnectionKind::GuestDirected {
                entry.reserved = None;
            }
        });
    }

    fn guest_disconnect_completed(&self, _d: &GuestDisconnect) {
        self.update(|entry| entry.held = None);
    }

    fn host_disconnected(&self, interface: InterfaceId) {
        self.update(|entry| {
            if entry.held.as_ref().is_some_and(|(_, i)| *i == interface) {
                entry.held = None;
            }
        });
    }

    fn host_connected(&self, c: &HostConnection) {
        self.update(|entry| {
            if entry
                .held
                .as_ref()
                .is_some_and(|(s, i)| *i == c.interface && *s != c.ssid)
            {
                entry.held = None;
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wifi::AuthAlgorithm;

    fn ssid(s: &str) -> Ssid {
        Ssid::new(s.as_bytes()).unwrap()
    }

    const IFACE: InterfaceId = uuid::Uuid::from_u128(7);

    fn completion(
        kind: ConnectionKind,
        outcome: ConnectOutcome,
        s: &str,
    ) -> GuestConnectCompletion {
        GuestConnectCompletion {
            kind,
            outcome,
            status: 0,
            interface: (outcome == ConnectOutcome::Succeeded).then_some(IFACE),
            ssid: ssid(s),
            auth: AuthAlgorithm::Open,
        }
    }

    fn policy(text: &str) -> Policy {
        let cfg: PolicyConfig = toml::from_str(text).unwrap();
        Policy::from_config(&cfg)
    }

    use ConnectionKind::{GuestDirected as Directed, HostMirroring as Mirror};

    #[test]
    fn lists_and_mirror_only() {
        let p = policy("guest_directed = false\ndeny_ssids = [\"Evil\"]");
        assert!(p.check(Mirror, &ssid("Home")).is_ok());
        assert!(p.check(Directed, &ssid("Home")).is_err());
        assert!(p.check(Mirror, &ssid("Evil")).is_err());
        let p = policy("allow_ssids = [\"Home\", \"Work\"]\ndeny_ssids = [\"Work\"]");
        assert!(p.check(Directed, &ssid("Home")).is_ok());
        assert!(p.check(Mirror, &ssid("Cafe")).is_err());
        assert!(p.check(Directed, &ssid("Work")).is_err(), "deny wins");
        assert!(policy("").check(Directed, &ssid("Any")).is_ok());
    }

    #[test]
    fn one_guest_directed_network_at_a_time() {
        let registry = Registry::new();
        let a = GuestPolicy::new(
            "a",
            Policy::from_config(&PolicyConfig::default()),
            registry.clone(),
        );
        let b = GuestPolicy::new(
            "b",
            Policy::from_config(&PolicyConfig::default()),
            registry.clone(),
        );
        assert_eq!(
            a.authorize_guest_connection(Directed, &ssid("X")),
            Authorization::Approve
        );
        // A's connect is in progress: B may not direct another network...
        assert_eq!(
            b.authorize_guest_connection(Directed, &ssid("Y")),
            Authorization::Deny
        );
        b.guest_connect_completed(&completion(Directed, ConnectOutcome::Denied, "Y"));
        // ...but may mirror, and may direct the same one.
        assert_eq!(
            b.authorize_guest_connection(Mirror, &ssid("Y")),
            Authorization::Approve
        );
        assert_eq!(
            b.authorize_guest_connection(Directed, &ssid("X")),
            Authorization::Approve
        );
        b.guest_connect_completed(&completion(Directed, ConnectOutcome::Failed, "X"));
        a.guest_connect_completed(&completion(Directed, ConnectOutcome::Succeeded, "X"));
        assert_eq!(registry.held_by("a"), Some(ssid("X")));
        assert_eq!(
            b.authorize_guest_connection(Directed, &ssid("Y")),
            Authorization::Deny
        );
        // A may move itself to another network.
        assert_eq!(
            a.authorize_guest_connection(Directed, &ssid("Z")),
            Authorization::Approve
        );
        a.host_connected(&HostConnection {
            interface: IFACE,
            ssid: ssid("Z"),
            auth: AuthAlgorithm::Open,
        });
        a.guest_connect_completed(&completion(Directed, ConnectOutcome::Succeeded, "Z"));
        assert_eq!(registry.held_by("a"), Some(ssid("Z")));
        // A's disconnect frees the host for B.
        a.guest_disconnect_completed(&GuestDisconnect {
            kind: Directed,
            interface: IFACE,
            ssid: ssid("Z"),
        });
        assert_eq!(registry.held_by("a"), None);
        assert_eq!(
            b.authorize_guest_connection(Directed, &ssid("Y")),
            Authorization::Approve
        );
        b.guest_connect_completed(&completion(Directed, ConnectOutcome::Succeeded, "Y"));
        assert_eq!(
            a.authorize_guest_connection(Directed, &ssid("X")),
            Authorization::Deny
        );
        // The host losing B's network frees it too.
        b.host_disconnected(IFACE);
        assert_eq!(
            a.authorize_guest_connection(Directed, &ssid("X")),
            Authorization::Approve
        );
        // A stopped service forgets everything.
        registry.forget("a");
        assert_eq!(
            b.authorize_guest_connection(Directed, &ssid("Q")),
            Authorization::Approve
        );
    }

    #[test]
    fn a_failed_connect_drops_the_reservation_and_mirroring_drops_the_hold() {
        let registry = Registry::new();
        let a = GuestPolicy::new("a", Policy::default_for_tests(), registry.clone());
        let b = GuestPolicy::new("b", Policy::default_for_tests(), registry.clone());
        assert_eq!(
            a.authorize_guest_connection(Directed, &ssid("X")),
            Authorization::Approve
        );
        a.guest_connect_completed(&completion(Directed, ConnectOutcome::Failed, "X"));
        assert_eq!(
            b.authorize_guest_connection(Directed, &ssid("Y")),
            Authorization::Approve
        );
        b.guest_connect_completed(&completion(Directed, ConnectOutcome::Succeeded, "Y"));
        b.guest_connect_completed(&completion(Mirror, ConnectOutcome::Succeeded, "Fake"));
        assert_eq!(registry.held_by("b"), None);
        assert_eq!(
            a.authorize_guest_connection(Directed, &ssid("X")),
            Authorization::Approve
        );
    }

    #[test]
    fn a_retired_guest_neither_approves_nor_holds() {
        let registry = Registry::new();
        let a = GuestPolicy::new("a", Policy::default_for_tests(), registry.clone());
        let b = GuestPolicy::new("b", Policy::default_for_tests(), registry.clone());
        a.retired_flag().store(true, Ordering::Release);
        // A call still running after the daemon removed the guest.
        assert_eq!(
            a.authorize_guest_connection(Directed, &ssid("X")),
            Authorization::Deny
        );
        a.guest_connect_completed(&completion(Directed, ConnectOutcome::Succeeded, "X"));
        assert_eq!(registry.held_by("a"), None);
        assert_eq!(
            b.authorize_guest_connection(Directed, &ssid("Y")),
            Authorization::Approve
        );
    }

    impl Policy {
        fn default_for_tests() -> Policy {
            Policy::from_config(&PolicyConfig::default())
        }
    }
}
