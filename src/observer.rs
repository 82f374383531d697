//! The client application's view of the service: an [`Observer`] whose
//! methods all default to no-ops, and the queue its calls run on.
//!
//! Observer calls never run on the guest path. The handler posts them to an
//! [`ObserverQueue`]; one task delivers them in order, each call on tokio's
//! blocking pool and inside `catch_unwind`. So a slow observer never delays a
//! guest reply (except [`Observer::authorize_guest_connection`], whose answer
//! the connect waits for, as in the reference), an observer may block or call
//! back into the service from its methods, and an observer that panics is
//! logged and contained: a panicking authorization counts as a denial.

#![warn(missing_docs)]

use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::protocol::Ssid;
use crate::wifi::{AuthAlgorithm, InterfaceId};

/// How a guest connection relates to the host's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ConnectionKind {
    /// The host was already connected to the network (or it is a fake
    /// network): the guest shares that connection; nothing changes on the host.
    HostMirroring,
    /// The guest asked the host to connect to a network.
    GuestDirected,
}

impl ConnectionKind {
    /// `host-mirroring` or `guest-directed`, as status and logs spell it.
    pub fn name(self) -> &'static str {
        match self {
            ConnectionKind::HostMirroring => "host-mirroring",
            ConnectionKind::GuestDirected => "guest-directed",
        }
    }
}

impl std::fmt::Display for ConnectionKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The observer's answer to a guest connection request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Authorization {
    /// The connect goes ahead.
    Approve,
    /// The guest is answered with a failure.
    Deny,
}

/// How a guest connection request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ConnectOutcome {
    /// The guest is connected.
    Succeeded,
    /// No interface could connect, or the request could not be honoured.
    Failed,
    /// The observer denied it.
    Denied,
}

/// A host interface connected to a network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostConnection {
    /// The interface that connected.
    pub interface: InterfaceId,
    /// The network's SSID.
    pub ssid: Ssid,
    /// The authentication as the guest sees it: algorithms the guest cannot
    /// use read as WPA2-PSK.
    pub auth: AuthAlgorithm,
}

/// The end of a guest connection request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestConnectCompletion {
    /// Mirrored or guest-directed.
    pub kind: ConnectionKind,
    /// How it ended.
    pub outcome: ConnectOutcome,
    /// The 802.11 status code the guest was answered with (0 on success).
    pub status: u16,
    /// The interface holding the connection, when it succeeded.
    pub interface: Option<InterfaceId>,
    /// The network the guest asked for.
    pub ssid: Ssid,
    /// The authentication as the guest sees it.
    pub auth: AuthAlgorithm,
}

/// A guest disconnection (request or completion).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestDisconnect {
    /// Mirrored or guest-directed.
    pub kind: ConnectionKind,
    /// The interface that held the connection.
    pub interface: InterfaceId,
    /// The network the guest leaves.
    pub ssid: Ssid,
}

/// What the client application is told. Every method has a default, so an
/// implementation overrides only what it cares about.
///
/// Methods run on tokio's blocking pool, one at a time, in the order the
/// events happened. They may block, and may call back into the service.
pub trait Observer: Send + Sync + 'static {
    /// A host interface connected to a network (also reported at start for
    /// interfaces already connected).
    fn host_connected(&self, _connection: &HostConnection) {}

    /// A host interface disconnected.
    fn host_disconnected(&self, _interface: InterfaceId) {}

    /// The guest asks to connect. The connection waits for the answer.
    fn authorize_guest_connection(&self, _kind: ConnectionKind, _ssid: &Ssid) -> Authorization {
        Authorization::Approve
    }

    /// A guest connection request ended; told before the guest is answered.
    fn guest_connect_completed(&self, _completion: &GuestConnectCompletion) {}

    /// The guest asked to disconnect.
    fn guest_disconnect_requested(&self, _disconnect: &GuestDisconnect) {}

    /// A guest disconnection finished.
    fn guest_disconnect_completed(&self, _disconnect: &GuestDisconnect) {}

    /// The guest asked for a scan.
    fn guest_scan_requested(&self) {}

    /// The guest's scan was answered.
    fn guest_scan_completed(&self) {}

    /// Whether [`Observer::guest_scan_requested`] and
    /// [`Observer::guest_scan_completed`] are wanted (asked once, when the
    /// service starts). An observer that ignores them says no: a scan then
    /// never reaches the observer's queue, which spares a hand-off to the
    /// blocking pool (a thread wakeup) per scan.
    fn wants_scan_events(&self) -> bool {
        true
    }

    /// Whether the calls may run on the service's async thread (asked once,
    /// when the service starts): only for an observer whose methods never
    /// block and never wait for the service (in-memory bookkeeping, as the
    /// daemon's policy). Its calls then run in order inside `catch_unwind`
    /// as ever, without a hand-off to the blocking pool and back (two
    /// thread wakeups per event, and the connect waits for its
    /// authorization's). Default: no, the blocking pool.
    fn runs_inline(&self) -> bool {
        false
    }
}

