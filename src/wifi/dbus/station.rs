//! One host Wi-Fi interface of a D-Bus backend, the part that does not
//! depend on the service: link-state tracking, the host scan in progress,
//! and the connect task.
//!
//! A backend implements [`HostStation`] (its D-Bus calls) and embeds a
//! [`StationCore`]; every [`HostStation`] is a [`WifiInterface`] through
//! the logic here, once for both backends, and [`link_changed`] tracks its
//! link from the service's state changes.
//!
//! # A guest scan never waits for a host scan
//!
//! A guest scan is answered at once from the service's cached list. If no
//! host scan is running, one is started in the background; if one is
//! running, it is left to finish. Either way the fresh results go out as
//! an [`InterfaceEvent::ScanResults`], which the handler sends the guest as
//! a scan notification (scan_complete 0 unless it completes a pending scan,
//! see PROTOCOL.md, "Hazard"). A targeted scan for another SSID than the
//! running host scan probes still gets its own host scan, queued behind the
//! running one (on a backend whose host scans probe SSIDs).
//!
//! Why: the guest's answer time is then the cache's read time, as
//! `nmcli dev wifi list --rescan no`'s is, and the fresh results still
//! reach the guest within the running scan's bound. Waiting for a running
//! host scan (the C++ reference host's way: "If a host scan is already
//! running, it waits for that scan's results instead") made a guest scan
//! that followed another one within a scan's length take up to the whole
//! host scan (measured 1.1-3.4 s under NetworkManager in the VM test,
//! against 0.4-0.8 s from the cache). This backend deviates from the
//! reference there, on purpose.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use async_trait::async_trait;
use futures::future::BoxFuture;
use tokio::sync::{oneshot, watch};
use tracing::{debug, info, warn};

use zbus::zvariant::{ObjectPath, OwnedObjectPath};

use crate::protocol::Ssid;
use crate::wifi::dbus::{call_error, error_name};
use crate::wifi::{
    ConnectParams, ConnectedNetwork, EventHub, InterfaceError, InterfaceEvent, InterfaceId,
    ScanResult, ScannedBss, WifiInterface,
};

/// How one host scan ended, as the backend saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HostScan {
    /// It ended: the service's list is fresh.
    Fresh,
    /// The service refused it (rate limit, radio off, not allowed):
    /// nothing new, and nothing to retry.
    Refused,
    /// The service accepted it, but it did not end within its bound (a
    /// supplicant may drop a request while a scan of its own runs).
    Unfinished,
}

/// How a backend's host scans behave, for the shared scan logic.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ScanPolicy {
    /// Whether a host scan can probe a given SSID. If so, a targeted guest
    /// scan for another SSID than the running host scan's gets a host scan
    /// of its own after it.
    pub probes_ssid: bool,
    /// Host scans in all for one guest scan whose host scan did not end.
    pub attempts_if_unfinished: u32,
    /// Host scans in all for a targeted guest scan whose SSID is not in the
    /// fresh results.
    pub attempts_for_missing_target: u32,
    /// Whether an empty answer says "still scanning" (the results follow as
    /// an event) rather than "nothing here".
    pub empty_means_scanning: bool,
}

