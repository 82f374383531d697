//! Every rule of the reference host, driven through scripted interfaces under
//! tokio's virtual time.

use std::collections::VecDeque;
use std::sync::Mutex;

use async_trait::async_trait;

use super::*;
use crate::observer::{Observer, ObserverEvent};
use crate::protocol::{akm, wpa2_psk_ccmp_rsn_element, Key, CAPABILITY_ESS, CAPABILITY_PRIVACY};
use crate::wifi::{fake_networks, CipherAlgorithm, EventHub, ScanResult, FAKE_INTERFACE_ID};

// ---------------------------------------------------------------- fixtures

#[derive(Default)]
struct Script {
    scan: ScanResult,
    scan_delay: Duration,
    scan_fails: bool,
    connected: Option<ConnectedNetwork>,
    /// How long `connected_network` takes to answer.
    query_delay: Duration,
    /// Outcomes of the next connects; empty: "not found".
    connects: VecDeque<Result<ConnectedNetwork, InterfaceError>>,
    connect_delay: Duration,
    disconnect_delay: Duration,
    /// When set, a successful connect publishes what a real backend does
    /// when the interface changes network: Disconnected (from the old
    /// network), then Connected, before the connect returns.
    publish_on_connect: Option<Arc<EventHub>>,
    /// When set, a connect waits for it before answering.
    connect_gate: Option<Arc<Notify>>,
    calls: Vec<String>,
    /// Calls running now, and the most ever running at once.
    in_call: usize,
    most_in_call: usize,
}

/// A scriptable interface.
struct TestIface {
    id: InterfaceId,
    name: String,
    script: Mutex<Script>,
}

impl TestIface {
    fn new(n: u128) -> Arc<TestIface> {
        Arc::new(TestIface {
            id: uuid::Uuid::from_u128(n),
            name: format!("test{n}"),
            script: Mutex::new(Script {
                scan: ScanResult {
                    bss: vec![],
                    complete: true,
                },
                ..Script::default()
            }),
        })
    }
    fn s(&self) -> std::sync::MutexGuard<'_, Script> {
        self.script.lock().unwrap()
    }
    fn calls(&self) -> Vec<String> {
        self.s().calls.clone()
    }
    fn enter(&self) {
        let mut s = self.s();
        s.in_call += 1;
        s.most_in_call = s.most_in_call.max(s.in_call);
    }
    fn leave(&self) {
        self.s().in_call -= 1;
    }
}

/// Waits `delay`; no delay answers at once (a tokio sleep, even of zero,
/// waits for the timer's next tick).
async fn pause(delay: Duration) {
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
}