/// An observer call, as queued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ObserverEvent {
    /// [`Observer::host_connected`].
    HostConnected(HostConnection),
    /// [`Observer::host_disconnected`].
    HostDisconnected(InterfaceId),
    /// [`Observer::guest_connect_completed`].
    GuestConnectCompleted(GuestConnectCompletion),
    /// [`Observer::guest_disconnect_requested`].
    GuestDisconnectRequested(GuestDisconnect),
    /// [`Observer::guest_disconnect_completed`].
    GuestDisconnectCompleted(GuestDisconnect),
    /// [`Observer::guest_scan_requested`].
    GuestScanRequested,
    /// [`Observer::guest_scan_completed`].
    GuestScanCompleted,
}

impl ObserverEvent {
    fn deliver(&self, observer: &dyn Observer) {
        match self {
            ObserverEvent::HostConnected(c) => observer.host_connected(c),
            ObserverEvent::HostDisconnected(i) => observer.host_disconnected(*i),
            ObserverEvent::GuestConnectCompleted(c) => observer.guest_connect_completed(c),
            ObserverEvent::GuestDisconnectRequested(d) => observer.guest_disconnect_requested(d),
            ObserverEvent::GuestDisconnectCompleted(d) => observer.guest_disconnect_completed(d),
            ObserverEvent::GuestScanRequested => observer.guest_scan_requested(),
            ObserverEvent::GuestScanCompleted => observer.guest_scan_completed(),
        }
    }

    fn name(&self) -> &'static str {
        match self {
            ObserverEvent::HostConnected(_) => "host_connected",
            ObserverEvent::HostDisconnected(_) => "host_disconnected",
            ObserverEvent::GuestConnectCompleted(_) => "guest_connect_completed",
            ObserverEvent::GuestDisconnectRequested(_) => "guest_disconnect_requested",
            ObserverEvent::GuestDisconnectCompleted(_) => "guest_disconnect_completed",
            ObserverEvent::GuestScanRequested => "guest_scan_requested",
            ObserverEvent::GuestScanCompleted => "guest_scan_completed",
        }
    }
}

enum Item {
    Event(ObserverEvent),
    Authorize {
        kind: ConnectionKind,
        ssid: Ssid,
        reply: oneshot::Sender<Authorization>,
    },
    Flush(oneshot::Sender<()>),
}

/// The sending end of the observer queue. Cheap to clone. Without an
/// observer every event is dropped and every connection approved.
#[derive(Clone, Default)]
pub struct ObserverQueue {
    tx: Option<mpsc::UnboundedSender<Item>>,
    /// Items queued and not yet delivered.
    backlog: Arc<AtomicUsize>,
    /// [`Observer::wants_scan_events`].
    scan_events: bool,
}

/// Past this many undelivered items, scan events (two per guest scan, the
/// only events a guest can cause faster than the observer's answers) are
/// dropped: a slow observer must not let a scanning guest grow memory.
/// Authorizations and connection events are never dropped.
pub const OBSERVER_BACKLOG: usize = 1024;