/// What a D-Bus backend does for one interface: its service calls. The
/// shared logic of this module drives them.
#[async_trait]
pub(crate) trait HostStation: Send + Sync + Sized + 'static {
    /// How this backend's host scans behave.
    const SCAN_POLICY: ScanPolicy;

    /// The D-Bus error name of a disconnect refused because the interface
    /// is not connected (which is fine).
    const NOT_CONNECTED_ERROR: &'static str;

    /// The service-independent state.
    fn core(&self) -> &StationCore<Self>;

    /// The BSSes the service knows now, for a guest scan for `target`.
    async fn cached_bss(&self, target: Option<&Ssid>) -> Result<Vec<ScannedBss>, InterfaceError>;

    /// Asks the service for one host scan (probing `target`, where the
    /// service can) and waits until it ends, within the backend's bound.
    async fn host_scan(&self, target: Option<Ssid>) -> HostScan;

    /// The network the interface is on, once the service says it is
    /// connected (for the `Connected` event).
    async fn connected_now(&self) -> Result<Option<ConnectedNetwork>, InterfaceError>;

    /// The network the interface is on, for
    /// [`WifiInterface::connected_network`].
    async fn current_connection(&self) -> Result<Option<ConnectedNetwork>, InterfaceError>;

    /// Joins the network of `params` with what the guest's connection
    /// needs on the host; leaves nothing behind when it fails. Runs with
    /// the interface's operation lock held, after the guest's earlier
    /// connection was removed.
    async fn activate(&self, params: &ConnectParams) -> Result<ConnectedNetwork, InterfaceError>;

    /// Undoes an activation whose caller gave up. Runs with the operation
    /// lock held.
    async fn undo_activation(&self);

    /// Removes what the guest's connection made on the host (a profile, a
    /// file), if anything.
    async fn remove_guest_connection(&self);

    /// Asks the service to disconnect the interface.
    async fn request_disconnect(&self) -> zbus::Result<()>;
}

/// Whether the interface is connected, as observers were told.
#[derive(Debug, Default)]
struct LinkState {
    /// Whether observers were told (or, at start, the interface was)
    /// connected, so a later disconnection is reported exactly once.
    connected: bool,
    /// Whether the interface's last state had a link. Leaving it is a
    /// disconnection even when the link dropped before the "connected"
    /// lookup finished (a guest connect succeeds at link-up).
    link_up: bool,
    /// Bumped on every state change, so a slow "connected" lookup can tell
    /// it has been overtaken.
    generation: u64,
}

/// The host scan an interface is running.
struct InFlightScan {
    /// The SSID it probes, if it is a targeted scan.
    target: Option<Ssid>,
    /// Turns true when it has ended.
    done: watch::Receiver<bool>,
}

/// The service-independent state of one interface `S` of a D-Bus backend.
pub(crate) struct StationCore<S> {
    id: InterfaceId,
    name: String,
    /// Its object path on the service.
    path: OwnedObjectPath,
    /// The interface itself, for the tasks it starts.
    me: Weak<S>,
    /// Where its events go.
    hub: Arc<EventHub>,
    gone: AtomicBool,
    link: Mutex<LinkState>,
    scan: Mutex<Option<InFlightScan>>,
    /// Serializes connects and disconnects of this interface.
    pub(crate) op_lock: Arc<tokio::sync::Mutex<()>>,
    /// Counts connects, so an undo can tell a later connect replaced the
    /// one it would undo.
    connects: AtomicU64,
}

fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// What an interface is at start.
pub(crate) struct StationStart {
    pub id: InterfaceId,
    pub name: String,
    pub path: OwnedObjectPath,
    /// Whether it is connected (as observers will be told).
    pub connected: bool,
    /// Whether it has a link.
    pub link_up: bool,
}

impl<S> StationCore<S> {
    /// The core of the interface `me` (made in `Arc::new_cyclic`), whose
    /// events go to `hub`.
    pub(crate) fn new(me: Weak<S>, hub: Arc<EventHub>, start: StationStart) -> StationCore<S> {
        let StationStart {
            id,
            name,
            path,
            connected,
            link_up,
        } = start;
        StationCore {
            id,
            name,
            path,
            me,
            hub,
            gone: AtomicBool::new(false),
            link: Mutex::new(LinkState {
                connected,
                link_up,
                generation: 0,
            }),
            scan: Mutex::new(None),
            op_lock: Arc::new(tokio::sync::Mutex::new(())),
            connects: AtomicU64::new(0),
        }
    }

