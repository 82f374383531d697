//! The WlanAPI backend's logic, over the [`WlanSys`] trait: interfaces,
//! scans, connects, disconnects and the notification dispatcher. Platform
//! independent; only [`WlanApiWifi::start`] needs Windows.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{broadcast, mpsc};
use tokio::time::timeout;
use tracing::{debug, info, warn};
use uuid::Uuid;

use super::notify::Notification;
use super::pending::{PendingConnect, ScanStart, ScanTracker, Waiters};
use super::profile::{profile_xml, ProfileKey};
use super::{InterfaceInfo, SysConnect, WlanError, WlanSys};
use crate::protocol::{MacAddr, Ssid};
use crate::wifi::{
    AuthAlgorithm, ConnectParams, ConnectedNetwork, EventHub, HostWifi, InterfaceError,
    InterfaceEvent, InterfaceId, ScanResult, ScannedBss, WifiInterface,
};

/// How long a connect waits for WlanAPI's connection-complete notification
/// (the handler bounds the whole connect to 10 s as well).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a disconnect waits for the disconnected notification before it
/// checks the connection state itself (the handler allows 5 s).
pub const DISCONNECT_TIMEOUT: Duration = Duration::from_secs(4);
/// How long a scan waits for a host scan already running.
const SCAN_WAIT_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the backend reads adapters and connections when WlanAPI
/// cannot notify (see [`WlanApiWifi::polled`]).
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);

type ScanOutcome = Result<Vec<ScannedBss>, InterfaceError>;

/// Runs a blocking WlanAPI call on tokio's blocking pool.
async fn blocking<T, F>(sys: &Arc<dyn WlanSys>, f: F) -> Result<T, InterfaceError>
where
    T: Send + 'static,
    F: FnOnce(&dyn WlanSys) -> Result<T, WlanError> + Send + 'static,
{
    let sys = sys.clone();
    match tokio::task::spawn_blocking(move || f(&*sys)).await {
        Ok(result) => result.map_err(|e| e.to_interface_error()),
        Err(e) => {
            warn!("a WlanAPI call was aborted: {e}");
            Err(InterfaceError::HostCallAborted)
        }
    }
}

/// One wireless adapter.
pub struct WlanInterface {
    id: Uuid,
    name: String,
    sys: Arc<dyn WlanSys>,
    scan: ScanTracker<ScanOutcome>,
    connect: PendingConnect,
    disconnects: Waiters,
    /// No scan-complete notification will come (polled mode).
    polled: bool,
}

impl WlanInterface {
    fn new(info: InterfaceInfo, sys: Arc<dyn WlanSys>, polled: bool) -> WlanInterface {
        WlanInterface {
            id: info.id,
            name: info.description,
            sys,
            polled,
            scan: ScanTracker::default(),
            connect: PendingConnect::default(),
            disconnects: Waiters::default(),
        }
    }

    async fn cached(&self) -> ScanOutcome {
        let id = self.id;
        let parsed = blocking(&self.sys, move |s| s.bss_list(id)).await?;
        if parsed.skipped > 0 {
            debug!(iface = %self.name, skipped = parsed.skipped, "BSS entries left out");
        }
        Ok(parsed.bss)
    }

    async fn current(&self) -> Result<Option<ConnectedNetwork>, InterfaceError> {
        let id = self.id;
        blocking(&self.sys, move |s| s.current_connection(id)).await
    }

    /// The interface went away: release everyone waiting on it.
    fn close(&self) {
        drop(self.scan.finish());
        self.connect.cancel();
        self.disconnects.cancel_all();
    }
}

#[async_trait]
impl WifiInterface for WlanInterface {
    fn id(&self) -> InterfaceId {
        self.id
    }

    fn name(&self) -> String {
        self.name.clone()
    }

    async fn connected_network(&self) -> Result<Option<ConnectedNetwork>, InterfaceError> {
        self.current().await
    }

    async fn scan(&self, target: Option<&Ssid>) -> Result<ScanResult, InterfaceError> {
        match self.scan.begin() {
            ScanStart::Wait(rx) => match timeout(SCAN_WAIT_TIMEOUT, rx).await {
                Ok(Ok(outcome)) => outcome.map(|bss| ScanResult {
                    bss,
                    complete: true,
                }),
                // The running scan could not deliver (it failed to start, or
                // the interface is going away): answer with what the host has.
                Ok(Err(_)) => self.cached().await.map(|bss| ScanResult {
                    bss,
                    complete: true,
                }),
                Err(_) => Err(InterfaceError::ScanTimeout {
                    limit: SCAN_WAIT_TIMEOUT,
                }),
            },
            ScanStart::Started => {
                let cached = match self.cached().await {
                    Ok(bss) => bss,
                    Err(e) => {
                        drop(self.scan.start_failed());
                        return Err(e);
                    }
                };
                let id = self.id;
                let target = target.copied();
                if let Err(e) = blocking(&self.sys, move |s| s.scan(id, target.as_ref())).await {
                    warn!(iface = %self.name, "cannot start a host scan: {e}");
                    drop(self.scan.start_failed());
                } else if self.polled {
                    // Nothing will report this scan's end: not awaited; the
                    // next guest scan reads the list it refreshed.
                    drop(self.scan.finish());
                }
                Ok(ScanResult {
                    bss: cached,
                    complete: true,
                })
            }
        }
    }

