//! AF_VSOCK (Linux hosts running QEMU/KVM with vhost-vsock, crosvm; and the
//! guest side of any of them).
//!
//! Host: one listener per request port on (any local CID, port), shared by
//! every guest on that port: the driver's ports are fixed, so every VM of a
//! host connects to the same port. Each accepted connection is routed by its
//! peer CID to that guest's service ([`CidRouter`]); a CID no guest has is
//! closed, logged (at most once per [`UNKNOWN_CID_LOG_INTERVAL`]) and
//! counted ([`super::unknown_peer_connections`]). Adding or removing a
//! guest never rebinds the listener; it is closed when the last guest on
//! its port goes. Notifications connect to (guest CID, notification port).
//!
//! Guest: requests connect to (host CID, request port); notifications are
//! accepted on (any CID, notification port) from the host CID alone.
//!
//! Streams are the bare sockets (vsock has no Nagle-style delay), so a
//! message written on a fresh notification connection leaves at once.

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::sync::mpsc;
use tokio_vsock::{VsockAddr, VsockListener, VsockStream, VMADDR_CID_ANY};

use super::{
    BoxStream, HostEndpoint, NotificationConnector, NotificationListener, Peer, RequestConnector,
    RequestListener, TransportError,
};

/// CID of the hypervisor.
pub const CID_HYPERVISOR: u32 = 0;
/// CID for local (loopback) communication, `vsock_loopback`.
pub const CID_LOCAL: u32 = 1;
/// CID of the host.
pub const CID_HOST: u32 = 2;
/// Wildcard CID (`VMADDR_CID_ANY`).
pub const CID_ANY: u32 = u32::MAX;
/// Wildcard port (`VMADDR_PORT_ANY`): bind to any free port.
pub const PORT_ANY: u32 = u32::MAX;

/// Whether a connection from `peer_cid` may be served by a listener that
/// expects `expected_cid`.
pub fn peer_allowed(expected_cid: u32, peer_cid: u32) -> bool {
    peer_cid == expected_cid
}

/// Checks the CID given to the host service: the guest's CID. 1 (loopback)
/// is allowed for tests on one machine.
pub fn check_guest_cid(cid: u32) -> Result<(), TransportError> {
    let why = match cid {
        CID_HYPERVISOR => "is the hypervisor's",
        CID_HOST => "is the host's own",
        CID_ANY => "is the wildcard (VMADDR_CID_ANY)",
        _ => return Ok(()),
    };
    Err(TransportError::Invalid(format!(
        "vsock CID {cid} {why}, not a guest's: give the guest's CID (3 or more; 1 for loopback)"
    )))
}

/// Checks the CID given to the guest client: the host's CID (2, or 1 for
/// loopback).
pub fn check_host_cid(cid: u32) -> Result<(), TransportError> {
    match cid {
        CID_HYPERVISOR | CID_ANY => Err(TransportError::Invalid(format!(
            "vsock CID {cid} cannot be the host's: use 2 (or 1 for loopback)"
        ))),
        _ => Ok(()),
    }
}

/// The address a listener binds: any local CID, `port`.
pub fn listen_address(port: u32) -> VsockAddr {
    VsockAddr::new(VMADDR_CID_ANY, port)
}

/// The address a connector reaches.
pub fn peer_address(cid: u32, port: u32) -> VsockAddr {
    VsockAddr::new(cid, port)
}

/// An address for logs.
pub fn describe(address: &VsockAddr) -> String {
    if address.cid() == CID_ANY {
        format!("vsock any-cid:{}", address.port())
    } else {
        format!("vsock {}:{}", address.cid(), address.port())
    }
}

fn bind(port: u32) -> Result<VsockListener, TransportError> {
    let address = listen_address(port);
    VsockListener::bind(address).map_err(|source| {
        let hint = match source.raw_os_error() {
            Some(libc::EAFNOSUPPORT) | Some(libc::ENODEV) => {
                " (AF_VSOCK is unavailable: on a host, load the vhost_vsock module)"
            }
            _ => "",
        };
        TransportError::Bind {
            address: format!("{}{hint}", describe(&address)),
            source,
        }
    })
}

/// A listener that serves one peer CID, closing others.
struct FilteredListener {
    listener: VsockListener,
    peer_cid: u32,
    role: &'static str,
}