    pub(crate) fn id(&self) -> InterfaceId {
        self.id
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn path(&self) -> &OwnedObjectPath {
        &self.path
    }

    /// The interface went away: every later call fails with
    /// [`InterfaceError::Gone`] and no more events are sent.
    pub(crate) fn mark_gone(&self) {
        self.gone.store(true, Ordering::SeqCst);
    }

    pub(crate) fn is_gone(&self) -> bool {
        self.gone.load(Ordering::SeqCst)
    }

    /// `Err(Gone)` once the interface went away.
    pub(crate) fn check(&self) -> Result<(), InterfaceError> {
        if self.is_gone() {
            Err(InterfaceError::Gone)
        } else {
            Ok(())
        }
    }

    /// Sends `event` to observers, unless the interface went away.
    pub(crate) fn publish(&self, event: InterfaceEvent) {
        if !self.is_gone() {
            self.hub.publish(event);
        }
    }

    /// The interface as the `Arc` it lives in (`None` while it is dropped).
    pub(crate) fn me(&self) -> Option<Arc<S>> {
        self.me.upgrade()
    }

    /// Whether observers were told the interface is connected.
    pub(crate) fn is_connected(&self) -> bool {
        locked(&self.link).connected
    }

    /// Begins a host scan for `target` unless one is running.
    fn begin_scan(&self, target: Option<Ssid>) -> Option<watch::Sender<bool>> {
        let mut scan = locked(&self.scan);
        if scan.is_some() {
            return None;
        }
        let (done_tx, done_rx) = watch::channel(false);
        *scan = Some(InFlightScan {
            target,
            done: done_rx,
        });
        Some(done_tx)
    }

    fn end_scan(&self, done: watch::Sender<bool>) {
        *locked(&self.scan) = None;
        let _ = done.send(true);
    }
}

/// A backend's interfaces, found by object path, and mirrored in its event
/// hub.
pub(crate) struct Stations<S> {
    hub: Arc<EventHub>,
    list: Mutex<Vec<Arc<S>>>,
}

impl<S: HostStation> Stations<S> {
    /// No interfaces; those added go to `hub`.
    pub(crate) fn new(hub: Arc<EventHub>) -> Stations<S> {
        Stations {
            hub,
            list: Mutex::new(Vec::new()),
        }
    }

    /// Adds `station` and tells observers, unless one with its path is
    /// there already; whether it was added.
    pub(crate) fn add(&self, station: Arc<S>) -> bool {
        {
            let mut list = locked(&self.list);
            if list.iter().any(|s| s.core().path == station.core().path) {
                return false;
            }
            list.push(station.clone());
        }
        self.hub.add(station);
        true
    }

    /// Removes the interface at `path`, which is then gone for good;
    /// returns it.
    pub(crate) fn remove(&self, path: &ObjectPath<'_>) -> Option<Arc<S>> {
        let removed = {
            let mut list = locked(&self.list);
            let pos = list.iter().position(|s| s.core().path.as_ref() == *path);
            pos.map(|i| list.remove(i))
        }?;
        self.forget(&removed);
        Some(removed)
    }

    /// Removes every interface (the service went away); returns them.
    pub(crate) fn clear(&self) -> Vec<Arc<S>> {
        let all = std::mem::take(&mut *locked(&self.list));
        for station in &all {
            self.forget(station);
        }
        all
    }

    fn forget(&self, station: &S) {
        station.core().mark_gone();
        self.hub.remove(station.core().id);
    }

    /// The interface at `path`, if any.
    pub(crate) fn find(&self, path: &ObjectPath<'_>) -> Option<Arc<S>> {
        locked(&self.list)
            .iter()
            .find(|s| s.core().path.as_ref() == *path)
            .cloned()
    }