    async fn connect(&self, params: &ConnectParams) -> Result<ConnectedNetwork, InterfaceError> {
        // WPA2-PSK: the guest's PMK; WPA3-SAE: the guest's SAE password,
        // which the profile carries as a passphrase.
        let password = match (params.security.auth, params.key.as_ref()) {
            (AuthAlgorithm::Wpa3Sae, Some(key)) => Some(
                std::str::from_utf8(key.expose())
                    .map_err(|_| InterfaceError::SaePasswordNotText)?,
            ),
            _ => None,
        };
        let key = match password {
            Some(p) => Some(ProfileKey::Passphrase(p)),
            None => params.key.as_ref().map(ProfileKey::Pmk),
        };
        let xml = profile_xml(&params.ssid, &params.security, key)
            .map_err(|e| InterfaceError::Profile(e.to_string()))?;
        let request = SysConnect {
            ssid: params.ssid,
            bssid: params.bssid,
            profile_xml: xml,
        };
        info!(
            iface = %self.name,
            ssid = %params.ssid,
            bssid = ?params.bssid,
            security = %params.security.label(),
            "connecting"
        );
        let done = self.connect.arm(params.ssid);
        let id = self.id;
        if let Err(e) = blocking(&self.sys, move |s| s.connect(id, &request)).await {
            self.connect.cancel();
            return Err(e);
        }
        let reason = match timeout(CONNECT_TIMEOUT, done).await {
            Ok(Ok(reason)) => reason,
            Ok(Err(_)) => return Err(InterfaceError::ConnectAbandoned),
            Err(_) => {
                self.connect.cancel();
                return Err(InterfaceError::ConnectTimeout {
                    limit: CONNECT_TIMEOUT,
                });
            }
        };
        if reason != super::convert::WLAN_REASON_CODE_SUCCESS {
            return Err(InterfaceError::ConnectFailed { reason });
        }
        match self.current().await? {
            Some(net) if net.ssid == params.ssid => Ok(net),
            Some(net) => Err(InterfaceError::ConnectedElsewhere { ssid: net.ssid }),
            None => Err(InterfaceError::NotConnectedAfterConnect),
        }
    }

    async fn disconnect(&self) -> Result<(), InterfaceError> {
        if self.current().await?.is_none() {
            return Ok(());
        }
        let done = self.disconnects.add();
        let id = self.id;
        blocking(&self.sys, move |s| s.disconnect(id)).await?;
        if let Ok(Ok(())) = timeout(DISCONNECT_TIMEOUT, done).await {
            return Ok(());
        }
        match self.current().await? {
            None => Ok(()),
            Some(net) => Err(InterfaceError::StillConnected { ssid: net.ssid }),
        }
    }
}

struct Shared {
    sys: Arc<dyn WlanSys>,
    hub: EventHub,
    ifaces: Mutex<HashMap<Uuid, Arc<WlanInterface>>>,
    polled: bool,
}

impl Shared {
    fn ifaces(&self) -> MutexGuard<'_, HashMap<Uuid, Arc<WlanInterface>>> {
        self.ifaces.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn get(&self, id: Uuid) -> Option<Arc<WlanInterface>> {
        self.ifaces().get(&id).cloned()
    }

    fn add(&self, info: InterfaceInfo) -> Option<Arc<WlanInterface>> {
        let iface = {
            let mut map = self.ifaces();
            if map.contains_key(&info.id) {
                return None;
            }
            let iface = Arc::new(WlanInterface::new(info, self.sys.clone(), self.polled));
            map.insert(iface.id, iface.clone());
            iface
        };
        info!(iface = %iface.name, id = %iface.id, "Wi-Fi interface added");
        self.hub.add(iface.clone());
        Some(iface)
    }

    async fn publish_connection(&self, iface: &WlanInterface) {
        match iface.current().await {
            Ok(Some(network)) => self.hub.publish(InterfaceEvent::Connected {
                iface: iface.id,
                network,
            }),
            Ok(None) => {}
            Err(e) => warn!(iface = %iface.name, "cannot read the connection: {e}"),
        }
    }