impl FilteredListener {
    async fn accept(&self) -> io::Result<(VsockStream, VsockAddr)> {
        loop {
            let (stream, peer) = self.listener.accept().await?;
            if peer_allowed(self.peer_cid, peer.cid()) {
                return Ok((stream, peer));
            }
            tracing::warn!(
                peer = %describe(&peer),
                expected_cid = self.peer_cid,
                "closing a {} connection from an unexpected vsock CID",
                self.role
            );
            drop(stream);
        }
    }

    fn description(&self) -> String {
        match self.listener.local_addr() {
            Ok(a) => format!("{} (from CID {})", describe(&a), self.peer_cid),
            Err(_) => "vsock".to_string(),
        }
    }

    fn port(&self) -> Option<u32> {
        self.listener.local_addr().ok().map(|a| a.port())
    }
}

// ---------------------------------------------------------------- host side

/// How often a connection from a CID no guest has is logged (the rest are
/// counted, and the count is in the next line): a VM that retries in a
/// loop must not flood the journal.
pub const UNKNOWN_CID_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Accepted connections waiting for their guest's accept loop; past it,
/// further connections for that guest are closed.
const ROUTE_QUEUE: usize = 64;

/// Where a [`CidRouter`] gets its connections: the vsock listener, or a
/// test double.
#[async_trait]
pub trait PeerAcceptor: Send + Sync + 'static {
    /// The next connection, its peer's CID and a description of the peer
    /// for logs.
    async fn accept(&self) -> io::Result<(BoxStream, u32, String)>;
    /// Where it listens, for logs.
    fn description(&self) -> String;
    /// The port bound.
    fn port(&self) -> Option<u32>;
}

struct VsockAcceptor(VsockListener);

#[async_trait]
impl PeerAcceptor for VsockAcceptor {
    async fn accept(&self) -> io::Result<(BoxStream, u32, String)> {
        let (stream, peer) = self.0.accept().await?;
        Ok((Box::new(stream), peer.cid(), describe(&peer)))
    }

    fn description(&self) -> String {
        match self.0.local_addr() {
            Ok(a) => describe(&a),
            Err(_) => "vsock".to_string(),
        }
    }

    fn port(&self) -> Option<u32> {
        self.0.local_addr().ok().map(|a| a.port())
    }
}

/// Stands in for a closed acceptor while a router is dropped (see its
/// `Drop`).
struct Closed;

#[async_trait]
impl PeerAcceptor for Closed {
    async fn accept(&self) -> io::Result<(BoxStream, u32, String)> {
        Err(io::Error::new(
            io::ErrorKind::NotConnected,
            "listener closed",
        ))
    }
    fn description(&self) -> String {
        "vsock (closed)".to_string()
    }
    fn port(&self) -> Option<u32> {
        None
    }
}

type Routed = (BoxStream, String);

/// One listener shared by the guests on its port, routing each accepted
/// connection by its peer CID.
///
/// There is no accept task of its own: whichever guest's accept loop asks
/// first accepts for everyone and forwards connections that are not its own
/// to their guest's queue. So the listener lives exactly as long as its
/// [`CidRoute`]s, and is closed the moment the last one is dropped.
pub struct CidRouter {
    acceptor: Box<dyn PeerAcceptor>,
    /// Held by the route that is accepting for everyone.
    accepting: tokio::sync::Mutex<()>,
    routes: std::sync::Mutex<HashMap<u32, mpsc::Sender<Routed>>>,
    unknown: AtomicU64,
    unknown_logged: std::sync::Mutex<Option<Instant>>,
    /// The shared-listener table's key, when it is in that table.
    shared_port: Option<u32>,
}