    /// Every interface now.
    pub(crate) fn all(&self) -> Vec<Arc<S>> {
        locked(&self.list).clone()
    }
}

/// The interface's state changed; `linked` says whether it has a link now,
/// `announce` whether this is the state in which the service names the
/// network (then a `Connected` event follows, from
/// [`HostStation::connected_now`], unless a later change overtook it).
/// Losing the link publishes `Disconnected` once; returns whether it did.
pub(crate) fn link_changed<S: HostStation>(station: &Arc<S>, linked: bool, announce: bool) -> bool {
    let core = station.core();
    let (generation, lost) = {
        let mut link = locked(&core.link);
        link.generation += 1;
        let lost = if linked {
            link.link_up = true;
            false
        } else if link.connected || link.link_up {
            link.connected = false;
            link.link_up = false;
            true
        } else {
            false
        };
        if lost {
            core.publish(InterfaceEvent::Disconnected { iface: core.id });
        }
        (link.generation, lost)
    };
    if announce {
        let station = station.clone();
        tokio::spawn(async move {
            let core = station.core();
            let network = match station.connected_now().await {
                Ok(Some(n)) => n,
                Ok(None) => return,
                Err(e) => {
                    debug!(iface = %core.name, "cannot read the new connection: {e}");
                    return;
                }
            };
            let mut link = locked(&core.link);
            if link.generation == generation && !link.connected {
                link.connected = true;
                core.publish(InterfaceEvent::Connected {
                    iface: core.id,
                    network,
                });
            }
        });
    }
    lost
}

/// A guest scan for `target`: the cached BSSes, at once, never waiting for
/// a host scan (see the module documentation). A host scan is then always
/// under way, whose fresh results follow as an event.
pub(crate) async fn scan<S: HostStation>(
    station: &Arc<S>,
    target: Option<&Ssid>,
) -> Result<Vec<ScannedBss>, InterfaceError> {
    enum Plan {
        Start(watch::Sender<bool>),
        /// A targeted scan while a host scan that does not probe its SSID
        /// runs: it gets its own host scan after that one.
        Queue,
        /// A host scan is running: its results will go out as an event.
        LeaveRunning,
    }
    let core = station.core();
    core.check()?;
    let target = target.copied().filter(|s| !s.is_empty());
    let plan = match core.begin_scan(target) {
        Some(done) => Plan::Start(done),
        None => {
            let running_target = locked(&core.scan).as_ref().map(|s| s.target);
            match running_target {
                Some(t) if S::SCAN_POLICY.probes_ssid && target.is_some() && t != target => {
                    Plan::Queue
                }
                Some(_) => Plan::LeaveRunning,
                // It ended in between.
                None => Plan::Queue,
            }
        }
    };
    let cached = station.cached_bss(target.as_ref()).await;
    match plan {
        Plan::Start(done) => {
            tokio::spawn(run_host_scan(station.clone(), target, done, 1));
        }
        Plan::Queue => {
            debug!(iface = %core.name, "a host scan is running; this one's follows it");
            tokio::spawn(scan_when_idle(station.clone(), target, 1));
        }
        Plan::LeaveRunning => {
            debug!(iface = %core.name, "a host scan is running; answering from the cache");
        }
    }
    cached
}

/// Runs a host scan for `target` as soon as no other one runs (a queued
/// targeted scan, or a retry).
///
/// Boxed: it and `run_host_scan` start each other.
fn scan_when_idle<S: HostStation>(
    station: Arc<S>,
    target: Option<Ssid>,
    attempt: u32,
) -> BoxFuture<'static, ()> {
    Box::pin(async move {
        loop {
            let core = station.core();
            if core.is_gone() {
                return;
            }
            let running = locked(&core.scan).as_ref().map(|s| s.done.clone());
            match running {
                Some(mut done) => {
                    let _ = done.wait_for(|d| *d).await;
                }
                None => {
                    if let Some(done) = core.begin_scan(target) {
                        run_host_scan(station, target, done, attempt).await;
                        return;
                    }
                }
            }
        }
    })
}