    async fn handle(&self, n: Notification) {
        match n {
            Notification::InterfaceArrival { iface } => {
                if self.get(iface).is_some() {
                    return;
                }
                match blocking(&self.sys, |s| s.interfaces()).await {
                    Ok(list) => {
                        if let Some(info) = list.into_iter().find(|i| i.id == iface) {
                            if let Some(added) = self.add(info) {
                                self.publish_connection(&added).await;
                            }
                        }
                    }
                    Err(e) => warn!("cannot list Wi-Fi interfaces: {e}"),
                }
            }
            Notification::InterfaceRemoval { iface } => {
                let removed = self.ifaces().remove(&iface);
                if let Some(removed) = removed {
                    info!(iface = %removed.name, "Wi-Fi interface removed");
                    removed.close();
                    self.hub.remove(iface);
                }
            }
            Notification::ConnectionComplete {
                iface,
                ssid,
                reason,
            } => {
                let Some(i) = self.get(iface) else { return };
                i.connect.complete(ssid.as_ref(), reason);
                if reason == super::convert::WLAN_REASON_CODE_SUCCESS {
                    self.publish_connection(&i).await;
                } else {
                    debug!(iface = %i.name, reason, "connection attempt failed");
                }
            }
            Notification::Disconnected { iface } => {
                let Some(i) = self.get(iface) else { return };
                i.disconnects.wake_all();
                self.hub.publish(InterfaceEvent::Disconnected { iface });
            }
            Notification::ScanComplete { iface } => {
                let Some(i) = self.get(iface) else { return };
                let waiters = i.scan.finish();
                let outcome = i.cached().await;
                if waiters.is_empty() {
                    match outcome {
                        Ok(bss) => self.hub.publish(InterfaceEvent::ScanResults {
                            iface,
                            result: ScanResult {
                                bss,
                                complete: true,
                            },
                        }),
                        Err(e) => warn!(iface = %i.name, "cannot read scan results: {e}"),
                    }
                } else {
                    for w in waiters {
                        let _ = w.send(outcome.clone());
                    }
                }
            }
            Notification::ScanFailed { iface, reason } => {
                let Some(i) = self.get(iface) else { return };
                debug!(iface = %i.name, reason, "host scan failed");
                let waiters = i.scan.finish();
                if !waiters.is_empty() {
                    let outcome = i.cached().await;
                    for w in waiters {
                        let _ = w.send(outcome.clone());
                    }
                }
            }
            Notification::SignalQuality { iface, percent } => {
                if self.get(iface).is_some() {
                    self.hub
                        .publish(InterfaceEvent::SignalQuality { iface, percent });
                }
            }
        }
    }
}

/// A connection as the poller compares it.
type LinkState = Option<(Ssid, MacAddr)>;