/// The vsock listeners in use, by request port.
static SHARED: LazyLock<std::sync::Mutex<HashMap<u32, Weak<CidRouter>>>> =
    LazyLock::new(Default::default);

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic elsewhere while holding it leaves plain data: carry on.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl CidRouter {
    /// A router over `acceptor` (not shared: for a listener of its own, or
    /// a test double).
    pub fn new(acceptor: Box<dyn PeerAcceptor>) -> Arc<CidRouter> {
        Arc::new(CidRouter::with(acceptor, None))
    }

    fn with(acceptor: Box<dyn PeerAcceptor>, shared_port: Option<u32>) -> CidRouter {
        CidRouter {
            acceptor,
            accepting: tokio::sync::Mutex::new(()),
            routes: std::sync::Mutex::new(HashMap::new()),
            unknown: AtomicU64::new(0),
            unknown_logged: std::sync::Mutex::new(None),
            shared_port,
        }
    }

    /// The router listening on `port` for every guest, bound on first use.
    pub fn shared(port: u32) -> Result<Arc<CidRouter>, TransportError> {
        if port == PORT_ANY {
            // Any free port: a listener of its own, nobody else can share it.
            return Ok(CidRouter::new(Box::new(VsockAcceptor(bind(port)?))));
        }
        let mut table = lock(&SHARED);
        // A router whose last guest is going away right now is still in
        // the table until its drop has closed the listener: wait for that
        // (it takes microseconds) rather than fail to bind the port.
        for _ in 0..1000 {
            match table.get(&port) {
                Some(weak) => match weak.upgrade() {
                    Some(router) => return Ok(router),
                    None => {
                        drop(table);
                        std::thread::sleep(Duration::from_millis(1));
                        table = lock(&SHARED);
                    }
                },
                None => break,
            }
        }
        let listener = bind(port)?;
        tracing::info!("vsock listener on {}", describe(&listen_address(port)));
        let router = Arc::new(CidRouter::with(
            Box::new(VsockAcceptor(listener)),
            Some(port),
        ));
        table.insert(port, Arc::downgrade(&router));
        Ok(router)
    }

    /// Serves `cid` through this router. A CID already served here is
    /// refused (two guests cannot be one VM).
    pub fn route(self: &Arc<Self>, cid: u32) -> Result<CidRoute, TransportError> {
        let mut routes = lock(&self.routes);
        if routes.contains_key(&cid) {
            return Err(TransportError::Bind {
                address: format!("{} (from CID {cid})", self.acceptor.description()),
                source: io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!("another guest is already served for vsock CID {cid} on this port"),
                ),
            });
        }
        let (tx, rx) = mpsc::channel(ROUTE_QUEUE);
        routes.insert(cid, tx);
        Ok(CidRoute {
            router: self.clone(),
            cid,
            incoming: tokio::sync::Mutex::new(rx),
        })
    }

    /// The CIDs served, sorted.
    pub fn cids(&self) -> Vec<u32> {
        let mut cids: Vec<u32> = lock(&self.routes).keys().copied().collect();
        cids.sort_unstable();
        cids
    }

    /// Connections closed because no guest has their CID.
    pub fn unknown_peer_connections(&self) -> u64 {
        self.unknown.load(Ordering::Relaxed)
    }

    /// Accepts one connection: returns it if it is `own`'s, forwards it to
    /// its guest otherwise, or closes it.
    async fn accept_for(&self, own: u32) -> io::Result<Option<Routed>> {
        let (stream, cid, peer) = self.acceptor.accept().await?;
        if cid == own {
            return Ok(Some((stream, peer)));
        }
        let target = lock(&self.routes).get(&cid).cloned();
        match target {
            Some(tx) => {
                if tx.try_send((stream, peer)).is_err() {
                    tracing::warn!(
                        cid,
                        "closing a vsock connection: {ROUTE_QUEUE} are already waiting for that guest"
                    );
                }
            }
            None => self.unknown_peer(&peer),
        }
        Ok(None)
    }

    fn unknown_peer(&self, peer: &str) {
        let total = self.unknown.fetch_add(1, Ordering::Relaxed) + 1;
        super::count_unknown_peer();
        let mut logged = lock(&self.unknown_logged);
        let due = logged.is_none_or(|at| at.elapsed() >= UNKNOWN_CID_LOG_INTERVAL);
        if due {
            *logged = Some(Instant::now());
            tracing::warn!(
                %peer,
                unknown_total = total,
                served_cids = ?self.cids(),
                "closing a vsock connection from a CID no guest is configured for"
            );
        }
    }
}