impl ObserverQueue {
    /// Starts the delivery task for `observer` (none: a queue that drops
    /// everything). The task ends when every queue handle is dropped.
    pub fn start(observer: Option<Arc<dyn Observer>>) -> (ObserverQueue, Option<JoinHandle<()>>) {
        let Some(observer) = observer else {
            return (ObserverQueue::default(), None);
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let backlog = Arc::new(AtomicUsize::new(0));
        let scan_events = observer.wants_scan_events();
        let task = tokio::spawn(deliver(observer, rx, backlog.clone()));
        (
            ObserverQueue {
                tx: Some(tx),
                backlog,
                scan_events,
            },
            Some(task),
        )
    }

    fn send(&self, tx: &mpsc::UnboundedSender<Item>, item: Item) -> bool {
        self.backlog.fetch_add(1, Ordering::Relaxed);
        if tx.send(item).is_err() {
            self.backlog.fetch_sub(1, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// Queues an event; returns at once.
    pub fn notify(&self, event: ObserverEvent) {
        if let Some(tx) = &self.tx {
            let droppable = matches!(
                event,
                ObserverEvent::GuestScanRequested | ObserverEvent::GuestScanCompleted
            );
            if droppable && !self.scan_events {
                return;
            }
            if droppable && self.backlog.load(Ordering::Relaxed) >= OBSERVER_BACKLOG {
                tracing::debug!(
                    event = event.name(),
                    "observer backlog full; dropping a scan event"
                );
                return;
            }
            self.send(tx, Item::Event(event));
        }
    }

    /// Asks the observer to authorize a guest connection, after every event
    /// queued before. No observer: approved. An observer that panicked or a
    /// queue that is gone: denied.
    pub async fn authorize(&self, kind: ConnectionKind, ssid: Ssid) -> Authorization {
        let Some(tx) = &self.tx else {
            return Authorization::Approve;
        };
        let (reply, answer) = oneshot::channel();
        if !self.send(tx, Item::Authorize { kind, ssid, reply }) {
            return Authorization::Deny;
        }
        answer.await.unwrap_or(Authorization::Deny)
    }

    /// Waits until every event queued before has been delivered.
    pub async fn flush(&self) {
        if let Some(tx) = &self.tx {
            let (done, wait) = oneshot::channel();
            if self.send(tx, Item::Flush(done)) {
                let _ = wait.await;
            }
        }
    }
}

/// Most queued items taken from the channel in one go.
const BATCH: usize = 64;

/// Items handed over to the blocking pool, and whether a pool job is
/// delivering them.
#[derive(Default)]
struct Handover {
    items: VecDeque<Item>,
    draining: bool,
}

/// Delivers queued items in order. Items go to a hand-over list that one
/// blocking-pool job at a time drains, so the observer runs off the async
/// thread (it may block, or call back into the service), while this task
/// never waits for it: a pool job that finishes wakes nothing, so an
/// observer event costs the async thread no second wakeup per request. A
/// job is started only when none is draining (one hand-off per burst, not
/// per event). At the end (every queue handle dropped) the task waits until
/// everything handed over is delivered. An observer that
/// [runs inline](Observer::runs_inline) is called from this task.
async fn deliver(
    observer: Arc<dyn Observer>,
    mut rx: mpsc::UnboundedReceiver<Item>,
    backlog: Arc<AtomicUsize>,
) {
    let inline = observer.runs_inline();
    let handover: Arc<Mutex<Handover>> = Arc::default();
    let mut batch = Vec::with_capacity(BATCH);
    while rx.recv_many(&mut batch, BATCH).await > 0 {
        if inline {
            for item in batch.drain(..) {
                deliver_one(&*observer, item);
                backlog.fetch_sub(1, Ordering::Relaxed);
            }
        } else {
            hand_over(&handover, &observer, &backlog, batch.drain(..));
        }
    }
    if inline {
        return;
    }
    let (done, delivered) = oneshot::channel();
    // An item like the others (it counts in the backlog until delivered).
    backlog.fetch_add(1, Ordering::Relaxed);
    hand_over(&handover, &observer, &backlog, [Item::Flush(done)]);
    // An error: the pool is shutting down; nothing more can be delivered.
    let _ = delivered.await;
}

/// Appends `items` to the hand-over list and starts a pool job to drain it
/// unless one is draining.
fn hand_over(
    handover: &Arc<Mutex<Handover>>,
    observer: &Arc<dyn Observer>,
    backlog: &Arc<AtomicUsize>,
    items: impl IntoIterator<Item = Item>,
) {
    let mut list = handover.lock().unwrap_or_else(PoisonError::into_inner);
    list.items.extend(items);
    if list.draining || list.items.is_empty() {
        return;
    }
    list.draining = true;
    drop(list);
    let (handover, observer, backlog) = (handover.clone(), observer.clone(), backlog.clone());
    // Not awaited: see `deliver`. If the pool is shutting down the job
    // never runs, and dropped authorization replies read as Deny.
    drop(tokio::task::spawn_blocking(move || loop {
        let item = {
            let mut list = handover.lock().unwrap_or_else(PoisonError::into_inner);
            match list.items.pop_front() {
                Some(item) => item,
                None => {
                    list.draining = false;
                    return;
                }
            }
        };
        // Each item contains its own panics.
        deliver_one(&*observer, item);
        backlog.fetch_sub(1, Ordering::Relaxed);
    }));
}

/// Delivers one item, containing a panic of the observer.
fn deliver_one(observer: &dyn Observer, item: Item) {
    match item {
        Item::Event(event) => {
            let name = event.name();
            if catch_unwind(AssertUnwindSafe(|| event.deliver(observer))).is_err() {
                tracing::error!("the observer panicked in {name}; the service carries on");
            }
        }
        Item::Authorize { kind, ssid, reply } => {
            let answer = catch_unwind(AssertUnwindSafe(|| {
                observer.authorize_guest_connection(kind, &ssid)
            }))
            .unwrap_or_else(|_| {
                tracing::error!(
                    "the observer panicked in authorize_guest_connection; denying, the service carries on"
                );
                Authorization::Deny
            });
            let _ = reply.send(answer);
        }
        Item::Flush(done) => {
            let _ = done.send(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Recorder {
        calls: Mutex<Vec<String>>,
    }

    impl Observer for Recorder {
        fn guest_scan_requested(&self) {
            self.calls.lock().unwrap().push("scan".into());
            panic!("observer bug");
        }
        fn guest_scan_completed(&self) {
            self.calls.lock().unwrap().push("scan done".into());
        }
        fn authorize_guest_connection(&self, kind: ConnectionKind, ssid: &Ssid) -> Authorization {
            self.calls
                .lock()
                .unwrap()
                .push(format!("authorize {kind:?} {ssid}"));
            if ssid.as_bytes() == b"boom" {
                panic!("authorize bug");
            }
            if ssid.as_bytes() == b"no" {
                Authorization::Deny
            } else {
                Authorization::Approve
            }
        }
    }

    #[tokio::test]
    async fn events_are_delivered_in_order_and_panics_are_contained() {
        let rec = Arc::new(Recorder::default());
        let (q, task) = ObserverQueue::start(Some(rec.clone()));
        assert!(task.is_some());
        q.notify(ObserverEvent::GuestScanRequested);
        q.notify(ObserverEvent::GuestScanCompleted);
        let ssid = |s: &str| Ssid::new(s.as_bytes()).unwrap();
        assert_eq!(
            q.authorize(ConnectionKind::GuestDirected, ssid("yes"))
                .await,
            Authorization::Approve
        );
        assert_eq!(
            q.authorize(ConnectionKind::HostMirroring, ssid("no")).await,
            Authorization::Deny
        );
        assert_eq!(
            q.authorize(ConnectionKind::GuestDirected, ssid("boom"))
                .await,
            Authorization::Deny
        );
        q.notify(ObserverEvent::GuestScanCompleted);
        q.flush().await;
        assert_eq!(
            *rec.calls.lock().unwrap(),
            vec![
                "scan",
                "scan done",
                "authorize GuestDirected yes",
                "authorize HostMirroring no",
                "authorize GuestDirected boom",
                "scan done"
            ]
        );
    }

    /// Counts scan events, and says it wants none.
    #[derive(Default)]
    struct NoScans {
        scans: AtomicUsize,
        completions: AtomicUsize,
    }

    impl Observer for NoScans {
        fn guest_scan_requested(&self) {
            self.scans.fetch_add(1, Ordering::SeqCst);
        }
        fn guest_connect_completed(&self, _completion: &GuestConnectCompletion) {
            self.completions.fetch_add(1, Ordering::SeqCst);
        }
        fn wants_scan_events(&self) -> bool {
            false
        }
    }

    #[tokio::test]
    async fn scan_events_are_not_queued_for_an_observer_that_wants_none() {
        let observer = Arc::new(NoScans::default());
        let (q, task) = ObserverQueue::start(Some(observer.clone()));
        q.notify(ObserverEvent::GuestScanRequested);
        q.notify(ObserverEvent::GuestConnectCompleted(
            GuestConnectCompletion {
                kind: ConnectionKind::HostMirroring,
                outcome: ConnectOutcome::Succeeded,
                status: 0,
                interface: None,
                ssid: Ssid::default(),
                auth: AuthAlgorithm::Open,
            },
        ));
        q.flush().await;
        assert_eq!(observer.scans.load(Ordering::SeqCst), 0);
        assert_eq!(observer.completions.load(Ordering::SeqCst), 1);
        // The delivery task ends once every handle is gone, all delivered.
        drop(q);
        task.unwrap().await.unwrap();
    }

    /// Records on which thread it was called; runs inline.
    #[derive(Default)]
    struct Inline {
        threads: Mutex<Vec<std::thread::ThreadId>>,
    }

    impl Observer for Inline {
        fn guest_scan_requested(&self) {
            self.threads
                .lock()
                .unwrap()
                .push(std::thread::current().id());
            panic!("observer bug");
        }
        fn authorize_guest_connection(&self, _kind: ConnectionKind, ssid: &Ssid) -> Authorization {
            self.threads
                .lock()
                .unwrap()
                .push(std::thread::current().id());
            if ssid.as_bytes() == b"no" {
                Authorization::Deny
            } else {
                Authorization::Approve
            }
        }
        fn runs_inline(&self) -> bool {
            true
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn an_inline_observer_runs_on_the_async_thread_in_order_panics_contained() {
        let observer = Arc::new(Inline::default());
        let (q, task) = ObserverQueue::start(Some(observer.clone()));
        q.notify(ObserverEvent::GuestScanRequested);
        let ssid = |s: &str| Ssid::new(s.as_bytes()).unwrap();
        assert_eq!(
            q.authorize(ConnectionKind::GuestDirected, ssid("no")).await,
            Authorization::Deny
        );
        assert_eq!(
            q.authorize(ConnectionKind::GuestDirected, ssid("yes"))
                .await,
            Authorization::Approve
        );
        q.flush().await;
        let here = std::thread::current().id();
        assert_eq!(*observer.threads.lock().unwrap(), vec![here; 3]);
        drop(q);
        task.unwrap().await.unwrap();
    }

    #[tokio::test]
    async fn no_observer_approves_everything() {
        let (q, task) = ObserverQueue::start(None);
        assert!(task.is_none());
        q.notify(ObserverEvent::GuestScanRequested);
        q.flush().await;
        assert_eq!(
            q.authorize(ConnectionKind::GuestDirected, Ssid::default())
                .await,
            Authorization::Approve
        );
    }

    struct Stuck {
        release: Mutex<std::sync::mpsc::Receiver<()>>,
        scans: AtomicUsize,
    }

    impl Observer for Stuck {
        fn guest_scan_requested(&self) {
            if self.scans.fetch_add(1, Ordering::SeqCst) == 0 {
                let _ = self.release.lock().unwrap().recv();
            }
        }
    }

    #[tokio::test]
    async fn a_stuck_observer_bounds_the_scan_events_it_is_owed() {
        let (release, rx) = std::sync::mpsc::channel();
        let stuck = Arc::new(Stuck {
            release: Mutex::new(rx),
            scans: AtomicUsize::new(0),
        });
        let (q, _task) = ObserverQueue::start(Some(stuck.clone()));
        for _ in 0..3 * OBSERVER_BACKLOG {
            q.notify(ObserverEvent::GuestScanRequested);
        }
        // Authorizations are never dropped, even with the backlog full.
        let ssid = Ssid::new(b"x").unwrap();
        let answer = tokio::spawn({
            let q = q.clone();
            async move { q.authorize(ConnectionKind::GuestDirected, ssid).await }
        });
        tokio::task::yield_now().await;
        release.send(()).unwrap();
        assert_eq!(answer.await.unwrap(), Authorization::Approve);
        q.flush().await;
        assert_eq!(stuck.scans.load(Ordering::SeqCst), OBSERVER_BACKLOG);
    }
}