/// Polled mode: reads the adapters and their connections every
/// [`POLL_INTERVAL`] and turns changes into the notifications WlanAPI would
/// have sent (arrival, removal, connection complete, disconnected), so the
/// dispatcher works as it does with notifications. `links` holds the state
/// already reported at start.
async fn poll_changes(
    shared: Arc<Shared>,
    tx: mpsc::UnboundedSender<Notification>,
    mut links: HashMap<Uuid, LinkState>,
) {
    let mut ticker = tokio::time::interval(POLL_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    while !tx.is_closed() {
        ticker.tick().await;
        let listed = match blocking(&shared.sys, |s| s.interfaces()).await {
            Ok(list) => list,
            Err(e) => {
                debug!("polling: cannot list Wi-Fi interfaces: {e}");
                continue;
            }
        };
        let gone: Vec<Uuid> = links
            .keys()
            .filter(|id| !listed.iter().any(|i| i.id == **id))
            .copied()
            .collect();
        for iface in gone {
            links.remove(&iface);
            let _ = tx.send(Notification::InterfaceRemoval { iface });
        }
        for info in &listed {
            if let std::collections::hash_map::Entry::Vacant(e) = links.entry(info.id) {
                e.insert(None);
                let _ = tx.send(Notification::InterfaceArrival { iface: info.id });
            }
        }
        for (&iface, last) in links.iter_mut() {
            let now: LinkState =
                match blocking(&shared.sys, move |s| s.current_connection(iface)).await {
                    Ok(network) => network.map(|n| (n.ssid, n.bssid)),
                    Err(e) => {
                        debug!(%iface, "polling: cannot read the connection: {e}");
                        continue;
                    }
                };
            let armed = shared.get(iface).and_then(|i| i.connect.armed());
            match &now {
                // A new connection, or the one a connect waits for.
                Some((ssid, _)) if *last != now || armed == Some(*ssid) => {
                    let _ = tx.send(Notification::ConnectionComplete {
                        iface,
                        ssid: Some(*ssid),
                        reason: super::convert::WLAN_REASON_CODE_SUCCESS,
                    });
                }
                None if last.is_some() => {
                    let _ = tx.send(Notification::Disconnected { iface });
                }
                _ => {}
            }
            *last = now;
        }
    }
}

/// The WlanAPI [`HostWifi`] backend.
pub struct WlanApiWifi {
    shared: Arc<Shared>,
    dispatcher: tokio::task::JoinHandle<()>,
    poller: Option<tokio::task::JoinHandle<()>>,
}

impl WlanApiWifi {
    /// Opens WlanAPI, registers for notifications, lists the adapters and
    /// starts dispatching notifications. Call it from within a tokio
    /// runtime. Adapters already connected publish a host-connected event.
    ///
    /// A WlanAPI whose `WlanRegisterNotification` is a stub (Wine's) is
    /// not fatal: the service says so and runs in polled mode
    /// ([`WlanApiWifi::polled`]). Any other failure is.
    #[cfg(windows)]
    pub fn start() -> Result<Arc<WlanApiWifi>, WlanError> {
        tokio::runtime::Handle::try_current().map_err(|_| WlanError::NoRuntime)?;
        let mut client = super::ffi::WlanClient::open()?;
        let (tx, rx) = mpsc::unbounded_channel();
        // Notifications are registered before the adapters are listed, so
        // no arrival can fall in between.
        match client.register(tx) {
            Ok(()) => WlanApiWifi::with_sys(Arc::new(client), rx),
            Err(e) if e.is_not_implemented() => {
                warn!(
                    "{e}: this WlanAPI cannot send notifications (Wine's is a stub). \
                     Polling adapters and connections every {} s instead; guests get no \
                     signal-quality or unsolicited scan-result notifications, and host \
                     scans are not awaited",
                    POLL_INTERVAL.as_secs()
                );
                WlanApiWifi::polled(Arc::new(client))
            }
            Err(e) => Err(e),
        }
    }

    /// The backend over a [`WlanSys`] that cannot report notifications: it
    /// polls instead (every [`POLL_INTERVAL`]): adapters come and go and
    /// connects and disconnects complete as with notifications, a little
    /// later; failed connects end at [`CONNECT_TIMEOUT`]; host scans are
    /// started but not awaited; there is no signal quality.
    pub fn polled(sys: Arc<dyn WlanSys>) -> Result<Arc<WlanApiWifi>, WlanError> {
        let (tx, rx) = mpsc::unbounded_channel();
        WlanApiWifi::build(sys, rx, Some(tx))
    }

    /// The backend over any [`WlanSys`] and the notifications it reports;
    /// [`WlanApiWifi::start`] uses the real WlanAPI, tests a fake.
    pub fn with_sys(
        sys: Arc<dyn WlanSys>,
        notifications: mpsc::UnboundedReceiver<Notification>,
    ) -> Result<Arc<WlanApiWifi>, WlanError> {
        WlanApiWifi::build(sys, notifications, None)
    }

    /// `poll`: polled mode, synthesised notifications go there.
    fn build(
        sys: Arc<dyn WlanSys>,
        mut notifications: mpsc::UnboundedReceiver<Notification>,
        poll: Option<mpsc::UnboundedSender<Notification>>,
    ) -> Result<Arc<WlanApiWifi>, WlanError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| WlanError::NoRuntime)?;
        let shared = Arc::new(Shared {
            sys: sys.clone(),
            hub: EventHub::new(),
            ifaces: Mutex::new(HashMap::new()),
            polled: poll.is_some(),
        });
        let mut links = HashMap::new();
        for info in sys.interfaces()? {
            if let Some(iface) = shared.add(info) {
                // The host connection present at start.
                let mut link = None;
                match sys.current_connection(iface.id) {
                    Ok(Some(network)) => {
                        info!(iface = %iface.name, ssid = %network.ssid, "connected at start");
                        link = Some((network.ssid, network.bssid));
                        shared.hub.publish(InterfaceEvent::Connected {
                            iface: iface.id,
                            network,
                        });
                    }
                    Ok(None) => {}
                    Err(e) => warn!(iface = %iface.name, "cannot read the connection: {e}"),
                }
                links.insert(iface.id, link);
            }
        }
        if links.is_empty() {
            // Wine's WlanAPI, or a host without Wi-Fi: serving goes on
            // (fake networks, adapters that appear later).
            warn!(
                "WlanAPI lists no wireless interface: guests see only fake networks until an adapter appears"
            );
        } else {
            info!(count = links.len(), "WlanAPI interfaces listed");
        }
        let poller = poll.map(|tx| runtime.spawn(poll_changes(shared.clone(), tx, links)));
        let worker = shared.clone();
        let dispatcher = runtime.spawn(async move {
            while let Some(n) = notifications.recv().await {
                worker.handle(n).await;
            }
            debug!("WlanAPI notifications ended");
        });
        Ok(Arc::new(WlanApiWifi {
            shared,
            dispatcher,
            poller,
        }))
    }
}

impl Drop for WlanApiWifi {
    fn drop(&mut self) {
        self.dispatcher.abort();
        if let Some(poller) = &self.poller {
            poller.abort();
        }
    }
}

impl HostWifi for WlanApiWifi {
    fn subscribe(&self) -> broadcast::Receiver<InterfaceEvent> {
        self.shared.hub.subscribe()
    }

    fn interfaces(&self) -> Vec<Arc<dyn WifiInterface>> {
        self.shared.hub.interfaces()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Key, MacAddr};
    use crate::wifi::wlanapi::convert::parse_bss_list;
    use crate::wifi::wlanapi::convert::tests::{bss_list, wpa2_ies, EntrySpec};
    use crate::wifi::wlanapi::ParsedBssList;
    use crate::wifi::Security;