#[async_trait]
impl WifiInterface for TestIface {
    fn id(&self) -> InterfaceId {
        self.id
    }
    fn name(&self) -> String {
        self.name.clone()
    }
    async fn connected_network(&self) -> Result<Option<ConnectedNetwork>, InterfaceError> {
        let delay = self.s().query_delay;
        pause(delay).await;
        Ok(self.s().connected.clone())
    }
    async fn scan(&self, _target: Option<&Ssid>) -> Result<ScanResult, InterfaceError> {
        let (delay, fails, result) = {
            let mut s = self.s();
            s.calls.push("scan".into());
            (s.scan_delay, s.scan_fails, s.scan.clone())
        };
        self.enter();
        pause(delay).await;
        self.leave();
        if fails {
            return Err(InterfaceError::HostCallAborted);
        }
        Ok(result)
    }
    async fn connect(&self, params: &ConnectParams) -> Result<ConnectedNetwork, InterfaceError> {
        let (delay, outcome, gate) = {
            let mut s = self.s();
            s.calls.push(format!(
                "connect {} {} key={}",
                params.ssid,
                params.security.label(),
                params.key.as_ref().map_or(0, |k| k.len())
            ));
            (
                s.connect_delay,
                s.connects.pop_front().unwrap_or_else(|| {
                    Err(InterfaceError::NotFound(params.ssid.to_string_lossy()))
                }),
                s.connect_gate.clone(),
            )
        };
        self.enter();
        pause(delay).await;
        if let Some(gate) = gate {
            gate.notified().await;
        }
        self.leave();
        if let Ok(n) = &outcome {
            let hub = {
                let mut s = self.s();
                s.connected = Some(n.clone());
                s.publish_on_connect.clone()
            };
            if let Some(hub) = hub {
                hub.publish(InterfaceEvent::Disconnected { iface: self.id });
                hub.publish(InterfaceEvent::Connected {
                    iface: self.id,
                    network: n.clone(),
                });
            }
        }
        outcome
    }
    async fn disconnect(&self) -> Result<(), InterfaceError> {
        let delay = {
            let mut s = self.s();
            s.calls.push("disconnect".into());
            s.disconnect_delay
        };
        self.enter();
        pause(delay).await;
        self.leave();
        self.s().connected = None;
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Ev {
    Authorize(ConnectionKind, String),
    Event(ObserverEvent),
}

struct Recorder {
    events: Mutex<Vec<Ev>>,
    answer: Mutex<Authorization>,
    panic_on_authorize: Mutex<bool>,
    panic_on_scan: Mutex<bool>,
}

impl Recorder {
    fn push(&self, e: ObserverEvent) {
        self.events.lock().unwrap().push(Ev::Event(e));
    }
}

impl Observer for Recorder {
    fn host_connected(&self, c: &HostConnection) {
        self.push(ObserverEvent::HostConnected(c.clone()));
    }
    fn host_disconnected(&self, i: InterfaceId) {
        self.push(ObserverEvent::HostDisconnected(i));
    }
    fn authorize_guest_connection(&self, kind: ConnectionKind, ssid: &Ssid) -> Authorization {
        self.events
            .lock()
            .unwrap()
            .push(Ev::Authorize(kind, ssid.to_string_lossy()));
        if *self.panic_on_authorize.lock().unwrap() {
            panic!("observer bug in authorize");
        }
        *self.answer.lock().unwrap()
    }
    fn guest_connect_completed(&self, c: &GuestConnectCompletion) {
        self.push(ObserverEvent::GuestConnectCompleted(c.clone()));
    }
    fn guest_disconnect_requested(&self, d: &GuestDisconnect) {
        self.push(ObserverEvent::GuestDisconnectRequested(d.clone()));
    }
    fn guest_disconnect_completed(&self, d: &GuestDisconnect) {
        self.push(ObserverEvent::GuestDisconnectCompleted(d.clone()));
    }
    fn guest_scan_requested(&self) {
        self.push(ObserverEvent::GuestScanRequested);
        if *self.panic_on_scan.lock().unwrap() {
            panic!("observer bug in scan");
        }
    }
    fn guest_scan_completed(&self) {
        self.push(ObserverEvent::GuestScanCompleted);
    }
}

struct Harness {
    hub: Arc<EventHub>,
    client: HandlerClient,
    notes: mpsc::Receiver<Message>,
    recorder: Arc<Recorder>,
    observer: ObserverQueue,
    status: watch::Receiver<HandlerStatus>,
    gate: Arc<ReplyGate>,
    _task: JoinHandle<()>,
}

fn mac(last: u8) -> MacAddr {
    MacAddr([2, 0, 0, 0, 0, last])
}

fn ssid(s: &str) -> Ssid {
    Ssid::new(s.as_bytes()).unwrap()
}

fn scanned(last: u8, name: &str, freq_khz: u32, security: Security) -> ScannedBss {
    ScannedBss {
        bssid: mac(last),
        ssid: ssid(name),
        capabilities: None,
        rssi_dbm: -40 - i32::from(last),
        beacon_interval: Some(100),
        freq_khz,
        security,
        ies: vec![],
    }
}

fn network(last: u8, name: &str) -> ConnectedNetwork {
    ConnectedNetwork {
        ssid: ssid(name),
        bssid: mac(last),
        security: Security::WPA2_PSK_CCMP,
    }
}

fn no_latency() -> HandlerSettings {
    HandlerSettings {
        scan_min_latency: Duration::ZERO,
        ..HandlerSettings::default()
    }
}

fn harness(
    ifaces: Vec<Arc<TestIface>>,
    fake: Vec<(&str, MacAddr)>,
    settings: HandlerSettings,
) -> Harness {
    let hub = Arc::new(EventHub::new());
    for i in &ifaces {
        hub.add(i.clone());
    }
    let recorder = Arc::new(Recorder {
        events: Mutex::new(vec![]),
        answer: Mutex::new(Authorization::Approve),
        panic_on_authorize: Mutex::new(false),
        panic_on_scan: Mutex::new(false),
    });
    let (observer, _) = ObserverQueue::start(Some(recorder.clone()));
    let fake = (!fake.is_empty()).then(|| {
        let list: Vec<(Ssid, MacAddr)> = fake.into_iter().map(|(s, m)| (ssid(s), m)).collect();
        fake_networks(Arc::new(move || list.clone()))
    });
    let (tx, notes) = mpsc::channel(64);
    let handle = spawn(hub.clone(), fake, observer.clone(), tx, settings);
    Harness {
        hub,
        client: handle.client,
        notes,
        recorder,
        observer,
        status: handle.status,
        gate: handle.reply_gate,
        _task: handle.task,
    }
}

impl Harness {
    async fn request(&self, r: Request) -> Message {
        self.client.request(r, Instant::now()).await
    }
    async fn scan(&self) -> ScanResponse {
        match self.request(Request::Scan(ScanRequest::default())).await {
            Message::ScanResponse(s) => s,
            other => panic!("expected a scan response, got {other:?}"),
        }
    }
    async fn connect(&self, req: ConnectRequest) -> ConnectResponse {
        match self.request(Request::Connect(req)).await {
            Message::ConnectResponse(c) => c,
            other => panic!("expected a connect response, got {other:?}"),
        }
    }
    async fn disconnect(&self, session_id: u64) {
        assert_eq!(
            self.request(Request::Disconnect(DisconnectRequest { session_id }))
                .await,
            Message::DisconnectResponse
        );
    }
    /// Observer calls so far (drains them).
    async fn events(&self) -> Vec<Ev> {
        self.client.sync().await;
        self.observer.flush().await;
        std::mem::take(&mut *self.recorder.events.lock().unwrap())
    }
    /// Notifications so far (drains them).
    async fn notes(&mut self) -> Vec<Message> {
        self.client.sync().await;
        let mut out = vec![];
        while let Ok(m) = self.notes.try_recv() {
            out.push(m);
        }
        out
    }
}

fn open_request(name: &str) -> ConnectRequest {
    crate::test_utils::open_connect(name)
}

fn psk_request(name: &str) -> ConnectRequest {
    crate::test_utils::wpa2_connect(name, Key::new(vec![0x5a; 32]))
}

fn completed(
    kind: ConnectionKind,
    outcome: ConnectOutcome,
    status: u16,
    interface: Option<InterfaceId>,
    name: &str,
    auth: AuthAlgorithm,
) -> Ev {
    Ev::Event(ObserverEvent::GuestConnectCompleted(
        GuestConnectCompletion {
            kind,
            outcome,
            status,
            interface,
            ssid: ssid(name),
            auth,
        },
    ))
}

fn host_connected(iface: InterfaceId, name: &str, auth: AuthAlgorithm) -> Ev {
    Ev::Event(ObserverEvent::HostConnected(HostConnection {
        interface: iface,
        ssid: ssid(name),
        auth,
    }))
}

// ---------------------------------------------------------------- scan

#[tokio::test(start_paused = true)]
async fn scan_merges_fake_networks_first_dedups_and_drops_unknown_channels() {
    let a = TestIface::new(1);
    let b = TestIface::new(2);
    a.s().scan.bss = vec![
        scanned(1, "dup-of-fake", 2_437_000, Security::OPEN),
        scanned(2, "A2", 2_437_000, Security::OPEN),
        scanned(3, "off-channel", 2_400_000, Security::OPEN),
        scanned(
            5,
            "sae",
            5_180_000,
            Security {
                auth: AuthAlgorithm::Wpa3Enterprise,
                cipher: CipherAlgorithm::Ccmp,
            },
        ),
    ];
    b.s().scan.bss = vec![
        scanned(2, "dup-of-A", 5_180_000, Security::OPEN),
        scanned(4, "B4", 6_115_000, Security::WPA2_PSK_CCMP),
    ];
    let h = harness(vec![a, b], vec![("Corp", mac(1))], no_latency());
    let r = h.scan().await;
    assert!(r.scan_complete);
    let order: Vec<_> = r.bss.iter().map(|b| b.bssid.0[5]).collect();
    assert_eq!(order, vec![1, 2, 5, 4]);
    let fake = &r.bss[0];
    assert_eq!(fake.ssid(), Some(ssid("Corp")));
    assert_eq!(
        (fake.freq_khz, fake.rssi_dbm, fake.capabilities),
        (5_240_000, -50, CAPABILITY_ESS | CAPABILITY_PRIVACY)
    );
    assert_eq!(&fake.ies[6..], &wpa2_psk_ccmp_rsn_element()[..]);
    // Unsupported security is shown as WPA2-PSK/CCMP.
    let sae = &r.bss[2];
    assert_eq!(sae.capabilities, CAPABILITY_ESS | CAPABILITY_PRIVACY);
    assert!(sae.ies.ends_with(&wpa2_psk_ccmp_rsn_element()));
    assert_eq!(r.bss[1].ssid(), Some(ssid("A2")));
    // Every answer encodes.
    assert!(Message::ScanResponse(r).encode(ScanLayout::Current).is_ok());
    assert_eq!(
        h.events().await,
        vec![
            Ev::Event(ObserverEvent::GuestScanRequested),
            Ev::Event(ObserverEvent::GuestScanCompleted)
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn scan_waits_for_an_in_flight_host_scan() {
    let a = TestIface::new(1);
    // The interface is already scanning: its answer comes when that scan ends.
    a.s().scan_delay = Duration::from_secs(3);
    a.s().scan.bss = vec![scanned(7, "fresh", 2_412_000, Security::OPEN)];
    let h = harness(vec![a.clone()], vec![], no_latency());
    let start = Instant::now();
    let r = h.scan().await;
    assert_eq!(start.elapsed(), Duration::from_secs(3));
    assert!(r.scan_complete);
    assert_eq!(r.bss.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn scan_collects_within_10_s_and_skips_failures() {
    let slow = TestIface::new(1);
    slow.s().scan_delay = Duration::from_secs(60);
    slow.s().scan.bss = vec![scanned(1, "late", 2_412_000, Security::OPEN)];
    let broken = TestIface::new(2);
    broken.s().scan_fails = true;
    let ok = TestIface::new(3);
    ok.s().scan.bss = vec![scanned(3, "ok", 2_412_000, Security::OPEN)];
    let h = harness(vec![slow, broken, ok], vec![], no_latency());
    let start = Instant::now();
    let r = h.scan().await;
    assert_eq!(start.elapsed(), Duration::from_secs(10));
    assert!(r.scan_complete);
    assert_eq!(
        r.bss.iter().map(|b| b.bssid).collect::<Vec<_>>(),
        vec![mac(3)]
    );
}

/// Issue 15, defect 1: NetworkManager lists a hidden BSS twice with one
/// BSSID, as beaconed (no SSID) and as probed (the SSID). The guest gets
/// the entry with the SSID, whichever comes first, in the scan answer and
/// in notifications; two different SSIDs on one BSSID keep the first.
#[tokio::test(start_paused = true)]
async fn a_hidden_bss_is_shown_with_its_probed_ssid() {
    let a = TestIface::new(1);
    a.s().scan.bss = vec![
        scanned(7, "", 2_462_000, Security::WPA2_PSK_CCMP),
        scanned(8, "visible", 2_412_000, Security::OPEN),
        scanned(7, "hidden-net", 2_462_000, Security::WPA2_PSK_CCMP),
        scanned(8, "other", 2_412_000, Security::OPEN),
    ];
    let mut h = harness(vec![a.clone()], vec![], no_latency());
    let r = h.scan().await;
    let seen: Vec<_> = r.bss.iter().map(|b| (b.bssid.0[5], b.ssid())).collect();
    assert_eq!(
        seen,
        vec![(7, Some(ssid("hidden-net"))), (8, Some(ssid("visible")))]
    );
    assert!(Message::ScanResponse(r).encode(ScanLayout::Current).is_ok());

    let mut zeros = scanned(9, "", 2_437_000, Security::OPEN);
    zeros.ssid = Ssid::new(&[0, 0, 0]).unwrap();
    h.hub.publish(InterfaceEvent::ScanResults {
        iface: a.id,
        result: ScanResult {
            bss: vec![zeros, scanned(9, "probed", 2_437_000, Security::OPEN)],
            complete: true,
        },
    });
    let notes = h.notes().await;
    match &notes[..] {
        [Message::ScanResponse(s)] => {
            let seen: Vec<_> = s.bss.iter().map(|b| b.ssid()).collect();
            assert_eq!(seen, vec![Some(ssid("probed"))]);
        }
        other => panic!("unexpected notifications {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn scan_complete_only_when_no_interface_is_still_scanning() {
    let a = TestIface::new(1);
    let b = TestIface::new(2);
    let c = TestIface::new(3);
    a.s().scan.bss = vec![scanned(1, "A", 2_412_000, Security::OPEN)];
    b.s().scan = ScanResult {
        bss: vec![scanned(2, "B", 2_412_000, Security::OPEN)],
        complete: false,
    };
    c.s().scan = ScanResult {
        bss: vec![],
        complete: false,
    };
    let mut h = harness(vec![a.clone(), b.clone(), c.clone()], vec![], no_latency());
    let r = h.scan().await;
    assert!(!r.scan_complete);
    assert_eq!(r.bss.len(), 2);

    let results = |iface: &Arc<TestIface>, last: u8, complete: bool| InterfaceEvent::ScanResults {
        iface: iface.id,
        result: ScanResult {
            bss: vec![scanned(last, "fresh", 2_412_000, Security::OPEN)],
            complete,
        },
    };
    let flags = |notes: Vec<Message>| -> Vec<(bool, usize)> {
        notes
            .into_iter()
            .map(|m| match m {
                Message::ScanResponse(s) => (s.scan_complete, s.bss.len()),
                other => panic!("unexpected {other:?}"),
            })
            .collect()
    };
    // A was not scanning: its results are spontaneous.
    h.hub.publish(results(&a, 10, true));
    // B finishes, C still scanning: not complete yet.
    h.hub.publish(results(&b, 11, true));
    assert_eq!(flags(h.notes().await), vec![(false, 1), (false, 1)]);
    // C finishes: that completes the guest's scan.
    h.hub.publish(results(&c, 12, true));
    assert_eq!(flags(h.notes().await), vec![(true, 1)]);
    // Anything after is spontaneous again.
    h.hub.publish(results(&c, 13, true));
    assert_eq!(flags(h.notes().await), vec![(false, 1)]);
}

#[tokio::test(start_paused = true)]
async fn pending_scan_expires_and_removal_finishes_it() {
    let a = TestIface::new(1);
    a.s().scan = ScanResult {
        bss: vec![],
        complete: false,
    };
    let mut h = harness(vec![a.clone()], vec![], no_latency());
    assert!(!h.scan().await.scan_complete);
    tokio::time::sleep(Duration::from_secs(11)).await;
    h.hub.publish(InterfaceEvent::ScanResults {
        iface: a.id,
        result: ScanResult {
            bss: vec![scanned(1, "late", 2_412_000, Security::OPEN)],
            complete: true,
        },
    });
    assert!(matches!(&h.notes().await[..], [Message::ScanResponse(s)] if !s.scan_complete));

    assert!(!h.scan().await.scan_complete);
    h.hub.remove(a.id);
    assert_eq!(
        h.notes().await,
        vec![Message::ScanResponse(ScanResponse {
            scan_complete: true,
            bss: vec![]
        })]
    );
}

#[tokio::test(start_paused = true)]
async fn spontaneous_results_never_complete_and_legacy_guests_get_none() {
    let a = TestIface::new(1);
    let mut h = harness(vec![a.clone()], vec![], no_latency());
    let event = InterfaceEvent::ScanResults {
        iface: a.id,
        result: ScanResult {
            bss: vec![
                scanned(1, "x", 2_412_000, Security::OPEN),
                scanned(1, "dup", 2_412_000, Security::OPEN),
                scanned(2, "bad", 1_000, Security::OPEN),
            ],
            complete: true,
        },
    };
    h.hub.publish(event.clone());
    let notes = h.notes().await;
    assert!(
        matches!(&notes[..], [Message::ScanResponse(s)] if !s.scan_complete && s.bss.len() == 1)
    );

    let b = TestIface::new(2);
    b.s().scan = ScanResult {
        bss: vec![],
        complete: false,
    };
    let mut legacy = harness(
        vec![b.clone()],
        vec![],
        HandlerSettings {
            scan_layout: ScanLayout::Legacy,
            ..no_latency()
        },
    );
    // Legacy has no scan_complete byte: every answer completes the scan.
    assert!(legacy.scan().await.scan_complete);
    legacy.hub.publish(InterfaceEvent::ScanResults {
        iface: b.id,
        result: ScanResult {
            bss: vec![scanned(3, "y", 2_412_000, Security::OPEN)],
            complete: true,
        },
    });
    assert!(legacy.notes().await.is_empty());
}

#[tokio::test(start_paused = true)]
async fn scan_reply_has_a_minimum_latency_from_arrival() {
    let a = TestIface::new(1);
    a.s().connected = Some(network(1, "Home"));
    let mut h = harness(vec![a.clone()], vec![], HandlerSettings::default());
    assert_eq!(
        h.client
            .request(Request::Scan(ScanRequest::default()), Instant::now())
            .await
            .operation(),
        crate::protocol::Operation::ScanResponse
    );

    // Measured from arrival: a request that arrived 100 ms ago waits 50 ms.
    let start = Instant::now();
    h.client
        .request(
            Request::Scan(ScanRequest::default()),
            start - Duration::from_millis(100),
        )
        .await;
    assert_eq!(start.elapsed(), Duration::from_millis(50));

    let start = Instant::now();
    h.scan().await;
    assert_eq!(start.elapsed(), Duration::from_millis(150));

    // A slow interface already used the time up: no extra wait.
    a.s().scan_delay = Duration::from_millis(400);
    let start = Instant::now();
    h.scan().await;
    assert_eq!(start.elapsed(), Duration::from_millis(400));
    a.s().scan_delay = Duration::ZERO;

    // Connect and disconnect are not delayed.
    let start = Instant::now();
    let c = h.connect(psk_request("Home")).await;
    assert_eq!(c.result_code, 0);
    h.disconnect(c.session_id).await;
    assert_eq!(start.elapsed(), Duration::ZERO);

    // A host event during the wait is handled after the reply: its
    // notification cannot overtake the reply.
    let c = h.connect(psk_request("Home")).await;
    assert_eq!(c.result_code, 0);
    let start = Instant::now();
    let client = h.client.clone();
    let scan = tokio::spawn(async move {
        client
            .request(Request::Scan(ScanRequest::default()), Instant::now())
            .await;
        Instant::now()
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    h.hub.publish(InterfaceEvent::SignalQuality {
        iface: a.id,
        percent: 80,
    });
    let early = tokio::time::timeout(Duration::from_millis(99), h.notes.recv()).await;
    assert!(early.is_err(), "a notification overtook the scan reply");
    let replied = scan.await.unwrap();
    assert_eq!(replied - start, Duration::from_millis(150));
    assert_eq!(
        h.notes().await,
        vec![Message::NotifSignalQuality { dbm: -60 }]
    );

    // Zero turns the latency off.
    let h = harness(vec![TestIface::new(9)], vec![], no_latency());
    let start = Instant::now();
    h.scan().await;
    assert_eq!(start.elapsed(), Duration::ZERO);
}

// ---------------------------------------------------------------- connect

#[tokio::test(start_paused = true)]
async fn connect_to_a_network_the_host_is_on_is_mirroring() {
    let a = TestIface::new(1);
    let b = TestIface::new(2);
    b.s().connected = Some(network(7, "Home"));
    let h = harness(
        vec![a.clone(), b.clone()],
        vec![("Corp", mac(9))],
        no_latency(),
    );
    assert_eq!(
        h.events().await,
        vec![host_connected(b.id, "Home", AuthAlgorithm::Wpa2Psk)]
    );
    let c = h.connect(psk_request("Home")).await;
    assert_eq!((c.result_code, c.bssid, c.session_id), (0, mac(7), 1));
    assert!(a.calls().is_empty() && b.calls().is_empty());
    // A fake network is always connected: mirroring with the fake id.
    let c = h.connect(psk_request("Corp")).await;
    assert_eq!((c.result_code, c.bssid, c.session_id), (0, mac(9), 2));
    assert_eq!(
        h.events().await,
        vec![
            Ev::Authorize(ConnectionKind::HostMirroring, "Home".into()),
            completed(
                ConnectionKind::HostMirroring,
                ConnectOutcome::Succeeded,
                0,
                Some(b.id),
                "Home",
                AuthAlgorithm::Wpa2Psk
            ),
            Ev::Authorize(ConnectionKind::HostMirroring, "Corp".into()),
            completed(
                ConnectionKind::HostMirroring,
                ConnectOutcome::Succeeded,
                0,
                Some(FAKE_INTERFACE_ID),
                "Corp",
                AuthAlgorithm::Wpa2Psk
            ),
        ]
    );
    *h.recorder.answer.lock().unwrap() = Authorization::Deny;
    let c = h.connect(psk_request("Home")).await;
    assert_eq!(
        (c.result_code, c.bssid, c.session_id),
        (1, MacAddr::ZERO, 3)
    );
    assert_eq!(
        h.events().await,
        vec![
            Ev::Authorize(ConnectionKind::HostMirroring, "Home".into()),
            completed(
                ConnectionKind::HostMirroring,
                ConnectOutcome::Denied,
                1,
                None,
                "Home",
                AuthAlgorithm::Wpa2Psk
            ),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn guest_directed_connect_tries_interfaces_in_order() {
    let a = TestIface::new(1);
    let b = TestIface::new(2);
    b.s().connects.push_back(Ok(network(4, "Net")));
    let h = harness(vec![a.clone(), b.clone()], vec![], no_latency());
    let c = h.connect(psk_request("Net")).await;
    assert_eq!((c.result_code, c.bssid, c.session_id), (0, mac(4), 1));
    // The PMK reaches the interface; an open request carries no key.
    assert_eq!(a.calls(), vec!["connect Net wpa2-psk/ccmp key=32"]);
    assert_eq!(b.calls(), vec!["connect Net wpa2-psk/ccmp key=32"]);
    assert_eq!(
        h.events().await,
        vec![
            Ev::Authorize(ConnectionKind::GuestDirected, "Net".into()),
            host_connected(b.id, "Net", AuthAlgorithm::Wpa2Psk),
            completed(
                ConnectionKind::GuestDirected,
                ConnectOutcome::Succeeded,
                0,
                Some(b.id),
                "Net",
                AuthAlgorithm::Wpa2Psk
            ),
        ]
    );
    // The interface's own "connected" event is not reported twice.
    h.hub.publish(InterfaceEvent::Connected {
        iface: b.id,
        network: network(4, "Net"),
    });
    assert!(h.events().await.is_empty());

    let c = h.connect(open_request("Nowhere")).await;
    assert_eq!(
        (c.result_code, c.bssid, c.session_id),
        (1, MacAddr::ZERO, 2)
    );
    assert_eq!(a.calls().last().unwrap(), "connect Nowhere open key=0");
    assert_eq!(
        h.events().await,
        vec![
            Ev::Authorize(ConnectionKind::GuestDirected, "Nowhere".into()),
            completed(
                ConnectionKind::GuestDirected,
                ConnectOutcome::Failed,
                1,
                None,
                "Nowhere",
                AuthAlgorithm::Open
            ),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn guest_directed_connect_denied_touches_nothing() {
    let a = TestIface::new(1);
    let h = harness(vec![a.clone()], vec![], no_latency());
    *h.recorder.answer.lock().unwrap() = Authorization::Deny;
    let c = h.connect(psk_request("Net")).await;
    assert_eq!((c.result_code, c.session_id), (1, 1));
    assert!(a.calls().is_empty());
    assert_eq!(
        h.events().await,
        vec![
            Ev::Authorize(ConnectionKind::GuestDirected, "Net".into()),
            completed(
                ConnectionKind::GuestDirected,
                ConnectOutcome::Denied,
                1,
                None,
                "Net",
                AuthAlgorithm::Wpa2Psk
            ),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn connect_gives_each_interface_10_s_and_reports_rejection_status() {
    let a = TestIface::new(1);
    let b = TestIface::new(2);
    a.s().connect_delay = Duration::from_secs(60);
    a.s().connects.push_back(Ok(network(1, "Net")));
    b.s().connects.push_back(Ok(network(2, "Net")));
    let h = harness(vec![a.clone(), b.clone()], vec![], no_latency());
    let start = Instant::now();
    let c = h.connect(psk_request("Net")).await;
    assert_eq!(start.elapsed(), Duration::from_secs(10));
    assert_eq!((c.result_code, c.bssid), (0, mac(2)));

    let c2 = TestIface::new(3);
    let d = TestIface::new(4);
    c2.s()
        .connects
        .push_back(Err(InterfaceError::Rejected { status: 15 }));
    d.s().connect_delay = Duration::from_secs(11);
    let h = harness(vec![c2, d], vec![], no_latency());
    let start = Instant::now();
    let r = h.connect(psk_request("Net")).await;
    assert_eq!(start.elapsed(), Duration::from_secs(10));
    assert_eq!((r.result_code, r.session_id), (15, 1));
}

#[tokio::test(start_paused = true)]
async fn session_ids_count_every_connect_response() {
    let a = TestIface::new(1);
    a.s().connects.push_back(Ok(network(1, "Net")));
    let h = harness(vec![a.clone()], vec![], no_latency());
    let ids = [
        h.connect(psk_request("Net")).await.session_id, // success
        h.connect(psk_request("Other")).await.session_id, // failure
        {
            *h.recorder.answer.lock().unwrap() = Authorization::Deny;
            h.connect(psk_request("Other")).await.session_id // denied
        },
    ];
    assert_eq!(ids, [1, 2, 3]);
}

#[tokio::test(start_paused = true)]
async fn unsupported_security_fails_unless_mirrored() {
    let a = TestIface::new(1);
    // WPA (version 1): nothing the host joins for a guest.
    let wpa1 = || ConnectRequest {
        wpa_versions: 1,
        ..psk_request("Wpa3Net")
    };
    let h = harness(vec![a.clone()], vec![], no_latency());
    let c = h.connect(wpa1()).await;
    assert_eq!(c.result_code, 1);
    assert!(a.calls().is_empty());
    // The host is on it: mirroring works whatever the guest asked for.
    a.s().connected = Some(ConnectedNetwork {
        ssid: ssid("Wpa3Net"),
        bssid: mac(3),
        security: Security {
            auth: AuthAlgorithm::Wpa3Sae,
            cipher: CipherAlgorithm::Ccmp,
        },
    });
    let c = h.connect(psk_request("Wpa3Net")).await;
    assert_eq!((c.result_code, c.bssid), (0, mac(3)));
    let events = h.events().await;
    assert_eq!(
        events.last().unwrap(),
        &completed(
            ConnectionKind::HostMirroring,
            ConnectOutcome::Succeeded,
            0,
            Some(a.id),
            "Wpa3Net",
            AuthAlgorithm::Wpa3Sae
        )
    );
}

#[tokio::test(start_paused = true)]
async fn auth_types_automatic_sae_and_refused() {
    let a = TestIface::new(1);
    a.s().connects.push_back(Ok(network(1, "Cafe")));
    a.s().connects.push_back(Ok(network(1, "Wpa3Net")));
    let h = harness(vec![a.clone()], vec![], no_latency());
    // `iw connect`: auth_type 8, nothing else: open.
    let iw = ConnectRequest {
        auth_type: 8,
        wpa_versions: 0,
        akm_suites: vec![],
        pairwise_ciphers: vec![],
        group_cipher: 0,
        key: Key::default(),
        ..psk_request("Cafe")
    };
    assert_eq!(h.connect(iw).await.result_code, 0);
    // SAE: the password goes to the interface as the key.
    let sae = ConnectRequest {
        auth_type: 4,
        wpa_versions: 4,
        akm_suites: vec![akm::SAE],
        key: Key::new(b"correct horse".to_vec()),
        ..psk_request("Wpa3Net")
    };
    assert_eq!(h.connect(sae).await.result_code, 0);
    assert_eq!(
        a.calls(),
        vec![
            "connect Cafe open key=0".to_string(),
            "connect Wpa3Net wpa3-sae/ccmp key=13".to_string()
        ]
    );
    // Shared key: status 13 at once, even for a network the host is on
    // (no mirroring), and the interface is not touched.
    let before = a.calls().len();
    let wep = ConnectRequest {
        auth_type: 1,
        ..psk_request("Wpa3Net")
    };
    let c = h.connect(wep).await;
    assert_eq!((c.result_code, c.bssid), (13, MacAddr::default()));
    assert_eq!(a.calls().len(), before);
}

// ---------------------------------------------------------------- disconnect

#[tokio::test(start_paused = true)]
async fn disconnect_rules() {
    let a = TestIface::new(1);
    let b = TestIface::new(2);
    a.s().connected = Some(network(1, "Home"));
    b.s().connects.push_back(Ok(network(2, "Net")));
    let h = harness(vec![a.clone(), b.clone()], vec![], no_latency());
    // Not connected: nothing happens.
    h.disconnect(0).await;
    h.events().await;
    assert!(h.events().await.is_empty());

    // Mirrored: the host stays connected.
    let s1 = h.connect(psk_request("Home")).await.session_id;
    h.events().await;
    h.disconnect(s1).await;
    assert!(a.calls().is_empty());
    assert!(a.s().connected.is_some());
    let mirrored = GuestDisconnect {
        kind: ConnectionKind::HostMirroring,
        interface: a.id,
        ssid: ssid("Home"),
    };
    assert_eq!(
        h.events().await,
        vec![
            Ev::Event(ObserverEvent::GuestDisconnectRequested(mirrored.clone())),
            Ev::Event(ObserverEvent::GuestDisconnectCompleted(mirrored)),
        ]
    );

    // Guest directed: only the guest's interface is disconnected.
    let s2 = h.connect(psk_request("Net")).await.session_id;
    assert_eq!(s2, 2);
    h.events().await;
    // A session never issued: nothing happens either.
    h.disconnect(99).await;
    assert!(!b.calls().contains(&"disconnect".to_string()));
    assert!(h.events().await.is_empty());
    // Stale session: nothing happens.
    h.disconnect(s1).await;
    assert!(!b.calls().contains(&"disconnect".to_string()));
    assert!(h.events().await.is_empty());
    h.disconnect(s2).await;
    assert_eq!(b.calls().last().unwrap(), "disconnect");
    assert!(!a.calls().contains(&"disconnect".to_string()));
    let directed = GuestDisconnect {
        kind: ConnectionKind::GuestDirected,
        interface: b.id,
        ssid: ssid("Net"),
    };
    assert_eq!(
        h.events().await,
        vec![
            Ev::Event(ObserverEvent::GuestDisconnectRequested(directed.clone())),
            Ev::Event(ObserverEvent::HostDisconnected(b.id)),
            Ev::Event(ObserverEvent::GuestDisconnectCompleted(directed)),
        ]
    );
    // Already disconnected: a second request does nothing.
    h.disconnect(s2).await;
    assert_eq!(b.calls().iter().filter(|c| *c == "disconnect").count(), 1);
}

#[tokio::test(start_paused = true)]
async fn disconnect_waits_at_most_5_s() {
    let a = TestIface::new(1);
    a.s().connects.push_back(Ok(network(1, "Net")));
    a.s().disconnect_delay = Duration::from_secs(30);
    let h = harness(vec![a.clone()], vec![], no_latency());
    let s = h.connect(open_request("Net")).await.session_id;
    let start = Instant::now();
    h.disconnect(s).await;
    assert_eq!(start.elapsed(), Duration::from_secs(5));
}

// ---------------------------------------------------------------- notifications

#[tokio::test(start_paused = true)]
async fn signal_is_forwarded_only_for_the_guests_interface() {
    let a = TestIface::new(1);
    let b = TestIface::new(2);
    b.s().connects.push_back(Ok(network(2, "Net")));
    let mut h = harness(vec![a.clone(), b.clone()], vec![], no_latency());
    h.hub.publish(InterfaceEvent::SignalQuality {
        iface: b.id,
        percent: 80,
    });
    assert!(h.notes().await.is_empty(), "no guest connection yet");
    h.connect(psk_request("Net")).await;
    for (iface, percent) in [(a.id, 90), (b.id, 80), (b.id, 55), (b.id, 100), (b.id, 0)] {
        h.hub
            .publish(InterfaceEvent::SignalQuality { iface, percent });
    }
    assert_eq!(
        h.notes().await,
        [-60, -73, -50, -100]
            .into_iter()
            .map(|dbm| Message::NotifSignalQuality { dbm })
            .collect::<Vec<_>>()
    );
}

#[tokio::test(start_paused = true)]
async fn host_disconnect_of_the_guests_interface() {
    for notify in [false, true] {
        let a = TestIface::new(1);
        a.s().connects.push_back(Ok(network(1, "Net")));
        let mut h = harness(
            vec![a.clone()],
            vec![],
            HandlerSettings {
                notify_guest_on_host_disconnect: notify,
                ..no_latency()
            },
        );
        let s = h.connect(open_request("Net")).await.session_id;
        h.events().await;
        a.s().connected = None;
        h.hub.publish(InterfaceEvent::Disconnected { iface: a.id });
        let expected = if notify {
            vec![Message::NotifDisconnected { session_id: s }]
        } else {
            vec![]
        };
        assert_eq!(h.notes().await, expected);
        assert_eq!(
            h.events().await,
            vec![Ev::Event(ObserverEvent::HostDisconnected(a.id))]
        );
        // The guest's connection is gone: its disconnect does nothing.
        h.disconnect(s).await;
        assert!(!a.calls().contains(&"disconnect".to_string()));
        assert!(h.events().await.is_empty());
        // No more signal for it either.
        h.hub.publish(InterfaceEvent::SignalQuality {
            iface: a.id,
            percent: 50,
        });
        assert!(h.notes().await.is_empty());
    }
}

#[tokio::test(start_paused = true)]
async fn interfaces_arrive_and_leave() {
    let h = harness(vec![], vec![], no_latency());
    assert!(h.scan().await.bss.is_empty());
    let c = TestIface::new(3);
    c.s().connected = Some(network(3, "Cafe"));
    c.s().scan.bss = vec![scanned(3, "Cafe", 2_412_000, Security::OPEN)];
    h.hub.add(c.clone());
    // Announced twice: still one interface.
    h.hub.add(c.clone());
    let r = h.scan().await;
    assert_eq!(r.bss.len(), 1);
    assert_eq!(c.calls(), vec!["scan"]);
    h.hub.remove(c.id);
    assert!(h.scan().await.bss.is_empty());
    let events: Vec<Ev> = h
        .events()
        .await
        .into_iter()
        .filter(|e| {
            matches!(
                e,
                Ev::Event(ObserverEvent::HostConnected(_) | ObserverEvent::HostDisconnected(_))
            )
        })
        .collect();
    assert_eq!(
        events,
        vec![
            host_connected(c.id, "Cafe", AuthAlgorithm::Wpa2Psk),
            Ev::Event(ObserverEvent::HostDisconnected(c.id)),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn missed_events_re_read_the_interfaces() {
    let h = harness(vec![], vec![], no_latency());
    h.client.sync().await;
    let c = TestIface::new(3);
    c.s().scan.bss = vec![scanned(3, "Cafe", 2_412_000, Security::OPEN)];
    // The arrival is buried under more events than the channel holds.
    h.hub.add(c.clone());
    for _ in 0..1100 {
        h.hub.publish(InterfaceEvent::SignalQuality {
            iface: c.id,
            percent: 1,
        });
    }
    assert_eq!(h.scan().await.bss.len(), 1);
}

/// Interface 2, connected to the open network "Office" when the handler
/// starts.
fn on_office_at_start() -> Arc<TestIface> {
    let b = TestIface::new(2);
    b.s().connected = Some(ConnectedNetwork {
        ssid: ssid("Office"),
        bssid: mac(2),
        security: Security::OPEN,
    });
    b
}

#[tokio::test(start_paused = true)]
async fn host_connections_present_at_start_are_reported() {
    let a = TestIface::new(1);
    let b = on_office_at_start();
    let h = harness(vec![a, b.clone()], vec![], no_latency());
    assert_eq!(
        h.events().await,
        vec![host_connected(b.id, "Office", AuthAlgorithm::Open)]
    );
}

#[tokio::test(start_paused = true)]
async fn start_connections_are_reported_before_the_first_request() {
    let b = on_office_at_start();
    let h = harness(vec![b.clone()], vec![], no_latency());
    // At once: the handler's own task has not run yet.
    let reply = h.connect(open_request("Office")).await;
    assert_eq!(reply.result_code, STATUS_SUCCESS);
    let events = h.events().await;
    assert_eq!(
        events[..2],
        [
            host_connected(b.id, "Office", AuthAlgorithm::Open),
            Ev::Authorize(ConnectionKind::HostMirroring, "Office".into()),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_panicking_observer_is_contained() {
    let a = TestIface::new(1);
    a.s().connects.push_back(Ok(network(1, "Net")));
    let h = harness(vec![a.clone()], vec![], no_latency());
    *h.recorder.panic_on_authorize.lock().unwrap() = true;
    *h.recorder.panic_on_scan.lock().unwrap() = true;
    let c = h.connect(psk_request("Net")).await;
    assert_eq!(c.result_code, 1);
    assert!(
        a.calls().is_empty(),
        "a panicking authorization is a denial"
    );
    assert_eq!(
        h.events().await,
        vec![
            Ev::Authorize(ConnectionKind::GuestDirected, "Net".into()),
            completed(
                ConnectionKind::GuestDirected,
                ConnectOutcome::Denied,
                1,
                None,
                "Net",
                AuthAlgorithm::Wpa2Psk
            ),
        ]
    );
    // Still serving, and later events still reach the observer.
    let _ = h.scan().await;
    assert_eq!(
        h.events().await,
        vec![
            Ev::Event(ObserverEvent::GuestScanRequested),
            Ev::Event(ObserverEvent::GuestScanCompleted)
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_new_guest_connection_on_the_same_interface_is_not_a_loss() {
    let a = TestIface::new(1);
    a.s().connects.push_back(Ok(network(1, "One")));
    a.s().connects.push_back(Ok(network(2, "Two")));
    let mut h = harness(
        vec![a.clone()],
        vec![],
        HandlerSettings {
            notify_guest_on_host_disconnect: true,
            ..no_latency()
        },
    );
    assert_eq!(h.connect(open_request("One")).await.session_id, 1);
    assert_eq!(h.connect(open_request("Two")).await.session_id, 2);
    assert!(h.notes().await.is_empty());
    // The host moving the guest's interface elsewhere is a loss.
    h.hub.publish(InterfaceEvent::Connected {
        iface: a.id,
        network: network(3, "Three"),
    });
    assert_eq!(
        h.notes().await,
        vec![Message::NotifDisconnected { session_id: 2 }]
    );
}

#[tokio::test(start_paused = true)]
async fn status_follows_session_and_connection_before_the_reply() {
    let a = TestIface::new(1);
    a.s().connects.push_back(Ok(network(1, "Net")));
    let h = harness(vec![a.clone()], vec![("Fake", mac(9))], no_latency());
    assert_eq!(*h.status.borrow(), HandlerStatus::default());
    let s = h.connect(open_request("Net")).await.session_id;
    // Published before the reply left: no sync needed.
    assert_eq!(
        *h.status.borrow(),
        HandlerStatus {
            session_id: s,
            connection: Some(GuestLink {
                ssid: ssid("Net"),
                kind: ConnectionKind::GuestDirected,
                interface: a.id,
            }),
        }
    );
    h.disconnect(s).await;
    assert_eq!(h.status.borrow().connection, None);
    let s = h.connect(open_request("Fake")).await.session_id;
    assert_eq!(s, 2);
    let now = h.status.borrow().clone();
    assert_eq!(now.session_id, 2);
    assert_eq!(
        now.connection.map(|c| (c.ssid, c.kind)),
        Some((ssid("Fake"), ConnectionKind::HostMirroring))
    );
    // A failed connect still counts a session; the mirror stays.
    assert_eq!(h.connect(open_request("Nowhere")).await.result_code, 1);
    assert_eq!(h.status.borrow().session_id, 3);
    assert!(h.status.borrow().connection.is_some());
}

#[tokio::test(start_paused = true)]
async fn status_clears_when_the_host_drops_the_guests_network() {
    let a = TestIface::new(1);
    a.s().connects.push_back(Ok(network(1, "Net")));
    let h = harness(vec![a.clone()], vec![], no_latency());
    h.connect(open_request("Net")).await;
    assert!(h.status.borrow().connection.is_some());
    a.s().connected = None;
    h.hub.publish(InterfaceEvent::Disconnected { iface: a.id });
    h.client.sync().await;
    assert_eq!(h.status.borrow().connection, None);
    assert_eq!(h.status.borrow().session_id, 1);
}

#[tokio::test(start_paused = true)]
async fn a_connect_is_answered_within_the_guests_20_s_wait() {
    // Three interfaces that never connect: the first gets its 10 s, the
    // second what is left of the 18 s budget, the third is not tried, and
    // the guest hears back before its own 20 s run out.
    let ifaces: Vec<_> = (1..=3).map(TestIface::new).collect();
    for i in &ifaces {
        i.s().connect_delay = Duration::from_secs(60);
        i.s().connects.push_back(Ok(network(9, "Net")));
    }
    let h = harness(ifaces.clone(), vec![], no_latency());
    let start = Instant::now();
    let c = h.connect(psk_request("Net")).await;
    assert_eq!(start.elapsed(), CONNECT_BUDGET);
    assert_eq!(
        (c.result_code, c.session_id),
        (STATUS_UNSPECIFIED_FAILURE, 1)
    );
    assert_eq!(ifaces[0].calls().len(), 1);
    assert_eq!(ifaces[1].calls().len(), 1);
    assert!(ifaces[2].calls().is_empty(), "{:?}", ifaces[2].calls());
}

#[tokio::test(start_paused = true)]
async fn slow_connection_queries_cost_one_query_timeout_not_one_per_interface() {
    // Looking for a connection to mirror asks every interface at once.
    let a = TestIface::new(1);
    let b = TestIface::new(2);
    a.s().query_delay = Duration::from_secs(60);
    b.s().query_delay = Duration::from_secs(60);
    b.s().connects.push_back(Ok(network(2, "Net")));
    let h = harness(vec![a.clone(), b.clone()], vec![], no_latency());
    h.client.sync().await;
    let start = Instant::now();
    let c = h.connect(psk_request("Net")).await;
    // 5 s for the (concurrent) queries, then b connects at once.
    assert_eq!(start.elapsed(), Duration::from_secs(5));
    assert_eq!((c.result_code, c.bssid), (0, mac(2)));
}

#[tokio::test(start_paused = true)]
async fn leaving_the_old_network_during_a_connect_does_not_drop_the_guest() {
    // The interface is on "Home"; the guest directs it to "Net". Like
    // NetworkManager, it reports leaving "Home" while the connect runs; the
    // handler reads that only after answering, and must not take it for the
    // loss of the guest's new connection.
    let a = TestIface::new(1);
    a.s().connected = Some(network(1, "Home"));
    a.s().connects.push_back(Ok(network(4, "Net")));
    let mut h = harness(
        vec![a.clone()],
        vec![],
        HandlerSettings {
            notify_guest_on_host_disconnect: true,
            ..no_latency()
        },
    );
    a.s().publish_on_connect = Some(h.hub.clone());
    h.client.sync().await;
    let _ = h.events().await;
    let c = h.connect(psk_request("Net")).await;
    assert_eq!((c.result_code, c.session_id), (0, 1));
    h.client.sync().await;
    assert_eq!(
        h.notes().await,
        vec![],
        "no NOTIF_DISCONNECTED for a live connection"
    );
    let status = h.status.borrow().clone();
    assert_eq!(status.session_id, 1);
    assert!(
        status.connection.is_some(),
        "the guest's connection was forgotten"
    );
    // Signal quality of that interface still reaches the guest.
    h.hub.publish(InterfaceEvent::SignalQuality {
        iface: a.id,
        percent: 80,
    });
    assert_eq!(
        h.notes().await,
        vec![Message::NotifSignalQuality { dbm: -60 }]
    );
    // And a real host disconnect still counts.
    a.s().connected = None;
    h.hub.publish(InterfaceEvent::Disconnected { iface: a.id });
    assert_eq!(
        h.notes().await,
        vec![Message::NotifDisconnected { session_id: 1 }]
    );
}

#[tokio::test(start_paused = true)]
async fn the_reply_gate_stays_closed_until_the_reply_is_written() {
    let a = TestIface::new(1);
    let h = harness(vec![a.clone()], vec![], no_latency());
    // Open: nothing to wait for.
    assert!(timeout(
        Duration::from_millis(1),
        h.gate.wait_clear(Duration::from_secs(60))
    )
    .await
    .is_ok());
    // The transport holds the guard while it writes the reply; the
    // notification sender waits meanwhile, the handler does not.
    let (reply, guard) = h
        .client
        .request_until_written(Request::Scan(ScanRequest::default()), Instant::now())
        .await;
    assert!(matches!(reply, Message::ScanResponse(_)));
    assert!(timeout(Duration::from_secs(1), h.client.sync())
        .await
        .is_ok());
    assert!(timeout(
        Duration::from_secs(1),
        h.gate.wait_clear(Duration::from_secs(60))
    )
    .await
    .is_err());
    drop(guard);
    assert!(timeout(
        Duration::from_millis(1),
        h.gate.wait_clear(Duration::from_secs(60))
    )
    .await
    .is_ok());
    // The plain request API clears at once.
    h.scan().await;
    assert!(timeout(
        Duration::from_millis(1),
        h.gate.wait_clear(Duration::from_secs(60))
    )
    .await
    .is_ok());
}

#[tokio::test(start_paused = true)]
async fn removing_the_last_scanning_interface_after_the_guests_timer_sends_nothing() {
    let a = TestIface::new(1);
    a.s().scan = ScanResult {
        bss: vec![],
        complete: false,
    };
    let mut h = harness(vec![a.clone()], vec![], no_latency());
    assert!(!h.scan().await.scan_complete);
    tokio::time::sleep(Duration::from_secs(11)).await;
    h.hub.remove(a.id);
    assert_eq!(h.notes().await, vec![], "the guest's scan is long over");
}

// ------------------------------------------ connecting again to its own network

#[tokio::test(start_paused = true)]
async fn connecting_again_to_its_own_directed_network_keeps_it_directed() {
    let a = TestIface::new(1);
    a.s().connects.push_back(Ok(network(1, "Net")));
    let h = harness(vec![a.clone()], vec![], no_latency());
    let first = h.connect(psk_request("Net")).await;
    assert_eq!(first.result_code, 0);
    h.events().await;

    // Same network, same key: kept as is, not mirrored, a new session.
    let again = h.connect(psk_request("Net")).await;
    assert_eq!((again.result_code, again.bssid), (0, mac(1)));
    assert!(again.session_id > first.session_id);
    assert_eq!(a.calls(), vec!["connect Net wpa2-psk/ccmp key=32"]);
    assert_eq!(
        h.events().await,
        vec![
            Ev::Authorize(ConnectionKind::GuestDirected, "Net".into()),
            completed(
                ConnectionKind::GuestDirected,
                ConnectOutcome::Succeeded,
                0,
                Some(a.id),
                "Net",
                AuthAlgorithm::Wpa2Psk
            ),
        ]
    );
    let link = h.status.borrow().connection.clone().unwrap();
    assert_eq!(link.kind, ConnectionKind::GuestDirected);
    // The old session's disconnect is stale; the new one makes the host leave.
    h.disconnect(first.session_id).await;
    assert!(a.s().connected.is_some());
    h.disconnect(again.session_id).await;
    assert_eq!(a.calls().last().unwrap(), "disconnect");
    assert!(a.s().connected.is_none());
}

#[tokio::test(start_paused = true)]
async fn connecting_again_with_another_key_leaves_the_old_connection_first() {
    let a = TestIface::new(1);
    a.s().connects.push_back(Ok(network(1, "Net")));
    a.s().connects.push_back(Ok(network(1, "Net")));
    let h = harness(vec![a.clone()], vec![], no_latency());
    assert_eq!(h.connect(psk_request("Net")).await.result_code, 0);
    let other_key = ConnectRequest {
        key: Key::new(vec![0x33; 32]),
        ..psk_request("Net")
    };
    let r = h.connect(other_key).await;
    assert_eq!(r.result_code, 0);
    assert_eq!(
        a.calls(),
        vec![
            "connect Net wpa2-psk/ccmp key=32",
            "disconnect",
            "connect Net wpa2-psk/ccmp key=32"
        ]
    );
    let link = h.status.borrow().connection.clone().unwrap();
    assert_eq!(link.kind, ConnectionKind::GuestDirected);
}

#[tokio::test(start_paused = true)]
async fn a_denied_connect_again_leaves_the_connection() {
    let a = TestIface::new(1);
    a.s().connects.push_back(Ok(network(1, "Net")));
    let h = harness(vec![a.clone()], vec![], no_latency());
    assert_eq!(h.connect(psk_request("Net")).await.result_code, 0);
    *h.recorder.answer.lock().unwrap() = Authorization::Deny;
    assert_eq!(h.connect(psk_request("Net")).await.result_code, 1);
    assert_eq!(a.calls().last().unwrap(), "disconnect");
    assert!(h.status.borrow().connection.is_none());
}

// ---------------------------------------------------------------- how inputs run

/// (finished where they arrived, needed a task of their own) so far.
fn runs(client: &HandlerClient) -> (usize, usize) {
    let shared = &client.shared;
    (
        shared.inline_runs.load(Ordering::Relaxed) + shared.at_once_runs.load(Ordering::Relaxed),
        shared.detached_runs.load(Ordering::Relaxed),
    )
}

/// One interface, the guest connected through it to "Net", every input
/// applied; and the session id.
async fn guest_on_net() -> (Arc<TestIface>, Harness, u64) {
    let a = TestIface::new(1);
    a.s().connects.push_back(Ok(network(1, "Net")));
    let h = harness(vec![a.clone()], vec![], no_latency());
    let session = h.connect(open_request("Net")).await.session_id;
    h.client.sync().await;
    (a, h, session)
}

#[tokio::test(start_paused = true)]
async fn host_events_published_before_a_request_are_applied_before_it() {
    let (a, h, session) = guest_on_net().await;

    // Nothing yields between the events and the requests: the handler's
    // own task has not seen them when each request starts.
    let c = TestIface::new(3);
    c.s().scan.bss = vec![scanned(3, "Cafe", 2_412_000, Security::OPEN)];
    h.hub.add(c.clone());
    assert_eq!(h.scan().await.bss.len(), 1, "the arrival comes first");

    // The host dropped the guest's network: the guest's disconnect that
    // follows has nothing left to disconnect.
    a.s().connected = None;
    h.hub.publish(InterfaceEvent::Disconnected { iface: a.id });
    h.disconnect(session).await;
    assert!(!a.calls().contains(&"disconnect".to_string()));
    assert_eq!(h.status.borrow().connection, None);
}

#[tokio::test(start_paused = true)]
async fn a_disconnect_answered_at_once_still_comes_after_pending_host_events() {
    let (a, h, session) = guest_on_net().await;

    let at_once = || h.client.shared.at_once_runs.load(Ordering::Relaxed);

    // Nothing pending: a stale disconnect is answered at once.
    h.disconnect(session - 1).await;
    assert_eq!(at_once(), 1);
    assert!(h.status.borrow().connection.is_some());

    // A host event pending: the same disconnect goes the usual way and
    // applies it before its reply (nothing yields in between, so the
    // handler's own task has not).
    a.s().connected = None;
    h.hub.publish(InterfaceEvent::Disconnected { iface: a.id });
    h.disconnect(session - 1).await;
    assert_eq!(at_once(), 1);
    assert_eq!(h.status.borrow().connection, None);
    assert!(!a.calls().contains(&"disconnect".to_string()));

    // Nothing pending again: at once.
    h.disconnect(session - 1).await;
    assert_eq!(at_once(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_first_disconnect_is_not_answered_before_start_connections_are_reported() {
    let b = on_office_at_start();
    let h = harness(vec![b.clone()], vec![], no_latency());
    // At once: the handler's own task has not run yet.
    h.disconnect(0).await;
    assert!(h.client.shared.core.try_lock().unwrap().started);
    assert_eq!(h.client.shared.at_once_runs.load(Ordering::Relaxed), 0);
}

#[tokio::test(start_paused = true)]
async fn a_disconnect_after_an_input_cut_off_half_way_is_answered_invalid() {
    let (_a, h, session) = guest_on_net().await;
    h.client.shared.core.try_lock().unwrap().interrupted = true;
    let reply = h
        .request(Request::Disconnect(DisconnectRequest {
            session_id: session - 1,
        }))
        .await;
    assert_eq!(reply, Message::Invalid);
}

#[tokio::test(start_paused = true)]
async fn a_request_whose_caller_goes_away_still_completes() {
    let a = TestIface::new(1);
    let joined = Arc::new(Notify::new());
    a.s().connect_gate = Some(joined.clone());
    a.s().connects.push_back(Ok(network(1, "Net")));
    let h = harness(vec![a.clone()], vec![], no_latency());
    h.client.sync().await;

    let asked = h
        .client
        .request(Request::Connect(open_request("Net")), Instant::now());
    assert!(timeout(Duration::from_secs(1), asked).await.is_err());
    // The caller is gone; the interface is still joining.
    assert_eq!(a.s().in_call, 1);
    joined.notify_one();
    h.client.sync().await;

    let status = h.status.borrow().clone();
    assert_eq!(status.session_id, 1);
    assert_eq!(
        status.connection,
        Some(GuestLink {
            ssid: ssid("Net"),
            kind: ConnectionKind::GuestDirected,
            interface: a.id,
        })
    );
    assert_eq!(
        h.events().await,
        vec![
            Ev::Authorize(ConnectionKind::GuestDirected, "Net".into()),
            host_connected(a.id, "Net", AuthAlgorithm::Wpa2Psk),
            completed(
                ConnectionKind::GuestDirected,
                ConnectOutcome::Succeeded,
                STATUS_SUCCESS,
                Some(a.id),
                "Net",
                AuthAlgorithm::Open,
            ),
        ]
    );
    // And the next request finds the state whole.
    assert_eq!(h.connect(open_request("Net")).await.session_id, 2);
}

#[tokio::test(start_paused = true)]
async fn requests_from_several_callers_are_serialized() {
    let a = TestIface::new(1);
    {
        let mut s = a.s();
        s.connects.push_back(Ok(network(1, "Net")));
        s.connect_delay = Duration::from_secs(2);
        s.scan_delay = Duration::from_secs(1);
        s.disconnect_delay = Duration::from_secs(1);
    }
    let h = harness(vec![a.clone()], vec![], no_latency());
    h.client.sync().await;
    let start = Instant::now();
    let (connected, scanned, ()) =
        tokio::join!(h.connect(open_request("Net")), h.scan(), h.disconnect(1),);
    assert_eq!(connected.session_id, 1);
    assert!(scanned.scan_complete);
    // One after the other, in the order they came.
    assert_eq!(a.s().most_in_call, 1);
    assert_eq!(start.elapsed(), Duration::from_secs(4));
    assert_eq!(
        a.calls(),
        vec!["connect Net open key=0", "scan", "disconnect"]
    );

    // The check itself: two handlers over one interface overlap.
    let b = TestIface::new(2);
    b.s().scan_delay = Duration::from_secs(1);
    let one = harness(vec![b.clone()], vec![], no_latency());
    let two = harness(vec![b.clone()], vec![], no_latency());
    tokio::join!(one.scan(), two.scan());
    assert_eq!(b.s().most_in_call, 2);
}

/// A scan that finds `networks` BSSs, a connect to the open network `ssid`
/// (session 1), and its disconnect, each answered as it should be.
async fn scan_connect_disconnect(client: &HandlerClient, networks: usize, ssid: &str) {
    let scanned = client
        .request(Request::Scan(ScanRequest::default()), Instant::now())
        .await;
    assert!(matches!(scanned, Message::ScanResponse(s) if s.bss.len() == networks));
    let connected = client
        .request(Request::Connect(open_request(ssid)), Instant::now())
        .await;
    assert!(
        matches!(connected, Message::ConnectResponse(c) if c.result_code == 0 && c.session_id == 1)
    );
    let disconnect = Request::Disconnect(DisconnectRequest { session_id: 1 });
    assert_eq!(
        client.request(disconnect, Instant::now()).await,
        Message::DisconnectResponse
    );
}

#[tokio::test(start_paused = true)]
async fn common_requests_finish_where_they_arrive() {
    let a = TestIface::new(1);
    a.s().connects.push_back(Ok(network(1, "Net")));
    a.s().scan.bss = vec![scanned(1, "Net", 2_412_000, Security::OPEN)];
    // No observer: nothing to wait for on the blocking pool.
    let (tx, _notes) = mpsc::channel(8);
    let hub = Arc::new(EventHub::new());
    hub.add(a.clone());
    let handle = spawn(hub, None, ObserverQueue::default(), tx, no_latency());
    let client = handle.client;
    client.sync().await;
    let before = runs(&client);
    let now = Instant::now;
    let disconnect = |session_id| Request::Disconnect(DisconnectRequest { session_id });
    assert_eq!(
        client.request(disconnect(0), now()).await,
        Message::DisconnectResponse
    );
    scan_connect_disconnect(&client, 1, "Net").await;
    client.sync().await;
    let after = runs(&client);
    assert_eq!((after.0 - before.0, after.1 - before.1), (5, 0));

    // The simulated backend too.
    let (tx, _notes) = mpsc::channel(8);
    let handle = spawn(
        crate::wifi::simulated::SimulatedWifi::reference(),
        None,
        ObserverQueue::default(),
        tx,
        no_latency(),
    );
    let client = handle.client;
    scan_connect_disconnect(&client, 3, "FakeOpen").await;
    assert_eq!(runs(&client), (3, 0));

    // A scan still waiting out its minimum latency moves to a task of its
    // own, and is answered all the same.
    let (tx, _notes) = mpsc::channel(8);
    let handle = spawn(
        crate::wifi::simulated::SimulatedWifi::reference(),
        None,
        ObserverQueue::default(),
        tx,
        HandlerSettings::default(),
    );
    let scanned = handle
        .client
        .request(Request::Scan(ScanRequest::default()), now())
        .await;
    assert!(matches!(scanned, Message::ScanResponse(_)));
    assert_eq!(runs(&handle.client), (0, 1));
}

#[tokio::test(start_paused = true)]
async fn the_handler_ends_with_its_clients_and_a_stopped_one_answers_invalid() {
    let a = TestIface::new(1);
    let (tx, mut notes) = mpsc::channel(8);
    let hub = Arc::new(EventHub::new());
    hub.add(a.clone());
    let handle = spawn(
        hub.clone(),
        None,
        ObserverQueue::default(),
        tx,
        no_latency(),
    );
    let other = handle.client.clone();
    drop(handle.client);
    assert!(!handle.task.is_finished());
    drop(other);
    assert!(timeout(Duration::from_secs(1), handle.task).await.is_ok());
    // The state went with it: the notification channel is closed.
    assert_eq!(notes.recv().await, None);

    let (tx, _notes) = mpsc::channel(8);
    let handle = spawn(hub, None, ObserverQueue::default(), tx, no_latency());
    handle.client.sync().await;
    handle.task.abort();
    assert!(handle.task.await.is_err());
    assert_eq!(
        handle
            .client
            .request(Request::Scan(ScanRequest::default()), Instant::now())
            .await,
        Message::Invalid
    );
}