impl Drop for CidRouter {
    fn drop(&mut self) {
        // Close the listener while holding the table, so a guest added at
        // this moment binds after the port is free rather than finding it
        // still in use.
        let Some(port) = self.shared_port else {
            return;
        };
        let mut table = lock(&SHARED);
        drop(std::mem::replace(&mut self.acceptor, Box::new(Closed)));
        if table.get(&port).is_some_and(|w| w.strong_count() == 0) {
            table.remove(&port);
        }
        tracing::info!("vsock listener on port {port} closed: no guest left on it");
    }
}

/// One guest's share of a [`CidRouter`]: its request listener.
pub struct CidRoute {
    router: Arc<CidRouter>,
    cid: u32,
    incoming: tokio::sync::Mutex<mpsc::Receiver<Routed>>,
}

impl Drop for CidRoute {
    fn drop(&mut self) {
        lock(&self.router.routes).remove(&self.cid);
    }
}

#[async_trait]
impl RequestListener for CidRoute {
    async fn accept(&self) -> io::Result<(BoxStream, Peer)> {
        let mut incoming = self.incoming.lock().await;
        loop {
            tokio::select! {
                biased;
                routed = incoming.recv() => match routed {
                    Some((stream, peer)) => return Ok((stream, Peer::Described(peer))),
                    // The sender lives in the router's table until this
                    // route is dropped.
                    None => return Err(io::Error::other("vsock route closed")),
                },
                _turn = self.router.accepting.lock() => {
                    // While this route accepts, nobody else forwards, so
                    // nothing new can arrive on `incoming` meanwhile.
                    if let Some((stream, peer)) = self.router.accept_for(self.cid).await? {
                        return Ok((stream, Peer::Described(peer)));
                    }
                }
            }
        }
    }

    fn local_description(&self) -> String {
        format!(
            "{} (from CID {})",
            self.router.acceptor.description(),
            self.cid
        )
    }

    fn local_port(&self) -> Option<u32> {
        self.router.acceptor.port()
    }
}

/// Host end: accept requests from `guest_cid` on `request_port` (through
/// the listener every guest on that port shares), notify it on
/// `notification_port`.
pub async fn bind_host(
    guest_cid: u32,
    request_port: u32,
    notification_port: u32,
) -> Result<HostEndpoint, TransportError> {
    check_guest_cid(guest_cid)?;
    let route = CidRouter::shared(request_port)?.route(guest_cid)?;
    Ok(HostEndpoint {
        listener: Box::new(route),
        notifier: Arc::new(VsockConnector {
            address: peer_address(guest_cid, notification_port),
        }),
    })
}

/// Connects to a fixed vsock address: the host's notification connector and
/// the guest's request connector.
pub struct VsockConnector {
    address: VsockAddr,
}

impl VsockConnector {
    /// Connects to `port` of the VM (or host) with context id `cid`.
    pub fn new(cid: u32, port: u32) -> VsockConnector {
        VsockConnector {
            address: peer_address(cid, port),
        }
    }

    async fn open(&self) -> io::Result<BoxStream> {
        let stream = VsockStream::connect(self.address).await.map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot connect to {}: {e}", describe(&self.address)),
            )
        })?;
        Ok(Box::new(stream))
    }
}

#[async_trait]
impl NotificationConnector for VsockConnector {
    /// Returns once the connection is established; the stream is the bare
    /// socket.
    async fn connect(&self) -> io::Result<BoxStream> {
        self.open().await
    }

    fn describe(&self) -> String {
        describe(&self.address)
    }
}

#[async_trait]
impl RequestConnector for VsockConnector {
    async fn connect(&self) -> io::Result<BoxStream> {
        self.open().await
    }

    fn describe(&self) -> String {
        describe(&self.address)
    }
}

// --------------------------------------------------------------- guest side

/// Guest end: requests go to (host_cid, request_port).
pub fn guest_connector(
    host_cid: u32,
    request_port: u32,
) -> Result<Arc<dyn RequestConnector>, TransportError> {
    check_host_cid(host_cid)?;
    Ok(Arc::new(VsockConnector::new(host_cid, request_port)))
}

/// Guest end: accepts the host's notification connections on
/// `notification_port`, from `host_cid` only.
pub async fn bind_guest_notifications(
    host_cid: u32,
    notification_port: u32,
) -> Result<Box<dyn NotificationListener>, TransportError> {
    check_host_cid(host_cid)?;
    let listener = bind(notification_port)?;
    Ok(Box::new(VsockNotificationListener(FilteredListener {
        listener,
        peer_cid: host_cid,
        role: "notification",
    })))
}