/// Runs one host scan to its end and publishes its results, retrying as
/// the backend's [`ScanPolicy`] says.
async fn run_host_scan<S: HostStation>(
    station: Arc<S>,
    target: Option<Ssid>,
    done: watch::Sender<bool>,
    attempt: u32,
) {
    let core = station.core();
    let outcome = station.host_scan(target).await;
    // Closed before it is announced: a guest scan from now on starts a new
    // one.
    core.end_scan(done);
    if core.is_gone() {
        return;
    }
    let bss = match outcome {
        HostScan::Fresh => match station.cached_bss(target.as_ref()).await {
            Ok(bss) => Some(bss),
            Err(e) => {
                debug!(iface = %core.name, "cannot read fresh scan results: {e}");
                None
            }
        },
        HostScan::Refused | HostScan::Unfinished => None,
    };
    let policy = S::SCAN_POLICY;
    let missed_target = match (target, &bss) {
        (Some(t), Some(list)) => !list.iter().any(|b| b.ssid == t),
        _ => false,
    };
    let retry = (outcome == HostScan::Unfinished && attempt < policy.attempts_if_unfinished)
        || (missed_target && attempt < policy.attempts_for_missing_target);
    if retry {
        debug!(iface = %core.name, attempt, ?outcome, missed_target, "retrying the host scan");
        tokio::spawn(scan_when_idle(station.clone(), target, attempt + 1));
    }
    if let Some(bss) = bss {
        core.publish(InterfaceEvent::ScanResults {
            iface: core.id,
            result: ScanResult {
                bss,
                complete: true,
            },
        });
    }
}

/// A guest connect: [`HostStation::activate`] in a task of its own, so that a
/// caller giving up (the handler's bound) cannot leave a half-made
/// connection behind; one that succeeds after its caller gave up is undone
/// (unless a later connect replaced it already).
pub(crate) async fn connect<S: HostStation>(
    station: &Arc<S>,
    params: &ConnectParams,
) -> Result<ConnectedNetwork, InterfaceError> {
    station.core().check()?;
    let station = station.clone();
    let params = params.clone();
    let (tx, rx) = oneshot::channel();
    tokio::spawn(async move {
        let core = station.core();
        // The lock is released before the answer: a link loss right after
        // it must find the interface idle (iwd removes the guest's file
        // then).
        let (result, ticket) = {
            let _op = core.op_lock.clone().lock_owned().await;
            let ticket = core.connects.fetch_add(1, Ordering::SeqCst) + 1;
            // A new guest connection replaces the proxy's earlier one.
            station.remove_guest_connection().await;
            (station.activate(&params).await, ticket)
        };
        if let Err(e) = &result {
            warn!(iface = %core.name, ssid = %params.ssid, "guest connection failed: {e}");
        }
        if let Err(result) = tx.send(result) {
            if result.is_ok() {
                let _op = core.op_lock.clone().lock_owned().await;
                if core.connects.load(Ordering::SeqCst) == ticket {
                    info!(iface = %core.name, "connect finished after the caller gave up; undoing it");
                    station.undo_activation().await;
                }
            }
        }
    });
    rx.await.unwrap_or(Err(InterfaceError::TaskEnded))
}

/// A guest disconnect: the service's disconnect (already disconnected is
/// fine), then the guest's connection removed, under the operation lock.
pub(crate) async fn disconnect<S: HostStation>(station: &S) -> Result<(), InterfaceError> {
    let core = station.core();
    core.check()?;
    let _op = core.op_lock.lock().await;
    let result = match station.request_disconnect().await {
        Ok(()) => Ok(()),
        Err(e) if error_name(&e).as_deref() == Some(S::NOT_CONNECTED_ERROR) => Ok(()),
        Err(e) => Err(call_error("disconnect", e)),
    };
    station.remove_guest_connection().await;
    result
}

#[async_trait]
impl<S: HostStation> WifiInterface for S {
    fn id(&self) -> InterfaceId {
        self.core().id
    }

    fn name(&self) -> String {
        self.core().name.clone()
    }

    async fn connected_network(&self) -> Result<Option<ConnectedNetwork>, InterfaceError> {
        self.core().check()?;
        self.current_connection().await
    }

    async fn scan(&self, target: Option<&Ssid>) -> Result<ScanResult, InterfaceError> {
        let me = self.core().me().ok_or(InterfaceError::Gone)?;
        let bss = scan(&me, target).await?;
        let complete = !(bss.is_empty() && S::SCAN_POLICY.empty_means_scanning);
        Ok(ScanResult { bss, complete })
    }

    async fn connect(&self, params: &ConnectParams) -> Result<ConnectedNetwork, InterfaceError> {
        let me = self.core().me().ok_or(InterfaceError::Gone)?;
        connect(&me, params).await
    }