    const IFACE: Uuid = Uuid::from_u128(0x1111);

    #[derive(Default)]
    struct FakeState {
        ifaces: Vec<InterfaceInfo>,
        /// The raw WLAN_BSS_LIST block the fake returns, per interface.
        bss_block: HashMap<Uuid, Vec<u8>>,
        connected: HashMap<Uuid, ConnectedNetwork>,
        scans: Vec<(Uuid, Option<Ssid>)>,
        connects: Vec<(Uuid, Ssid, Option<MacAddr>, String)>,
        disconnects: Vec<Uuid>,
        fail_scan: bool,
        /// When set, connect reports completion with this reason code.
        connect_reason: Option<u32>,
    }

    struct FakeSys {
        state: Mutex<FakeState>,
        notify: mpsc::UnboundedSender<Notification>,
    }

    impl FakeSys {
        fn st(&self) -> MutexGuard<'_, FakeState> {
            self.state.lock().unwrap()
        }
    }

    fn api_err(call: &'static str) -> WlanError {
        WlanError::Api { call, code: 5 }
    }

    impl WlanSys for FakeSys {
        fn interfaces(&self) -> Result<Vec<InterfaceInfo>, WlanError> {
            Ok(self.st().ifaces.clone())
        }
        fn bss_list(&self, iface: Uuid) -> Result<ParsedBssList, WlanError> {
            match self.st().bss_block.get(&iface) {
                Some(block) => Ok(parse_bss_list(block)?),
                None => Ok(ParsedBssList::default()),
            }
        }
        fn scan(&self, iface: Uuid, ssid: Option<&Ssid>) -> Result<(), WlanError> {
            let mut st = self.st();
            if st.fail_scan {
                return Err(api_err("WlanScan"));
            }
            st.scans.push((iface, ssid.copied()));
            Ok(())
        }
        fn current_connection(&self, iface: Uuid) -> Result<Option<ConnectedNetwork>, WlanError> {
            Ok(self.st().connected.get(&iface).cloned())
        }
        fn connect(&self, iface: Uuid, r: &SysConnect) -> Result<(), WlanError> {
            let mut st = self.st();
            st.connects
                .push((iface, r.ssid, r.bssid, r.profile_xml.as_str().to_string()));
            if let Some(reason) = st.connect_reason {
                if reason == 0 {
                    st.connected.insert(
                        iface,
                        ConnectedNetwork {
                            ssid: r.ssid,
                            bssid: r.bssid.unwrap_or(MacAddr([9; 6])),
                            security: Security::WPA2_PSK_CCMP,
                        },
                    );
                }
                let _ = self.notify.send(Notification::ConnectionComplete {
                    iface,
                    ssid: Some(r.ssid),
                    reason,
                });
            }
            Ok(())
        }
        fn disconnect(&self, iface: Uuid) -> Result<(), WlanError> {
            let mut st = self.st();
            st.disconnects.push(iface);
            st.connected.remove(&iface);
            let _ = self.notify.send(Notification::Disconnected { iface });
            Ok(())
        }
    }

    fn ssid(s: &str) -> Ssid {
        Ssid::new(s.as_bytes()).unwrap()
    }

    fn setup(
        state: FakeState,
    ) -> (
        Arc<WlanApiWifi>,
        Arc<FakeSys>,
        mpsc::UnboundedSender<Notification>,
    ) {
        let (tx, rx) = mpsc::unbounded_channel();
        let sys = Arc::new(FakeSys {
            state: Mutex::new(state),
            notify: tx.clone(),
        });
        let wifi = WlanApiWifi::with_sys(sys.clone(), rx).unwrap();
        (wifi, sys, tx)
    }

    fn one_iface() -> FakeState {
        let mut st = FakeState {
            ifaces: vec![InterfaceInfo {
                id: IFACE,
                description: "Test Wireless Adapter".into(),
            }],
            ..FakeState::default()
        };
        st.bss_block.insert(
            IFACE,
            bss_list(&[EntrySpec::new(b"Cached", 1, wpa2_ies(b"Cached"))]),
        );
        st
    }

    fn fresh_block() -> Vec<u8> {
        bss_list(&[
            EntrySpec::new(b"Cached", 1, wpa2_ies(b"Cached")),
            EntrySpec::new(b"Fresh", 2, wpa2_ies(b"Fresh")),
        ])
    }

    async fn next_event(rx: &mut broadcast::Receiver<InterfaceEvent>) -> InterfaceEvent {
        timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("an event")
            .expect("channel open")
    }

    #[tokio::test]
    async fn lists_adapters_and_the_connection_present_at_start() {
        let mut st = one_iface();
        st.connected.insert(
            IFACE,
            ConnectedNetwork {
                ssid: ssid("Home"),
                bssid: MacAddr([1; 6]),
                security: Security::WPA2_PSK_CCMP,
            },
        );
        let (wifi, _sys, _tx) = setup(st);
        let list = wifi.interfaces();
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].id(), IFACE);
        assert_eq!(list[0].name(), "Test Wireless Adapter");
        let net = list[0].connected_network().await.unwrap().unwrap();
        assert_eq!(net.ssid, ssid("Home"));
    }

    #[tokio::test]
    async fn scan_answers_cached_then_waits_for_the_running_scan() {
        let (wifi, sys, tx) = setup(one_iface());
        let iface = wifi.interfaces().remove(0);
        let mut events = wifi.subscribe();

        // First scan: cached results at once, a host scan started.
        let first = iface.scan(Some(&ssid("Hidden"))).await.unwrap();
        assert!(first.complete);
        assert_eq!(first.bss.len(), 1);
        assert_eq!(first.bss[0].ssid, ssid("Cached"));
        assert_eq!(sys.st().scans, vec![(IFACE, Some(ssid("Hidden")))]);

        // Second scan while it runs: waits for that scan's results and
        // starts no other.
        let waiting = {
            let iface = iface.clone();
            tokio::spawn(async move { iface.scan(None).await })
        };
        tokio::task::yield_now().await;
        sys.st().bss_block.insert(IFACE, fresh_block());
        tx.send(Notification::ScanComplete { iface: IFACE })
            .unwrap();
        let second = waiting.await.unwrap().unwrap();
        assert_eq!(second.bss.len(), 2);
        assert_eq!(sys.st().scans.len(), 1);

        // A completion nobody waited for is published.
        tx.send(Notification::ScanComplete { iface: IFACE })
            .unwrap();
        match next_event(&mut events).await {
            InterfaceEvent::ScanResults { iface: id, result } => {
                assert_eq!(id, IFACE);
                assert_eq!(result.bss.len(), 2);
                assert!(result.complete);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_scan_that_cannot_start_still_answers_cached() {
        let mut st = one_iface();
        st.fail_scan = true;
        let (wifi, _sys, _tx) = setup(st);
        let iface = wifi.interfaces().remove(0);
        let r = iface.scan(None).await.unwrap();
        assert_eq!(r.bss.len(), 1);
        // Nothing is left marked running: the next scan does not wait.
        let r = timeout(Duration::from_secs(5), iface.scan(None))
            .await
            .expect("no wait")
            .unwrap();
        assert_eq!(r.bss.len(), 1);
    }

    #[tokio::test]
    async fn scan_failure_notification_releases_waiters_with_cached_results() {
        let (wifi, _sys, tx) = setup(one_iface());
        let iface = wifi.interfaces().remove(0);
        iface.scan(None).await.unwrap();
        let waiting = {
            let iface = iface.clone();
            tokio::spawn(async move { iface.scan(None).await })
        };
        tokio::task::yield_now().await;
        tx.send(Notification::ScanFailed {
            iface: IFACE,
            reason: 1,
        })
        .unwrap();
        let r = waiting.await.unwrap().unwrap();
        assert_eq!(r.bss.len(), 1);
    }

    #[tokio::test]
    async fn connect_uses_a_temporary_profile_and_the_requested_bssid() {
        let mut st = one_iface();
        st.connect_reason = Some(0);
        let (wifi, sys, _tx) = setup(st);
        let iface = wifi.interfaces().remove(0);
        let mut events = wifi.subscribe();
        let pmk = Key::new(vec![0xab; 32]);
        let params = ConnectParams {
            ssid: ssid("Home"),
            bssid: Some(MacAddr([2, 0, 0, 0, 0, 1])),
            security: Security::WPA2_PSK_CCMP,
            key: Some(pmk),
        };
        let net = iface.connect(&params).await.unwrap();
        assert_eq!(net.ssid, ssid("Home"));
        assert_eq!(net.bssid, MacAddr([2, 0, 0, 0, 0, 1]));
        {
            let st = sys.st();
            let (id, s, bssid, xml) = &st.connects[0];
            assert_eq!((*id, *s, *bssid), (IFACE, ssid("Home"), params.bssid));
            assert!(xml.contains("<keyType>networkKey</keyType>"));
            assert!(xml.contains(&"AB".repeat(32)));
            assert!(xml.contains("<authentication>WPA2PSK</authentication>"));
        }
        // The host-connected event follows from the notification.
        match next_event(&mut events).await {
            InterfaceEvent::Connected { iface: id, network } => {
                assert_eq!(id, IFACE);
                assert_eq!(network.ssid, ssid("Home"));
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[tokio::test]
    async fn connect_failure_and_unsupported_security() {
        let mut st = one_iface();
        st.connect_reason = Some(0x0003_8015);
        let (wifi, sys, _tx) = setup(st);
        let iface = wifi.interfaces().remove(0);
        let mut params = ConnectParams {
            ssid: ssid("Home"),
            bssid: None,
            security: Security::OPEN,
            key: None,
        };
        let err = iface.connect(&params).await.unwrap_err();
        assert_eq!(err, InterfaceError::ConnectFailed { reason: 0x38015 });
        params.security = Security {
            auth: crate::wifi::AuthAlgorithm::Wpa3Sae,
            cipher: crate::wifi::CipherAlgorithm::Ccmp,
        };
        assert!(iface.connect(&params).await.is_err());
        assert_eq!(
            sys.st().connects.len(),
            1,
            "an unsupported network is never tried"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn connect_without_a_result_times_out() {
        let (wifi, _sys, _tx) = setup(one_iface());
        let iface = wifi.interfaces().remove(0);
        let params = ConnectParams {
            ssid: ssid("Home"),
            bssid: None,
            security: Security::OPEN,
            key: None,
        };
        let err = iface.connect(&params).await.unwrap_err();
        assert_eq!(
            err,
            InterfaceError::ConnectTimeout {
                limit: CONNECT_TIMEOUT
            }
        );
    }

    #[tokio::test]
    async fn disconnect_waits_for_the_notification() {
        let mut st = one_iface();
        st.connected.insert(
            IFACE,
            ConnectedNetwork {
                ssid: ssid("Home"),
                bssid: MacAddr([1; 6]),
                security: Security::OPEN,
            },
        );
        let (wifi, sys, _tx) = setup(st);
        let iface = wifi.interfaces().remove(0);
        let mut events = wifi.subscribe();
        iface.disconnect().await.unwrap();
        assert_eq!(sys.st().disconnects, vec![IFACE]);
        assert!(matches!(
            next_event(&mut events).await,
            InterfaceEvent::Disconnected { iface: IFACE }
        ));
        // Not connected: nothing to do.
        iface.disconnect().await.unwrap();
        assert_eq!(sys.st().disconnects.len(), 1);
    }

    /// Issue 13 through the handler: `iw connect` (auth_type 8) to an open
    /// network, the same connect again (kept guest-directed, no second
    /// WlanConnect, the disconnect honoured), WPA3-SAE with the password as
    /// a WPA3SAE profile's passphrase, and shared key refused with 13.
    #[tokio::test]
    async fn guest_auth_types_and_connecting_again_through_the_handler() {
        use crate::handler::{self, HandlerSettings};
        use crate::observer::{ConnectionKind, ObserverQueue};
        use crate::protocol::{akm, cipher, ConnectRequest, DisconnectRequest, Message, Request};

        let mut st = one_iface();
        st.connect_reason = Some(0);
        let (wifi, sys, _tx) = setup(st);
        let (notify, _notifications) = mpsc::channel(8);
        let h = handler::spawn(
            wifi,
            None,
            ObserverQueue::default(),
            notify,
            HandlerSettings::default(),
        );
        let connect = |auth_type: u8, name: &str, akms: Vec<u32>, key: &[u8]| {
            let request = Request::Connect(ConnectRequest {
                ssid: ssid(name),
                bssid: None,
                auth_type,
                wpa_versions: if akms.is_empty() { 0 } else { 4 },
                pairwise_ciphers: if akms.is_empty() {
                    vec![]
                } else {
                    vec![cipher::CCMP]
                },
                akm_suites: akms,
                group_cipher: 0,
                key: Key::new(key.to_vec()),
            });
            let client = h.client.clone();
            async move {
                match client.request(request, tokio::time::Instant::now()).await {
                    Message::ConnectResponse(r) => r,
                    other => panic!("unexpected {other:?}"),
                }
            }
        };
        let first = connect(8, "Cafe", vec![], &[]).await;
        assert_eq!(first.result_code, 0);
        assert!(sys.st().connects[0]
            .3
            .contains("<authentication>open</authentication>"));
        let again = connect(8, "Cafe", vec![], &[]).await;
        assert_eq!(again.result_code, 0);
        assert!(again.session_id > first.session_id);
        assert_eq!(sys.st().connects.len(), 1, "the connection is kept as is");
        let link = h.status.borrow().connection.clone().unwrap();
        assert_eq!(link.kind, ConnectionKind::GuestDirected);
        let bye = Request::Disconnect(DisconnectRequest {
            session_id: again.session_id,
        });
        h.client.request(bye, tokio::time::Instant::now()).await;
        assert_eq!(sys.st().disconnects, vec![IFACE], "the host leaves");

        let sae = connect(4, "Wpa3", vec![akm::SAE], b"correct horse").await;
        assert_eq!(sae.result_code, 0);
        {
            let st = sys.st();
            let xml = &st.connects[1].3;
            assert!(xml.contains("<authentication>WPA3SAE</authentication>"));
            assert!(xml.contains("<keyType>passPhrase</keyType>"));
            assert!(xml.contains("<keyMaterial>correct horse</keyMaterial>"));
        }
        let wep = connect(1, "Cafe", vec![], &[]).await;
        assert_eq!(wep.result_code, 13);
        assert_eq!(sys.st().connects.len(), 2);
        h.task.abort();
    }

    #[tokio::test]
    async fn adapters_come_and_go_and_signal_is_forwarded() {
        let (wifi, sys, tx) = setup(FakeState::default());
        let mut events = wifi.subscribe();
        assert!(wifi.interfaces().is_empty());
        let id = Uuid::from_u128(0x2222);
        sys.st().ifaces.push(InterfaceInfo {
            id,
            description: "USB adapter".into(),
        });
        tx.send(Notification::InterfaceArrival { iface: id })
            .unwrap();
        match next_event(&mut events).await {
            InterfaceEvent::Arrived(i) => assert_eq!(i.name(), "USB adapter"),
            other => panic!("unexpected {other:?}"),
        }
        // A repeated arrival is ignored.
        tx.send(Notification::InterfaceArrival { iface: id })
            .unwrap();
        tx.send(Notification::SignalQuality {
            iface: id,
            percent: 80,
        })
        .unwrap();
        assert!(matches!(
            next_event(&mut events).await,
            InterfaceEvent::SignalQuality { percent: 80, .. }
        ));
        // Unknown interfaces are ignored.
        tx.send(Notification::SignalQuality {
            iface: IFACE,
            percent: 10,
        })
        .unwrap();
        let iface = wifi.interfaces().remove(0);
        iface.scan(None).await.unwrap();
        let waiting = {
            let iface = iface.clone();
            tokio::spawn(async move { iface.scan(None).await })
        };
        tokio::task::yield_now().await;
        sys.st().ifaces.clear();
        tx.send(Notification::InterfaceRemoval { iface: id })
            .unwrap();
        assert!(matches!(
            next_event(&mut events).await,
            InterfaceEvent::Removed(r) if r == id
        ));
        assert!(wifi.interfaces().is_empty());
        // The waiting scan is released (with what the host still has).
        assert!(timeout(Duration::from_secs(5), waiting).await.is_ok());
    }

    /// Polled mode (WlanRegisterNotification not implemented, as under
    /// Wine): the fake's notifications go nowhere, and the backend must
    /// still see adapters arrive and leave and connects and disconnects end.
    #[tokio::test]
    async fn polled_mode_follows_adapters_connections_and_scans() {
        let (nowhere, _) = mpsc::unbounded_channel();
        let sys = Arc::new(FakeSys {
            state: Mutex::new(FakeState {
                connect_reason: Some(0),
                ..FakeState::default()
            }),
            notify: nowhere,
        });
        let wifi = WlanApiWifi::polled(sys.clone()).unwrap();
        let mut events = wifi.subscribe();
        assert!(wifi.interfaces().is_empty());

        sys.st().ifaces = one_iface().ifaces;
        match next_event(&mut events).await {
            InterfaceEvent::Arrived(i) => assert_eq!(i.id(), IFACE),
            other => panic!("unexpected {other:?}"),
        }
        let iface = wifi.interfaces().remove(0);

        let params = ConnectParams {
            ssid: ssid("Home"),
            bssid: Some(MacAddr([2, 0, 0, 0, 0, 1])),
            security: Security::OPEN,
            key: None,
        };
        let net = timeout(2 * CONNECT_TIMEOUT, iface.connect(&params))
            .await
            .expect("the connect ends")
            .unwrap();
        assert_eq!(net.ssid, ssid("Home"));
        assert!(matches!(
            next_event(&mut events).await,
            InterfaceEvent::Connected { network, .. } if network.ssid == ssid("Home")
        ));
        // Connecting again to the network it is on completes too.
        assert!(iface.connect(&params).await.is_ok());

        iface.disconnect().await.unwrap();
        assert!(iface.connected_network().await.unwrap().is_none());
        // (The repeated connect published its connection again.)
        loop {
            match next_event(&mut events).await {
                InterfaceEvent::Connected { .. } => continue,
                InterfaceEvent::Disconnected { iface } => break assert_eq!(iface, IFACE),
                other => panic!("unexpected {other:?}"),
            }
        }

        // Nothing reports a host scan's end: scans are not left waiting.
        iface.scan(None).await.unwrap();
        timeout(Duration::from_secs(1), iface.scan(None))
            .await
            .expect("the second scan does not wait")
            .unwrap();
        assert_eq!(sys.st().scans.len(), 2);

        sys.st().ifaces.clear();
        assert!(matches!(
            next_event(&mut events).await,
            InterfaceEvent::Removed(r) if r == IFACE
        ));
        assert!(wifi.interfaces().is_empty());
    }

    #[test]
    fn only_stubs_count_as_not_implemented() {
        let stub = WlanError::Api {
            call: "WlanRegisterNotification",
            code: crate::wifi::wlanapi::win32::ERROR_CALL_NOT_IMPLEMENTED,
        };
        assert!(stub.is_not_implemented());
        assert!(!api_err("WlanRegisterNotification").is_not_implemented());
    }
}