struct VsockNotificationListener(FilteredListener);

#[async_trait]
impl NotificationListener for VsockNotificationListener {
    async fn accept(&self) -> io::Result<BoxStream> {
        let (stream, _) = self.0.accept().await?;
        Ok(Box::new(stream))
    }

    fn local_description(&self) -> String {
        self.0.description()
    }

    fn local_port(&self) -> Option<u32> {
        self.0.port()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

    /// Stands in for the vsock listener: connections arrive with the peer
    /// CID the test gives them.
    struct FakeAcceptor(tokio::sync::Mutex<mpsc::Receiver<(DuplexStream, u32)>>);

    #[async_trait]
    impl PeerAcceptor for FakeAcceptor {
        async fn accept(&self) -> io::Result<(BoxStream, u32, String)> {
            match self.0.lock().await.recv().await {
                Some((stream, cid)) => Ok((Box::new(stream), cid, format!("vsock {cid}:1234"))),
                None => std::future::pending().await,
            }
        }
        fn description(&self) -> String {
            "fake any-cid:12345".into()
        }
        fn port(&self) -> Option<u32> {
            Some(12345)
        }
    }

    fn fake_router() -> (Arc<CidRouter>, mpsc::Sender<(DuplexStream, u32)>) {
        let (tx, rx) = mpsc::channel(16);
        let router = CidRouter::new(Box::new(FakeAcceptor(tokio::sync::Mutex::new(rx))));
        (router, tx)
    }

    /// A connection "from" `cid` carrying `tag`; returns the guest's end.
    async fn connect(tx: &mpsc::Sender<(DuplexStream, u32)>, cid: u32, tag: u8) -> DuplexStream {
        let (mut guest, host) = tokio::io::duplex(64);
        guest.write_all(&[tag]).await.unwrap();
        tx.send((host, cid)).await.unwrap();
        guest
    }

    async fn tag_of(route: &CidRoute) -> (u8, String) {
        let (mut stream, peer) = tokio::time::timeout(Duration::from_secs(5), route.accept())
            .await
            .expect("a connection for this route")
            .unwrap();
        let mut tag = [0u8];
        stream.read_exact(&mut tag).await.unwrap();
        (tag[0], peer.to_string())
    }

    #[tokio::test]
    async fn connections_go_to_their_cids_guest_and_unknown_cids_are_closed() {
        let (router, tx) = fake_router();
        let three = router.route(3).unwrap();
        let seven = router.route(7).unwrap();
        assert_eq!(router.cids(), [3, 7]);
        assert_eq!(three.local_description(), "fake any-cid:12345 (from CID 3)");

        // Arrive in an order that makes the route accepting first forward
        // the others': 7's, an unknown 9's, then 3's.
        let _g7 = connect(&tx, 7, 70).await;
        let mut g9 = connect(&tx, 9, 90).await;
        let _g3 = connect(&tx, 3, 30).await;
        assert_eq!(tag_of(&three).await, (30, "vsock 3:1234".into()));
        assert_eq!(tag_of(&seven).await, (70, "vsock 7:1234".into()));
        // The unknown CID's connection was closed: its guest reads EOF.
        let mut rest = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), g9.read_to_end(&mut rest))
            .await
            .unwrap()
            .unwrap();
        assert!(rest.is_empty());
        assert_eq!(router.unknown_peer_connections(), 1);