    async fn disconnect(&self) -> Result<(), InterfaceError> {
        disconnect(self).await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU32;
    use std::time::Duration;

    use tokio::sync::{broadcast, Semaphore};

    use super::*;
    use crate::protocol::MacAddr;
    use crate::wifi::{HostWifi, Security};

    /// An interface whose host scans end when the test says so.
    struct Fake<const PROBES_SSID: bool> {
        core: StationCore<Self>,
        cache: Mutex<Vec<ScannedBss>>,
        /// What the cache holds once a host scan ends.
        fresh: Mutex<Vec<ScannedBss>>,
        /// The targets of the host scans asked for, in order.
        host_scans: Mutex<Vec<Option<Ssid>>>,
        /// A host scan ends when it gets a permit.
        scan_ends: Semaphore,
        outcome: Mutex<HostScan>,
        /// An activation ends when it gets a permit.
        activation_ends: Semaphore,
        undone: AtomicU32,
        removed: AtomicU32,
    }

    #[async_trait]
    impl<const PROBES_SSID: bool> HostStation for Fake<PROBES_SSID> {
        const SCAN_POLICY: ScanPolicy = ScanPolicy {
            probes_ssid: PROBES_SSID,
            attempts_if_unfinished: 2,
            attempts_for_missing_target: 3,
            empty_means_scanning: true,
        };
        const NOT_CONNECTED_ERROR: &'static str = "test.NotConnected";

        fn core(&self) -> &StationCore<Self> {
            &self.core
        }

        async fn cached_bss(&self, _: Option<&Ssid>) -> Result<Vec<ScannedBss>, InterfaceError> {
            Ok(locked(&self.cache).clone())
        }

        async fn host_scan(&self, target: Option<Ssid>) -> HostScan {
            locked(&self.host_scans).push(target);
            if let Ok(permit) = self.scan_ends.acquire().await {
                permit.forget();
            }
            *locked(&self.cache) = locked(&self.fresh).clone();
            *locked(&self.outcome)
        }

        async fn connected_now(&self) -> Result<Option<ConnectedNetwork>, InterfaceError> {
            Ok(Some(network("home")))
        }

        async fn current_connection(&self) -> Result<Option<ConnectedNetwork>, InterfaceError> {
            Ok(None)
        }

        async fn activate(
            &self,
            params: &ConnectParams,
        ) -> Result<ConnectedNetwork, InterfaceError> {
            if let Ok(permit) = self.activation_ends.acquire().await {
                permit.forget();
            }
            Ok(network(&params.ssid.to_string_lossy()))
        }

        async fn undo_activation(&self) {
            self.undone.fetch_add(1, Ordering::SeqCst);
        }

        async fn remove_guest_connection(&self) {
            self.removed.fetch_add(1, Ordering::SeqCst);
        }

        async fn request_disconnect(&self) -> zbus::Result<()> {
            Ok(())
        }
    }

    fn ssid(s: &str) -> Ssid {
        Ssid::new(s.as_bytes()).unwrap()
    }

    fn bss(name: &str, last: u8) -> ScannedBss {
        ScannedBss {
            bssid: MacAddr([2, 0, 0, 0, 0, last]),
            ssid: ssid(name),
            capabilities: None,
            rssi_dbm: -50,
            beacon_interval: None,
            freq_khz: 2_412_000,
            security: Security::OPEN,
            ies: Vec::new(),
        }
    }

    fn network(name: &str) -> ConnectedNetwork {
        ConnectedNetwork {
            ssid: ssid(name),
            bssid: MacAddr([2, 0, 0, 0, 0, 1]),
            security: Security::OPEN,
        }
    }

    fn params(name: &str) -> ConnectParams {
        ConnectParams {
            ssid: ssid(name),
            bssid: None,
            security: Security::OPEN,
            key: None,
        }
    }

    fn fake<const P: bool>(
        cached: Vec<ScannedBss>,
        fresh: Vec<ScannedBss>,
    ) -> (Arc<Fake<P>>, broadcast::Receiver<InterfaceEvent>) {
        let hub = Arc::new(EventHub::new());
        let events = hub.subscribe();
        let start = StationStart {
            id: InterfaceId::from_u128(7),
            name: "wlan-test".into(),
            path: OwnedObjectPath::try_from("/test/0").unwrap(),
            connected: false,
            link_up: false,
        };
        let station = Arc::new_cyclic(|me| Fake {
            core: StationCore::new(me.clone(), hub, start),
            cache: Mutex::new(cached),
            fresh: Mutex::new(fresh),
            host_scans: Mutex::new(Vec::new()),
            scan_ends: Semaphore::new(0),
            outcome: Mutex::new(HostScan::Fresh),
            activation_ends: Semaphore::new(0),
            undone: AtomicU32::new(0),
            removed: AtomicU32::new(0),
        });
        (station, events)
    }

    const WAIT: Duration = Duration::from_secs(5);

    async fn next_scan_results(events: &mut broadcast::Receiver<InterfaceEvent>) -> ScanResult {
        let wait = async {
            loop {
                if let InterfaceEvent::ScanResults { result, .. } = events.recv().await.unwrap() {
                    return result;
                }
            }
        };
        tokio::time::timeout(WAIT, wait)
            .await
            .expect("scan results")
    }

    /// Until `n` host scans were asked for.
    async fn host_scans<const P: bool>(station: &Fake<P>, n: usize) -> Vec<Option<Ssid>> {
        let wait = async {
            loop {
                let scans = locked(&station.host_scans).clone();
                if scans.len() >= n {
                    return scans;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        tokio::time::timeout(WAIT, wait)
            .await
            .unwrap_or_else(|_| panic!("fewer than {n} host scans"))
    }

    /// Until no host scan runs.
    async fn idle<const P: bool>(station: &Fake<P>) {
        let wait = async {
            while locked(&station.core.scan).is_some() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        tokio::time::timeout(WAIT, wait).await.expect("idle");
    }

    #[tokio::test]
    async fn a_scan_never_waits_for_the_running_host_scan() {
        let (station, mut events) = fake::<true>(vec![bss("home", 1)], {
            vec![bss("home", 1), bss("cafe", 2)]
        });
        let first = station.scan(None).await.unwrap();
        assert_eq!(first.bss.len(), 1);
        host_scans(&station, 1).await;
        // The host scan runs until the test ends it: a scan that waited for
        // it would never return.
        let second = tokio::time::timeout(WAIT, station.scan(None))
            .await
            .expect("answered while the host scan runs")
            .unwrap();
        assert_eq!(second.bss.len(), 1, "the cache, as it is");
        assert!(second.complete);
        station.scan_ends.add_permits(1);
        let fresh = next_scan_results(&mut events).await;
        assert_eq!(fresh.bss.len(), 2);
        idle(&station).await;
        assert_eq!(
            locked(&station.host_scans).len(),
            1,
            "the second scan started no host scan"
        );
        assert!(events.try_recv().is_err(), "one notification only");
    }

    #[tokio::test]
    async fn a_targeted_scan_for_another_ssid_queues_its_own_host_scan() {
        let (station, mut events) = fake::<true>(Vec::new(), vec![bss("secret", 3)]);
        station.scan(None).await.unwrap();
        host_scans(&station, 1).await;
        let answer = station.scan(Some(&ssid("secret"))).await.unwrap();
        assert!(answer.bss.is_empty() && !answer.complete, "still scanning");
        // Queued behind the running one, not started beside it.
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(locked(&station.host_scans).len(), 1);
        station.scan_ends.add_permits(2);
        let scans = host_scans(&station, 2).await;
        assert_eq!(scans, vec![None, Some(ssid("secret"))]);
        next_scan_results(&mut events).await;
        next_scan_results(&mut events).await;
    }

    #[tokio::test]
    async fn without_ssid_probes_a_targeted_scan_queues_nothing() {
        let (station, mut events) = fake::<false>(Vec::new(), vec![bss("secret", 3)]);
        station.scan(None).await.unwrap();
        host_scans(&station, 1).await;
        station.scan(Some(&ssid("secret"))).await.unwrap();
        station.scan_ends.add_permits(5);
        next_scan_results(&mut events).await;
        idle(&station).await;
        assert_eq!(locked(&station.host_scans).len(), 1);
    }

    #[tokio::test]
    async fn unfinished_and_missed_host_scans_are_retried_within_the_policy() {
        let (station, _events) = fake::<true>(Vec::new(), Vec::new());
        *locked(&station.outcome) = HostScan::Unfinished;
        station.scan_ends.add_permits(10);
        station.scan(None).await.unwrap();
        host_scans(&station, 2).await;
        idle(&station).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(locked(&station.host_scans).len(), 2, "one retry");

        *locked(&station.outcome) = HostScan::Fresh;
        station.scan(Some(&ssid("nowhere"))).await.unwrap();
        host_scans(&station, 5).await;
        idle(&station).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(locked(&station.host_scans).len(), 5, "3 for the target");

        *locked(&station.outcome) = HostScan::Refused;
        station.scan(None).await.unwrap();
        host_scans(&station, 6).await;
        idle(&station).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(locked(&station.host_scans).len(), 6, "a refusal is final");
    }

    #[tokio::test]
    async fn a_lost_link_is_reported_once_and_a_stale_lookup_dropped() {
        let (station, mut events) = fake::<true>(Vec::new(), Vec::new());
        assert!(!link_changed(&station, true, true));
        let connected = tokio::time::timeout(WAIT, events.recv()).await.unwrap();
        assert!(matches!(connected, Ok(InterfaceEvent::Connected { .. })));
        assert!(station.core.is_connected());
        assert!(link_changed(&station, false, false));
        assert!(matches!(
            events.recv().await,
            Ok(InterfaceEvent::Disconnected { .. })
        ));
        assert!(!link_changed(&station, false, false), "once");
        // A link that comes and goes before its lookup ends: the lookup is
        // stale, and the loss is still reported.
        link_changed(&station, true, true);
        assert!(link_changed(&station, false, false));
        assert!(matches!(
            events.recv().await,
            Ok(InterfaceEvent::Disconnected { .. })
        ));
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(events.try_recv().is_err(), "no stale Connected");
    }

    #[tokio::test]
    async fn a_connect_its_caller_gave_up_on_is_undone_unless_replaced() {
        let (station, _events) = fake::<true>(Vec::new(), Vec::new());
        // Given up on: undone once it ends.
        let p = params("a");
        let gave_up = tokio::time::timeout(Duration::from_millis(20), station.connect(&p));
        assert!(gave_up.await.is_err());
        station.activation_ends.add_permits(1);
        let wait = async {
            while station.undone.load(Ordering::SeqCst) == 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        tokio::time::timeout(WAIT, wait).await.expect("undone");

        // Given up on, but a later connect queued behind it: that one
        // replaced it, so nothing is undone.
        let p = params("b");
        let gave_up = tokio::time::timeout(Duration::from_millis(20), station.connect(&p));
        assert!(gave_up.await.is_err());
        let later = {
            let station = station.clone();
            tokio::spawn(async move { station.connect(&params("c")).await })
        };
        // Let the later connect queue on the operation lock (this runtime
        // has one thread: its tasks run while this one yields).
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
        // It takes the lock when the first one lets go, before the first
        // one takes it back to undo.
        station.activation_ends.add_permits(2);
        let joined = tokio::time::timeout(WAIT, later).await.unwrap().unwrap();
        assert_eq!(joined.unwrap().ssid, ssid("c"));
        // The first one queued for the lock while the later one held it:
        // once the test has the lock, it has decided.
        drop(station.core.op_lock.lock().await);
        assert_eq!(station.undone.load(Ordering::SeqCst), 1);
        // Each connect removed the guest's earlier connection first.
        assert_eq!(station.removed.load(Ordering::SeqCst), 3);
    }
}