        // Each route also accepts for itself, in either order.
        let _a = connect(&tx, 3, 31).await;
        let _b = connect(&tx, 7, 71).await;
        assert_eq!(tag_of(&seven).await.0, 71);
        assert_eq!(tag_of(&three).await.0, 31);
    }

    #[tokio::test]
    async fn one_cid_per_router_and_removal_frees_it_without_touching_others() {
        let (router, tx) = fake_router();
        let three = router.route(3).unwrap();
        let err = router.route(3).err().unwrap();
        assert!(err.to_string().contains("CID 3"), "{err}");
        let seven = router.route(7).unwrap();
        drop(three);
        assert_eq!(router.cids(), [7]);
        // 3 is unknown now: closed and counted; 7 keeps being served.
        let _g3 = connect(&tx, 3, 30).await;
        let _g7 = connect(&tx, 7, 70).await;
        assert_eq!(tag_of(&seven).await.0, 70);
        assert_eq!(router.unknown_peer_connections(), 1);
        let three = router.route(3).unwrap();
        let _g3 = connect(&tx, 3, 32).await;
        assert_eq!(tag_of(&three).await.0, 32);
    }

    #[tokio::test]
    async fn a_cancelled_accept_hands_accepting_over_to_another_guest() {
        let (router, tx) = fake_router();
        let three = router.route(3).unwrap();
        let seven = router.route(7).unwrap();
        // 3's accept loop takes the turn, then is stopped mid-accept.
        let cancelled = tokio::time::timeout(Duration::from_millis(50), three.accept()).await;
        assert!(cancelled.is_err());
        drop(three);
        let _g7 = connect(&tx, 7, 70).await;
        assert_eq!(tag_of(&seven).await.0, 70);
    }

    /// The real listener: guests on one port share it, it is closed when
    /// the last one goes, and a CID is served once. This machine may have
    /// no AF_VSOCK at all: then it says so and checks nothing.
    #[tokio::test]
    async fn guests_on_one_port_share_one_vsock_listener() {
        let port = 40_000 + std::process::id() % 20_000;
        let first = match bind_host(3, port, 12346).await {
            Ok(endpoint) => endpoint,
            Err(e) => {
                eprintln!("SKIPPED: cannot bind AF_VSOCK here: {e}");
                return;
            }
        };
        let second = bind_host(7, port, 12346)
            .await
            .expect("a second CID on the same port");
        let err = bind_host(3, port, 12346).await.err().unwrap();
        assert!(err.to_string().contains("CID 3"), "{err}");
        drop(first);
        let third = bind_host(3, port, 12346).await.expect("CID 3 free again");
        drop(second);
        drop(third);
        // Closed with the last guest: the port can be bound by anyone.
        let again = VsockListener::bind(listen_address(port)).expect("the port is free");
        drop(again);
        let fourth = bind_host(9, port, 12346).await.expect("rebound");
        assert!(fourth.listener.local_description().contains("from CID 9"));
    }

    #[test]
    fn only_the_configured_cid_is_served() {
        assert!(peer_allowed(3, 3));
        assert!(!peer_allowed(3, 4));
        assert!(!peer_allowed(3, CID_HOST));
        assert!(!peer_allowed(3, CID_LOCAL));
        assert!(peer_allowed(CID_LOCAL, CID_LOCAL));
        assert!(!peer_allowed(CID_HOST, 5));
    }

    #[test]
    fn guest_cids_are_validated() {
        for bad in [CID_HYPERVISOR, CID_HOST, CID_ANY] {
            let err = check_guest_cid(bad).unwrap_err();
            assert!(matches!(err, TransportError::Invalid(_)), "{bad}");
        }
        for good in [CID_LOCAL, 3, 42, u32::MAX - 1] {
            assert!(check_guest_cid(good).is_ok(), "{good}");
        }
        for bad in [CID_HYPERVISOR, CID_ANY] {
            assert!(check_host_cid(bad).is_err(), "{bad}");
        }
        for good in [CID_LOCAL, CID_HOST] {
            assert!(check_host_cid(good).is_ok(), "{good}");
        }
    }

    #[test]
    fn addresses() {
        assert_eq!(CID_ANY, VMADDR_CID_ANY);
        assert_eq!(CID_HOST, tokio_vsock::VMADDR_CID_HOST);
        assert_eq!(CID_LOCAL, tokio_vsock::VMADDR_CID_LOCAL);
        assert_eq!(CID_HYPERVISOR, tokio_vsock::VMADDR_CID_HYPERVISOR);
        let l = listen_address(12345);
        assert_eq!((l.cid(), l.port()), (VMADDR_CID_ANY, 12345));
        assert_eq!(describe(&l), "vsock any-cid:12345");
        let p = peer_address(7, 12346);
        assert_eq!((p.cid(), p.port()), (7, 12346));
        assert_eq!(describe(&p), "vsock 7:12346");
        assert_eq!(VsockConnector::new(7, 12346).address, p);
    }
}
