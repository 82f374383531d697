//! The operation handler: the rules of the reference host as a state machine
//! over a set of Wi-Fi interfaces, for one guest.
//!
//! The state sits behind an async mutex, and one input at a time holds it:
//! a guest request, or a batch of host events. A request runs on the task
//! that asks it (the service's connection task): it takes the lock, first
//! applies every host event published so far (so it sees the host as fresh
//! as it can be), then is answered, its status published and the reply
//! gate opened, all under the lock. Its outputs are guest notifications (a
//! channel of [`Message`]s that the service's notification sender drains)
//! and observer events (the [`ObserverQueue`], delivered on their own
//! task). Nothing here touches a socket, and every duration is a
//! [`HandlerSettings`] field, so tests drive the handler with scripted
//! interfaces under tokio's virtual time.
//!
//! Why not one task that owns the state and takes inputs from a channel (as
//! this handler first was): that hop (two task switches, channel and
//! oneshot operations, re-arming the task's waiters) was the proxy's
//! largest cost per request, larger than the request's own work. Instead a
//! request is polled once where it arrives: the common requests (nothing
//! to disconnect, a scan answered from a cache with no minimum latency
//! still owed, a simulated backend) finish in that poll with no hop at
//! all. A disconnect with nothing to disconnect, the state free and no
//! host event waiting, is answered without a future of its own
//! (`AtOnce`; the request path takes it before it reads the request, so
//! the lock is neither taken nor released between taking the request and
//! writing its reply). One that has to wait (for the lock, the backend or
//! the scan minimum latency) is moved, unfinished, into a task of its own
//! that the caller awaits. So a request is never dropped
//! half-way when its caller goes away (a connection severed at stop, a
//! library caller's timeout): it runs to its end, as it did on the
//! handler's own task. Host events that arrive while no request runs are
//! applied by a small task that a second subscription only wakes; it holds
//! no lock while it waits. It is the handler's task (the one a service's
//! stop awaits): it ends when every [`HandlerClient`] is gone and the
//! requests still running are done.
//!
//! Because replies and notifications are produced only under the lock, and
//! a request's reply is handed over (reply gate opened) before the lock is
//! released, a notification caused by a later input can never be queued
//! before a reply. (A reply from [`AtOnce`] written while the lock is still
//! held needs no gate: nothing can be produced before it is out.) The scan minimum latency is applied under the lock,
//! before the reply leaves, for that reason.
//!
//! The mutex does not poison: an input cut off half-way (a panic, the task
//! aborted at stop) leaves a mark, and from then on the handler counts as
//! gone (requests answer INVALID), as a dead handler task did.

#![warn(missing_docs)]

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use futures::future::join_all;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::sync::{broadcast, mpsc, watch, Notify};
use tokio::task::{AbortHandle, JoinHandle};
use tokio::time::{timeout, Instant};
use tracing::Instrument;

use crate::observer::{
    Authorization, ConnectOutcome, ConnectionKind, GuestConnectCompletion, GuestDisconnect,
    HostConnection, ObserverEvent, ObserverQueue,
};
use crate::protocol::{
    channel_for_freq_khz, ConnectRequest, ConnectResponse, DisconnectRequest, Key, MacAddr,
    Message, Request, ScanBss, ScanLayout, ScanRequest, ScanResponse, Ssid, BSS_ENTRY_LEN,
    MAX_SCAN_RESPONSE_LEN, STATUS_SUCCESS, STATUS_UNSPECIFIED_FAILURE,
};
use crate::wifi::{
    guest_bss, AuthAlgorithm, ConnectParams, ConnectRefusal, ConnectedNetwork, HostWifi,
    InterfaceError, InterfaceEvent, InterfaceId, ScannedBss, Security, WifiInterface,
    STATUS_UNSUPPORTED_AUTH_ALGORITHM,
};

#[cfg(test)]
mod tests;

/// How long the handler waits for an interface to say what it is connected
/// to (at start, on arrival, when looking for a connection to mirror).
const QUERY_TIMEOUT: Duration = Duration::from_secs(5);

/// How the handler behaves for one guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandlerSettings {
    /// Which SCAN_RESPONSE layout the guest speaks.
    pub scan_layout: ScanLayout,
    /// A scan reply never leaves earlier than this after the request
    /// arrived. `iw dev wlan0 scan` subscribes to scan events only after its
    /// trigger returns, so a reply within a few ms completes the scan before
    /// `iw` listens and it hangs. Zero turns it off. Only scans are delayed.
    pub scan_min_latency: Duration,
    /// How long every interface gets to answer a scan.
    pub scan_timeout: Duration,
    /// How long each interface gets to connect (they are tried in order).
    pub connect_timeout: Duration,
    /// How long the guest's interface gets to disconnect.
    pub disconnect_timeout: Duration,
    /// Send NOTIF_DISCONNECTED (with the current session id) when the host
    /// interface holding the guest's connection disconnects. The reference
    /// never does; off by default.
    pub notify_guest_on_host_disconnect: bool,
}

impl Default for HandlerSettings {
    fn default() -> Self {
        HandlerSettings {
            scan_layout: ScanLayout::Current,
            scan_min_latency: Duration::from_millis(150),
            scan_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(10),
            disconnect_timeout: Duration::from_secs(5),
            notify_guest_on_host_disconnect: false,
        }
    }
}

/// The guest waits 20 s for a connect's reply, its own connect included;
/// past that it reports failure, and a host connection made later would not
/// be the one the guest believes in. So a connect is answered within this
/// budget from the request's arrival (2 s left for queueing and transport),
/// however many interfaces there are: each still gets its 10 s, but never
/// more than what is left.
pub const CONNECT_BUDGET: Duration = Duration::from_secs(18);

/// How long the guest waits for the rest of a scan answered "still running"
/// (its own timer); results after that are spontaneous.
const GUEST_SCAN_WAIT: Duration = Duration::from_secs(10);

/// How long a notification waits for replies still being written (the
/// service bounds a reply write at 5 s).
pub(crate) const REPLY_WRITE_WAIT: Duration = Duration::from_secs(6);

/// Counts replies handed over by the handler and not yet written. Replies
/// and notifications travel on different connections: the notification
/// sender waits for the gate to clear, so a notification produced after a
/// reply can never reach the guest first. The request path itself never
/// waits on it. A reply given at once ([`AtOnce`]) and written while the
/// state is still held leaves it alone: notifications are produced under
/// that lock, so none can be produced before that reply is out.
#[derive(Default)]
pub(crate) struct ReplyGate {
    in_flight: AtomicUsize,
    cleared: Notify,
}

impl ReplyGate {
    /// Waits until no reply is being written, or `limit` passed.
    pub(crate) async fn wait_clear(&self, limit: Duration) {
        let _ = timeout(limit, async {
            loop {
                let cleared = self.cleared.notified();
                tokio::pin!(cleared);
                cleared.as_mut().enable();
                if self.in_flight.load(Ordering::Acquire) == 0 {
                    return;
                }
                cleared.await;
            }
        })
        .await;
    }

    /// Replies handed over and not yet written.
    #[cfg(test)]
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    fn open(self: &Arc<Self>) -> ReplyWritten {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        ReplyWritten(Some(self.clone()))
    }
}

/// Held while a reply is written; dropping it clears it from the gate.
pub(crate) struct ReplyWritten(Option<Arc<ReplyGate>>);

impl Drop for ReplyWritten {
    fn drop(&mut self) {
        if let Some(gate) = self.0.take() {
            if gate.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
                gate.cleared.notify_waiters();
            }
        }
    }
}

/// Sends requests to a running handler. Cheap to clone.
#[derive(Clone)]
pub struct HandlerClient {
    shared: Arc<Shared>,
    /// Never sent on: the handler's task sees every client gone when the
    /// channel closes.
    _alive: mpsc::Sender<Infallible>,
}

impl HandlerClient {
    /// Hands a request to the handler and waits for its reply. `arrived` is
    /// when the request reached the host (the scan minimum latency counts
    /// from it). A handler that is gone answers INVALID. Dropping the
    /// returned future does not cancel the request: it runs to its end.
    pub async fn request(&self, request: Request, arrived: Instant) -> Message {
        self.request_until_written(request, arrived).await.0
    }

    /// Like [`HandlerClient::request`], with a guard that keeps the
    /// handler's [`ReplyGate`] closed until it is dropped. A transport drops
    /// it once the reply is written, and the notification sender waits on
    /// the gate, so no notification reaches the guest before a reply that
    /// was handed over earlier.
    pub(crate) async fn request_until_written(
        &self,
        request: Request,
        arrived: Instant,
    ) -> (Message, ReplyWritten) {
        if let Some(answered) = self.shared.answer_at_once(&request) {
            return answered;
        }
        // Boxed at once: the caller's future (the connection task's) then
        // holds a pointer, not this future's state.
        let work = Box::pin(answer_request(self.shared.clone(), request, arrived));
        self.shared
            .run_to_completion(work)
            .await
            .flatten()
            .unwrap_or_else(|| (Message::Invalid, ReplyWritten(None)))
    }

    /// The handler's state, held, if it is free to answer requests at once
    /// ([`AtOnce`]); `None` if it is busy or cannot (then requests go
    /// through [`HandlerClient::request_until_written`]).
    pub(crate) fn at_once(&self) -> Option<AtOnce<'_>> {
        self.shared.at_once()
    }

    /// How many requests were answered at once ([`AtOnce`]).
    #[cfg(test)]
    pub(crate) fn at_once_runs(&self) -> usize {
        self.shared.at_once_runs.load(Ordering::Relaxed)
    }

    /// Waits until the handler has processed every input and host event
    /// that was pending when called.
    pub async fn sync(&self) {
        let shared = self.shared.clone();
        let work = Box::pin(async move { shared.apply_host_events().await });
        let _ = self.shared.run_to_completion(work).await;
    }
}

/// The handler's state, held, checked free to answer from: started, not
/// stopped or cut off, no host event waiting. A transport takes it before
/// it reads a request and keeps it until the reply is written, so that
/// neither taking nor releasing the lock lies between taking the request
/// and writing its reply, where the time decides whether a guest blocked
/// reading its reply is woken once or twice (BENCHMARKS.md). It must be
/// released before anything waits (a read or write that cannot finish
/// at once, the handler's usual path): the lock is the handler's.
pub(crate) struct AtOnce<'a> {
    #[cfg(test)]
    shared: &'a Shared,
    core: tokio::sync::MutexGuard<'a, Core>,
}

impl AtOnce<'_> {
    /// Whether `request` is of a kind that can be answered at once, before
    /// the lock is tried for it (the kinds [`AtOnce::answer`] takes).
    fn may_answer(request: &Request) -> bool {
        matches!(request, Request::Disconnect(_))
    }

    /// The reply to a disconnect with nothing to disconnect (nothing
    /// changes, so there is no status to publish); `None` for any other
    /// request, which goes the usual way. Notifications are produced under
    /// the lock this holds, so while it is held none can overtake the
    /// reply: the reply gate is opened only if the lock is released before
    /// the reply is written ([`AtOnce::release_reply_first`]).
    pub(crate) fn answer(&self, request: &Request) -> Option<Message> {
        // The kinds [`AtOnce::may_answer`] lets through.
        let Request::Disconnect(disconnect) = request else {
            return None;
        };
        let answer = self.core.state.disconnect_without_leaving(disconnect)?;
        #[cfg(test)]
        self.shared.at_once_runs.fetch_add(1, Ordering::Relaxed);
        Some(answer)
    }

    /// Releases the state while a reply it gave is not yet written: the
    /// reply gate stays closed until the returned guard is dropped, so no
    /// notification produced from now on reaches the guest first.
    pub(crate) fn release_reply_first(self) -> ReplyWritten {
        self.core.state.reply_gate.open()
    }
}

/// What the handler's inputs share.
struct Shared {
    /// The state and its host events; held by one input at a time.
    core: tokio::sync::Mutex<Core>,
    /// The handler's task was stopped (aborted): the handler is gone.
    stopped: AtomicBool,
    /// Requests that could not finish where they arrived and run on a task
    /// of their own: aborted with the handler's task.
    detached: std::sync::Mutex<Vec<AbortHandle>>,
    /// How many requests and syncs finished where they arrived, and how
    /// many needed a task of their own.
    #[cfg(test)]
    inline_runs: AtomicUsize,
    #[cfg(test)]
    at_once_runs: AtomicUsize,
    #[cfg(test)]
    detached_runs: AtomicUsize,
}

impl Shared {
    /// Whether the handler is gone: stopped, or an input before this one
    /// was cut off half-way (`core` may be half-updated).
    fn is_gone(&self, core: &Core) -> bool {
        if self.stopped.load(Ordering::Acquire) {
            return true;
        }
        if core.interrupted {
            tracing::error!("an earlier input was cut off half-way; the handler is gone");
            self.stop();
            return true;
        }
        false
    }

    /// The lock on the state: taken at once when free (the usual case, and
    /// cheaper than building the waiting future), else waited for.
    async fn lock_core(&self) -> tokio::sync::MutexGuard<'_, Core> {
        match self.core.try_lock() {
            Ok(core) => core,
            Err(_) => self.core.lock().await,
        }
    }

    /// Takes the lock and applies the host events published so far.
    /// `false`: the handler is gone.
    async fn apply_host_events(&self) -> bool {
        let mut core = self.lock_core().await;
        if self.is_gone(&core) {
            return false;
        }
        core.interrupted = true;
        core.catch_up().await;
        core.interrupted = false;
        true
    }

    /// Answers a request that needs nothing but the state (a disconnect
    /// with nothing to disconnect), with no future of its own, when the
    /// state is free, started and no host event waits; `None` sends it the
    /// usual way ([`answer_request`]).
    fn answer_at_once(&self, request: &Request) -> Option<(Message, ReplyWritten)> {
        if !AtOnce::may_answer(request) {
            return None;
        }
        let state = self.at_once()?;
        let answer = state.answer(request)?;
        Some((answer, state.release_reply_first()))
    }

    /// The state, if free, started and with no host event waiting: then it
    /// can answer some requests at once ([`AtOnce`]).
    fn at_once(&self) -> Option<AtOnce<'_>> {
        let core = self.core.try_lock().ok()?;
        let pending_events = core.events_open && !core.events.is_empty();
        if self.stopped.load(Ordering::Acquire)
            || core.interrupted
            || !core.started
            || pending_events
        {
            return None;
        }
        Some(AtOnce {
            #[cfg(test)]
            shared: self,
            core,
        })
    }

    /// Runs `work` to its end even if the caller goes away: polled once
    /// here (most inputs finish in that poll, with no task switch), and if
    /// not finished, moved into a task of its own, which the caller awaits.
    /// `None`: that task was aborted (the handler stopped) or panicked.
    async fn run_to_completion<T: Send + 'static>(
        &self,
        mut work: Pin<Box<impl Future<Output = T> + Send + 'static>>,
    ) -> Option<T> {
        if let Poll::Ready(done) = futures::poll!(work.as_mut()) {
            #[cfg(test)]
            self.inline_runs.fetch_add(1, Ordering::Relaxed);
            return Some(done);
        }
        #[cfg(test)]
        self.detached_runs.fetch_add(1, Ordering::Relaxed);
        let task = tokio::spawn(work.in_current_span());
        {
            let mut detached = self.detached.lock().unwrap_or_else(|e| e.into_inner());
            detached.retain(|t| !t.is_finished());
            detached.push(task.abort_handle());
        }
        // Checked after registering: either the handler's task saw this one
        // when it stopped, or this sees that it stopped.
        if self.stopped.load(Ordering::Acquire) {
            task.abort();
        }
        match task.await {
            Ok(done) => Some(done),
            Err(e) => {
                tracing::debug!("a handler input did not finish: {e}");
                None
            }
        }
    }

    /// Marks the handler gone and aborts the inputs still running on their
    /// own tasks.
    fn stop(&self) {
        self.stopped.store(true, Ordering::Release);
        let detached =
            std::mem::take(&mut *self.detached.lock().unwrap_or_else(|e| e.into_inner()));
        for task in detached {
            task.abort();
        }
    }
}

/// A request, from taking the lock to the reply handed over with the gate
/// open. `None`: the handler is gone.
async fn answer_request(
    shared: Arc<Shared>,
    request: Request,
    arrived: Instant,
) -> Option<(Message, ReplyWritten)> {
    let mut core = shared.lock_core().await;
    if shared.is_gone(&core) {
        return None;
    }
    core.interrupted = true;
    // Host events first: the request is then handled with the host's state
    // as fresh as it can be.
    core.catch_up().await;
    let answer = core.state.on_request(request, arrived).await;
    core.state.publish_status();
    // The gate closes before the lock is released, so before anything
    // later can be queued for the notification sender.
    let written = core.state.reply_gate.open();
    core.interrupted = false;
    Some((answer, written))
}

/// The state and the host events it has not applied yet.
struct Core {
    state: State,
    events: broadcast::Receiver<InterfaceEvent>,
    events_open: bool,
    /// The connections present at start were reported.
    started: bool,
    /// Set while an input changes the state; still set when the next input
    /// takes the lock means the one before was cut off half-way.
    interrupted: bool,
}

impl Core {
    /// Reports the connections present at start (once, before anything
    /// else), then applies every host event published so far.
    async fn catch_up(&mut self) {
        if !self.started {
            Box::pin(self.state.report_initial_connections()).await;
            self.state.publish_status();
            self.started = true;
        }
        while self.events_open {
            match self.events.try_recv() {
                Ok(event) => {
                    // Boxed: most requests find no event, and this
                    // future would make theirs as large (see `on_request`).
                    Box::pin(self.state.on_event(event)).await;
                    self.state.publish_status();
                }
                Err(TryRecvError::Lagged(missed)) => {
                    tracing::warn!(
                        missed,
                        "missed host Wi-Fi events; re-reading the interfaces"
                    );
                    Box::pin(self.state.resync()).await;
                    self.state.publish_status();
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Closed) => {
                    tracing::debug!("host Wi-Fi events closed");
                    self.events_open = false;
                }
            }
        }
    }
}

/// Stops the handler (see [`Shared::stop`]) when its task ends other than
/// by every client going away: aborted.
struct StopOnAbort(Option<Arc<Shared>>);

impl Drop for StopOnAbort {
    fn drop(&mut self) {
        if let Some(shared) = self.0.take() {
            shared.stop();
        }
    }
}

/// The handler's task: applies host events as they come while no request
/// does, and ends once every client is gone and the inputs still running
/// are done. `wake` is a second subscription to the host's events, only
/// for waking up: the events themselves are read from the state's own
/// receiver, under the lock.
///
/// `on_abort` is an argument, not a local: it must also fire when the task
/// is aborted before its first poll.
async fn follow_host_events(
    shared: Arc<Shared>,
    mut wake: broadcast::Receiver<InterfaceEvent>,
    mut clients: mpsc::Receiver<Infallible>,
    mut on_abort: StopOnAbort,
) {
    let mut wake_open = true;
    let mut woken = true; // the connections present at start
    loop {
        if woken {
            // Wake-ups already queued are for events the catch-up below
            // applies: dropped first, so each costs the lock once at most.
            loop {
                match wake.try_recv() {
                    Ok(_) | Err(TryRecvError::Lagged(_)) => {}
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Closed) => {
                        wake_open = false;
                        break;
                    }
                }
            }
            if !shared.apply_host_events().await {
                return;
            }
        }
        woken = tokio::select! {
            biased;
            event = wake.recv(), if wake_open => {
                if let Err(RecvError::Closed) = event {
                    wake_open = false;
                }
                true
            }
            None = clients.recv() => break,
        };
    }
    // No request can come any more; those still running queued for the
    // lock before this (the lock is fair), so once it is taken they are
    // done.
    drop(shared.core.lock().await);
    on_abort.0 = None;
}

/// The guest's connection as the handler sees it, for status output. The
/// handler publishes it before answering the request that changed it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HandlerStatus {
    /// The value carried by the last connect response (0: none yet).
    pub session_id: u64,
    /// The guest's connection, if it has one.
    pub connection: Option<GuestLink>,
}

/// The network the guest is connected to, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestLink {
    /// The network's SSID.
    pub ssid: Ssid,
    /// Mirrored or guest-directed.
    pub kind: ConnectionKind,
    /// The interface holding the connection.
    pub interface: InterfaceId,
}

/// A running handler: its client, its task and its status.
pub(crate) struct HandlerHandle {
    pub(crate) client: HandlerClient,
    /// Replies not yet written; the notification sender waits on it.
    pub(crate) reply_gate: Arc<ReplyGate>,
    pub(crate) task: JoinHandle<()>,
    /// Read-only view of the guest's connection (never waits for the task).
    pub(crate) status: watch::Receiver<HandlerStatus>,
}

/// Spawns the handler for one guest.
///
/// `host` supplies the interfaces and their events, `fake` the client's fake
/// networks (first in every scan), `notifications` receives guest
/// notifications (a full channel drops them with a warning: the guest path
/// never waits for the notification sender).
pub(crate) fn spawn(
    host: Arc<dyn HostWifi>,
    fake: Option<Arc<dyn WifiInterface>>,
    observer: ObserverQueue,
    notifications: mpsc::Sender<Message>,
    settings: HandlerSettings,
) -> HandlerHandle {
    // Subscribe before listing, so no arrival falls in between.
    let events = host.subscribe();
    let wake = host.subscribe();
    let interfaces = host.interfaces();
    let (alive, clients) = mpsc::channel(1);
    let (status_tx, status) = watch::channel(HandlerStatus::default());
    let reply_gate = Arc::new(ReplyGate::default());
    let state = State {
        reply_gate: reply_gate.clone(),
        status: status_tx,
        settings,
        host,
        fake,
        interfaces,
        host_connections: HashMap::new(),
        session_id: 0,
        guest: None,
        pending_scan: None,
        observer,
        notifications,
    };
    let shared = Arc::new(Shared {
        core: tokio::sync::Mutex::new(Core {
            state,
            events,
            events_open: true,
            started: false,
            interrupted: false,
        }),
        stopped: AtomicBool::new(false),
        detached: std::sync::Mutex::new(Vec::new()),
        #[cfg(test)]
        inline_runs: AtomicUsize::new(0),
        #[cfg(test)]
        at_once_runs: AtomicUsize::new(0),
        #[cfg(test)]
        detached_runs: AtomicUsize::new(0),
    });
    let on_abort = StopOnAbort(Some(shared.clone()));
    let task =
        tokio::spawn(follow_host_events(shared.clone(), wake, clients, on_abort).in_current_span());
    HandlerHandle {
        client: HandlerClient {
            shared,
            _alive: alive,
        },
        reply_gate,
        task,
        status,
    }
}

/// How a connect ended, as [`State::end_connect`] reports it.
struct ConnectEnding {
    kind: ConnectionKind,
    /// The authentication the observer is told.
    auth: AuthAlgorithm,
    end: ConnectEnd,
}

/// What came of a connect.
enum ConnectEnd {
    /// Connected (or mirroring) through this interface, on this BSS.
    Joined {
        interface: InterfaceId,
        bssid: MacAddr,
    },
    /// The observer (or the guest's wait running out) said no.
    Denied,
    /// Refused or failed, with the 802.11 status the guest gets.
    Failed { status: u16 },
}

/// The guest's connection, as the handler remembers it. Not `Clone`: it
/// may hold the key.
#[derive(Debug, PartialEq, Eq)]
struct GuestConnection {
    interface: InterfaceId,
    ssid: Ssid,
    kind: ConnectionKind,
    /// For a guest-directed connection, what the host joined with: a new
    /// connect to the same network with the same credentials keeps the
    /// connection as it is. The key is zeroized on drop; never logged.
    credentials: Option<(Security, Option<Key>)>,
}

/// A scan the guest was told is still running.
struct PendingScan {
    waiting: HashSet<InterfaceId>,
    expires: Instant,
}

struct State {
    /// Replies handed over and not yet written.
    reply_gate: Arc<ReplyGate>,
    settings: HandlerSettings,
    host: Arc<dyn HostWifi>,
    /// The client's fake networks: asked first, never connected by a guest.
    fake: Option<Arc<dyn WifiInterface>>,
    /// Host interfaces, in the order connects try them.
    interfaces: Vec<Arc<dyn WifiInterface>>,
    /// What each host interface is connected to, as last known.
    host_connections: HashMap<InterfaceId, ConnectedNetwork>,
    /// The value carried by the last connect response (0: none yet).
    session_id: u64,
    guest: Option<GuestConnection>,
    pending_scan: Option<PendingScan>,
    observer: ObserverQueue,
    notifications: mpsc::Sender<Message>,
    status: watch::Sender<HandlerStatus>,
}

fn guest_auth(security: &Security) -> AuthAlgorithm {
    security.as_seen_by_guest().auth
}

/// Builds the BSS list of a scan response: drops BSSs on unknown channels,
/// keeps one entry per BSSID (the first, unless a later one names the SSID
/// the first hides), stays under the response size limit.
struct Merger {
    /// Index in `bss` of every BSSID taken, and whether its SSID is hidden.
    seen: HashMap<MacAddr, (usize, bool)>,
    size: usize,
    bss: Vec<ScanBss>,
}

/// A hidden network's beacon carries an empty SSID, or one of zero bytes.
fn ssid_hidden(ssid: &Ssid) -> bool {
    ssid.as_bytes().iter().all(|b| *b == 0)
}

impl Merger {
    fn new(layout: ScanLayout) -> Merger {
        Merger {
            seen: HashMap::new(),
            size: layout.fixed_len(),
            bss: Vec::new(),
        }
    }

    fn add(&mut self, scanned: &ScannedBss) {
        if channel_for_freq_khz(scanned.freq_khz).is_none() {
            tracing::debug!(
                bssid = %scanned.bssid,
                freq_khz = scanned.freq_khz,
                "dropping a BSS on a frequency the guest does not know"
            );
            return;
        }
        let hidden = ssid_hidden(&scanned.ssid);
        if let Some(&(index, taken_hidden)) = self.seen.get(&scanned.bssid) {
            // A host lists a hidden BSS once as seen in its beacon (no SSID)
            // and once as probed (the SSID): the guest can join it only
            // with the SSID, so that entry wins.
            if taken_hidden && !hidden {
                let bss = guest_bss(scanned);
                let new_size = BSS_ENTRY_LEN + bss.ies.len();
                let old_size = BSS_ENTRY_LEN + self.bss[index].ies.len();
                if self.size - old_size + new_size <= MAX_SCAN_RESPONSE_LEN {
                    self.size = self.size - old_size + new_size;
                    self.bss[index] = bss;
                    self.seen.insert(scanned.bssid, (index, false));
                }
            }
            return;
        }
        let bss = guest_bss(scanned);
        let size = BSS_ENTRY_LEN + bss.ies.len();
        if self.size + size > MAX_SCAN_RESPONSE_LEN {
            tracing::warn!(bssid = %scanned.bssid, "scan response full; dropping a BSS");
            return;
        }
        self.seen.insert(scanned.bssid, (self.bss.len(), hidden));
        self.size += size;
        self.bss.push(bss);
    }

    fn response(self, scan_complete: bool) -> ScanResponse {
        ScanResponse {
            scan_complete,
            bss: self.bss,
        }
    }
}

impl State {
    fn publish_status(&self) {
        let now = HandlerStatus {
            session_id: self.session_id,
            connection: self.guest.as_ref().map(|g| GuestLink {
                ssid: g.ssid,
                kind: g.kind,
                interface: g.interface,
            }),
        };
        self.status.send_if_modified(|current| {
            let changed = *current != now;
            if changed {
                *current = now;
            }
            changed
        });
    }

    async fn query_connection(iface: &Arc<dyn WifiInterface>) -> Option<ConnectedNetwork> {
        Self::bounded_query(iface, iface.connected_network()).await
    }

    async fn query_connection_to(
        iface: &Arc<dyn WifiInterface>,
        ssid: &Ssid,
    ) -> Option<ConnectedNetwork> {
        Self::bounded_query(iface, iface.connection_to(ssid)).await
    }

    /// A connection-state query, bounded by [`QUERY_TIMEOUT`]; a failure is
    /// logged and reads as "not connected".
    async fn bounded_query(
        iface: &Arc<dyn WifiInterface>,
        query: impl std::future::Future<Output = Result<Option<ConnectedNetwork>, InterfaceError>>,
    ) -> Option<ConnectedNetwork> {
        match timeout(QUERY_TIMEOUT, query).await {
            Ok(Ok(network)) => network,
            Ok(Err(e)) => {
                tracing::warn!(interface = %iface.name(), "cannot read the connection state: {e}");
                None
            }
            Err(_) => {
                tracing::warn!(interface = %iface.name(), "timed out reading the connection state");
                None
            }
        }
    }

    async fn report_initial_connections(&mut self) {
        for iface in self.interfaces.clone() {
            tracing::info!(interface = %iface.name(), id = %iface.id(), "Wi-Fi interface present");
            if let Some(network) = Self::query_connection(&iface).await {
                self.host_connected(iface.id(), network);
            }
        }
    }

    /// Records a host connection and tells the observer, unless it is the
    /// connection already known.
    fn host_connected(&mut self, iface: InterfaceId, network: ConnectedNetwork) {
        let same = self
            .host_connections
            .get(&iface)
            .is_some_and(|known| known.ssid == network.ssid && known.bssid == network.bssid);
        if same {
            return;
        }
        tracing::info!(interface = %iface, ssid = %network.ssid, bssid = %network.bssid, "host connected");
        if let Some(guest) = &self.guest {
            if guest.interface == iface && guest.ssid != network.ssid {
                self.guest_connection_lost(iface);
            }
        }
        self.observer
            .notify(ObserverEvent::HostConnected(HostConnection {
                interface: iface,
                ssid: network.ssid,
                auth: guest_auth(&network.security),
            }));
        self.host_connections.insert(iface, network);
    }

    fn host_disconnected(&mut self, iface: InterfaceId) {
        if self.host_connections.remove(&iface).is_some() {
            tracing::info!(interface = %iface, "host disconnected");
            self.observer.notify(ObserverEvent::HostDisconnected(iface));
        }
        if self.guest.as_ref().is_some_and(|g| g.interface == iface) {
            self.guest_connection_lost(iface);
        }
    }

    /// A Disconnected event. An interface that changes network (a
    /// guest-directed connect on one that was on another network) reports
    /// leaving the old one while the connect runs, and the handler reads
    /// that event only after the connect was answered. So the interface is
    /// asked what it is on now: still connected means the event is stale,
    /// and the current network is recorded instead.
    async fn on_host_disconnected(&mut self, iface: InterfaceId) {
        let known = self.interfaces.iter().find(|i| i.id() == iface).cloned();
        if let Some(i) = known {
            if let Some(now) = Self::query_connection(&i).await {
                tracing::debug!(interface = %iface, ssid = %now.ssid, "disconnect event, but the interface is connected: stale");
                self.host_connected(iface, now);
                return;
            }
        }
        self.host_disconnected(iface);
    }

    /// The interface holding the guest's connection left that network.
    fn guest_connection_lost(&mut self, iface: InterfaceId) {
        self.guest = None;
        if self.settings.notify_guest_on_host_disconnect {
            tracing::info!(interface = %iface, "the guest's connection is gone; telling the guest");
            self.notify_guest(Message::NotifDisconnected {
                session_id: self.session_id,
            });
        } else {
            tracing::info!(interface = %iface, "the guest's connection is gone on the host");
        }
    }

    fn notify_guest(&self, message: Message) {
        match self.notifications.try_send(message) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(m)) => {
                tracing::warn!(operation = %m.operation(), "notification queue full; dropping a notification");
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                tracing::debug!("no notification sender; dropping a notification");
            }
        }
    }

    fn interface(&self, id: InterfaceId) -> Option<Arc<dyn WifiInterface>> {
        self.interfaces.iter().find(|i| i.id() == id).cloned()
    }

    async fn on_event(&mut self, event: InterfaceEvent) {
        tracing::trace!(%event, "host Wi-Fi event");
        match event {
            InterfaceEvent::Arrived(iface) => {
                let id = iface.id();
                if let Some(slot) = self.interfaces.iter_mut().find(|i| i.id() == id) {
                    *slot = iface;
                    return;
                }
                tracing::info!(interface = %iface.name(), %id, "Wi-Fi interface arrived");
                self.interfaces.push(iface.clone());
                if let Some(network) = Self::query_connection(&iface).await {
                    self.host_connected(id, network);
                }
            }
            InterfaceEvent::Removed(id) => {
                let before = self.interfaces.len();
                self.interfaces.retain(|i| i.id() != id);
                if self.interfaces.len() != before {
                    tracing::info!(%id, "Wi-Fi interface removed");
                }
                self.host_disconnected(id);
                self.scan_source_gone(id);
            }
            InterfaceEvent::Connected { iface, network } => self.host_connected(iface, network),
            InterfaceEvent::Disconnected { iface } => self.on_host_disconnected(iface).await,
            InterfaceEvent::SignalQuality { iface, percent } => {
                if self.guest.as_ref().is_some_and(|g| g.interface == iface) {
                    let dbm = crate::protocol::quality_percent_to_dbm(i32::from(percent));
                    tracing::debug!(%iface, percent, dbm, "forwarding signal quality");
                    self.notify_guest(Message::NotifSignalQuality { dbm });
                } else {
                    tracing::trace!(%iface, percent, "signal quality of an interface the guest does not use");
                }
            }
            InterfaceEvent::ScanResults { iface, result } => {
                let mut scan_complete = false;
                if let Some(pending) = &mut self.pending_scan {
                    if pending.expires <= Instant::now() {
                        self.pending_scan = None;
                    } else if result.complete && pending.waiting.remove(&iface) {
                        scan_complete = pending.waiting.is_empty();
                        if scan_complete {
                            self.pending_scan = None;
                        }
                    }
                }
                if self.settings.scan_layout == ScanLayout::Legacy {
                    tracing::debug!(%iface, "legacy guests drop scan notifications; not sending");
                    return;
                }
                let mut merger = Merger::new(self.settings.scan_layout);
                for bss in &result.bss {
                    merger.add(bss);
                }
                let response = merger.response(scan_complete);
                if response.bss.is_empty() && !scan_complete {
                    return;
                }
                tracing::debug!(%iface, bss = response.bss.len(), scan_complete, "scan results for the guest");
                self.notify_guest(Message::ScanResponse(response));
            }
        }
    }

    /// An interface that was still scanning for the guest is gone: if it was
    /// the last one, finish the guest's scan now rather than at its timeout.
    fn scan_source_gone(&mut self, id: InterfaceId) {
        // A pending scan past the guest's own timer is over for the guest:
        // completing it now could finish the guest's next scan with stale
        // results (the hazard in the protocol notes).
        if self
            .pending_scan
            .as_ref()
            .is_some_and(|p| p.expires <= Instant::now())
        {
            self.pending_scan = None;
        }
        let finished = match &mut self.pending_scan {
            Some(p) => p.waiting.remove(&id) && p.waiting.is_empty(),
            None => false,
        };
        if finished {
            self.pending_scan = None;
            if self.settings.scan_layout == ScanLayout::Current {
                self.notify_guest(Message::ScanResponse(ScanResponse {
                    scan_complete: true,
                    bss: Vec::new(),
                }));
            }
        }
    }

    /// After missing events: reconcile the interface list and connections.
    async fn resync(&mut self) {
        let now = self.host.interfaces();
        let gone: Vec<InterfaceId> = self
            .interfaces
            .iter()
            .map(|i| i.id())
            .filter(|id| !now.iter().any(|n| n.id() == *id))
            .collect();
        for id in gone {
            self.on_event(InterfaceEvent::Removed(id)).await;
        }
        self.interfaces = now;
        for iface in self.interfaces.clone() {
            match Self::query_connection(&iface).await {
                Some(network) => self.host_connected(iface.id(), network),
                None => self.host_disconnected(iface.id()),
            }
        }
    }

    async fn on_request(&mut self, request: Request, arrived: Instant) -> Message {
        // Scan and connect are boxed: their futures are several times the
        // rest of a request's, which would otherwise be as large, to be
        // allocated and copied for every request before it is answered
        // (BENCHMARKS.md); next to what a scan or connect does, one more
        // allocation is nothing.
        match request {
            Request::Scan(scan) => Box::pin(self.scan_answered_after(scan, arrived)).await,
            Request::Connect(connect) => {
                Box::pin(self.connect(connect, arrived + CONNECT_BUDGET)).await
            }
            Request::Disconnect(disconnect) => self.disconnect(disconnect).await,
        }
    }

    /// A scan's reply, not before the minimum latency from `arrived`.
    async fn scan_answered_after(&mut self, scan: ScanRequest, arrived: Instant) -> Message {
        let reply = self.scan(scan).await;
        // Inside the serialized path: nothing produced after this
        // reply can be queued before it.
        // Only sleep when the deadline is ahead: tokio's timer
        // rounds up to its next 1 ms tick, so even a sleep until a
        // past instant costs about a millisecond.
        let ready_at = arrived + self.settings.scan_min_latency;
        if ready_at > Instant::now() {
            tokio::time::sleep_until(ready_at).await;
        }
        reply
    }

    async fn scan(&mut self, request: ScanRequest) -> Message {
        match &request.ssid {
            Some(target) => tracing::debug!(%target, "guest scan"),
            None => tracing::debug!("guest scan"),
        }
        self.observer.notify(ObserverEvent::GuestScanRequested);
        let mut sources: Vec<Arc<dyn WifiInterface>> = Vec::new();
        sources.extend(self.fake.iter().cloned());
        sources.extend(self.interfaces.iter().cloned());
        let limit = self.settings.scan_timeout;
        let target = request.ssid;
        let results = join_all(sources.iter().map(|iface| async move {
            let r = timeout(limit, iface.scan(target.as_ref())).await;
            (iface, r)
        }))
        .await;

        let mut merger = Merger::new(self.settings.scan_layout);
        let mut still_scanning = HashSet::new();
        for (iface, result) in results {
            match result {
                Ok(Ok(result)) => {
                    tracing::debug!(interface = %iface.name(), bss = result.bss.len(), complete = result.complete, "scan answer");
                    if !result.complete {
                        still_scanning.insert(iface.id());
                    }
                    for bss in &result.bss {
                        merger.add(bss);
                    }
                }
                Ok(Err(e)) => tracing::warn!(interface = %iface.name(), "scan failed: {e}"),
                Err(_) => {
                    tracing::warn!(interface = %iface.name(), "no scan answer within {limit:?}")
                }
            }
        }
        let complete = still_scanning.is_empty() || self.settings.scan_layout == ScanLayout::Legacy;
        self.pending_scan = (!complete).then(|| PendingScan {
            waiting: still_scanning,
            expires: Instant::now() + GUEST_SCAN_WAIT,
        });
        self.observer.notify(ObserverEvent::GuestScanCompleted);
        let response = merger.response(complete);
        // Debug, not info: guests scan every few seconds (wpa_supplicant,
        // NetworkManager), which would bury the connects an operator looks for.
        tracing::debug!(
            bss = response.bss.len(),
            scan_complete = complete,
            "answering guest scan"
        );
        Message::ScanResponse(response)
    }

    /// The first interface (fake networks first) connected to `ssid`.
    async fn find_mirror(&self, ssid: &Ssid) -> Option<(InterfaceId, ConnectedNetwork)> {
        if let Some(fake) = &self.fake {
            if let Some(network) = Self::query_connection_to(fake, ssid).await {
                return Some((fake.id(), network));
            }
        }
        // Asked all at once (each bounded), then taken in interface order:
        // one slow interface costs its query timeout once, not once per
        // interface before it.
        let states = join_all(
            self.interfaces
                .iter()
                .map(|iface| Self::query_connection_to(iface, ssid)),
        )
        .await;
        self.interfaces
            .iter()
            .zip(states)
            .find_map(|(iface, network)| Some((iface.id(), network?)))
    }

    /// Asks the observer, but only for as long as the guest still waits.
    async fn authorize_within(
        &self,
        kind: ConnectionKind,
        ssid: Ssid,
        deadline: Instant,
    ) -> Authorization {
        match tokio::time::timeout_at(deadline, self.observer.authorize(kind, ssid)).await {
            Ok(answer) => answer,
            Err(_) => {
                tracing::warn!(ssid = %ssid, "the observer did not authorize within the guest's wait; denying");
                Authorization::Deny
            }
        }
    }

    /// The one exit of every connect: tells the observer how it ended
    /// (`GuestConnectCompleted`) and answers the guest, with a new session
    /// id whatever the outcome.
    fn end_connect(&mut self, ssid: Ssid, ending: ConnectEnding) -> Message {
        let ConnectEnding { kind, auth, end } = ending;
        let (outcome, status, interface, bssid) = match end {
            ConnectEnd::Joined { interface, bssid } => (
                ConnectOutcome::Succeeded,
                STATUS_SUCCESS,
                Some(interface),
                bssid,
            ),
            ConnectEnd::Denied => (
                ConnectOutcome::Denied,
                STATUS_UNSPECIFIED_FAILURE,
                None,
                MacAddr::default(),
            ),
            ConnectEnd::Failed { status } => {
                (ConnectOutcome::Failed, status, None, MacAddr::default())
            }
        };
        self.observer.notify(ObserverEvent::GuestConnectCompleted(
            GuestConnectCompletion {
                kind,
                outcome,
                status,
                interface,
                ssid,
                auth,
            },
        ));
        self.session_id += 1;
        Message::ConnectResponse(ConnectResponse {
            result_code: status,
            bssid,
            session_id: self.session_id,
        })
    }

    async fn connect(&mut self, request: ConnectRequest, deadline: Instant) -> Message {
        let ssid = request.ssid;
        let ending = self.try_connect(request, deadline).await;
        self.end_connect(ssid, ending)
    }

    /// Decides and carries out a connect; [`State::end_connect`] reports it.
    async fn try_connect(
        &mut self,
        mut request: ConnectRequest,
        deadline: Instant,
    ) -> ConnectEnding {
        let ssid = request.ssid;
        let requested = Security::from_connect_request(&request);
        let requested_auth = requested.map_or(AuthAlgorithm::Wpa2Psk, |s| s.auth);
        let security = requested
            .as_ref()
            .map_or_else(|_| "unsupported".to_string(), |s| s.label());
        tracing::info!(%ssid, %security, "guest connect");
        if let Err(ConnectRefusal::UnsupportedAuthType(auth_type)) = requested {
            // Shared key (WEP), FT, network EAP and unknown types: the host
            // never joins with them, not even by mirroring; refused before
            // anything else with the status an access point would give.
            tracing::info!(ssid = %ssid, auth_type = %auth_type.name(), "refusing a connect: unsupported authentication algorithm");
            return ConnectEnding {
                kind: ConnectionKind::GuestDirected,
                auth: AuthAlgorithm::Other,
                end: ConnectEnd::Failed {
                    status: STATUS_UNSUPPORTED_AUTH_ALGORITHM,
                },
            };
        }

        if let Some(ending) = self
            .connect_again_to_own_network(&request, requested, deadline)
            .await
        {
            return ending;
        }

        if let Some((iface, network)) = self.find_mirror(&ssid).await {
            let kind = ConnectionKind::HostMirroring;
            let auth = guest_auth(&network.security);
            let end = match self.authorize_within(kind, ssid, deadline).await {
                Authorization::Approve => {
                    tracing::info!(ssid = %ssid, interface = %iface, "mirroring the host's connection");
                    self.guest = Some(GuestConnection {
                        interface: iface,
                        ssid,
                        kind,
                        credentials: None,
                    });
                    ConnectEnd::Joined {
                        interface: iface,
                        bssid: network.bssid,
                    }
                }
                Authorization::Deny => {
                    tracing::info!(ssid = %ssid, "the observer denied mirroring");
                    ConnectEnd::Denied
                }
            };
            return ConnectEnding { kind, auth, end };
        }

        let kind = ConnectionKind::GuestDirected;
        if self.authorize_within(kind, ssid, deadline).await == Authorization::Deny {
            tracing::info!(ssid = %ssid, "the observer denied the connection");
            return ConnectEnding {
                kind,
                auth: requested_auth,
                end: ConnectEnd::Denied,
            };
        }
        let security = match requested {
            Ok(security) => security,
            Err(refusal) => {
                tracing::info!(ssid = %ssid, ?refusal, "the guest asks for a security the host cannot honour");
                return ConnectEnding {
                    kind,
                    auth: requested_auth,
                    end: ConnectEnd::Failed {
                        status: STATUS_UNSPECIFIED_FAILURE,
                    },
                };
            }
        };
        let mut params = ConnectParams {
            ssid,
            bssid: request.bssid,
            security,
            // Moved, not copied: the request is done with it.
            key: (security != Security::OPEN).then(|| std::mem::take(&mut request.key)),
        };
        let mut rejected: Option<u16> = None;
        for iface in self.interfaces.clone() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                tracing::warn!(interface = %iface.name(), "the guest's wait is over; not trying further interfaces");
                break;
            }
            let limit = self.settings.connect_timeout.min(left);
            match timeout(limit, iface.connect(&params)).await {
                Ok(Ok(network)) => {
                    let id = iface.id();
                    tracing::info!(ssid = %ssid, interface = %iface.name(), bssid = %network.bssid, "guest connection up");
                    let bssid = network.bssid;
                    // The new connection supersedes the guest's previous one:
                    // it is not "lost" when the interface changes network.
                    self.guest = None;
                    self.host_connected(id, network);
                    self.guest = Some(GuestConnection {
                        interface: id,
                        ssid,
                        kind,
                        // Moved: `params` is not used after a success.
                        credentials: Some((security, params.key.take())),
                    });
                    return ConnectEnding {
                        kind,
                        auth: security.auth,
                        end: ConnectEnd::Joined {
                            interface: id,
                            bssid,
                        },
                    };
                }
                Ok(Err(InterfaceError::Rejected { status })) => {
                    tracing::info!(interface = %iface.name(), status, "connection rejected");
                    rejected.get_or_insert(status);
                }
                Ok(Err(e)) => tracing::info!(interface = %iface.name(), "cannot connect: {e}"),
                Err(_) => tracing::warn!(
                    interface = %iface.name(),
                    "no connection within {limit:?}"
                ),
            }
        }
        let status = rejected.unwrap_or(STATUS_UNSPECIFIED_FAILURE);
        tracing::info!(ssid = %ssid, status, "guest connection failed");
        ConnectEnding {
            kind,
            auth: security.auth,
            end: ConnectEnd::Failed { status },
        }
    }

    /// A disconnect's reply when there is nothing to leave (a stale
    /// session, one never issued, no connection); `None`: the guest's
    /// connection is to be left.
    fn disconnect_without_leaving(&self, request: &DisconnectRequest) -> Option<Message> {
        if request.session_id < self.session_id {
            tracing::info!(
                session = request.session_id,
                current = self.session_id,
                "stale disconnect; nothing to do"
            );
            return Some(Message::DisconnectResponse);
        }
        // A session this host never issued: not the guest's connection (the
        // driver only sends ids it was given; after a host restart there is
        // no connection to lose either). The reply cannot say so (it is
        // empty by protocol); the log does.
        if request.session_id > self.session_id {
            tracing::info!(
                session = request.session_id,
                last_issued = self.session_id,
                "disconnect for a session this host never issued; nothing to do"
            );
            return Some(Message::DisconnectResponse);
        }
        if self.guest.is_none() {
            tracing::info!("disconnect while not connected; nothing to do");
            return Some(Message::DisconnectResponse);
        }
        None
    }

    async fn disconnect(&mut self, request: DisconnectRequest) -> Message {
        if let Some(reply) = self.disconnect_without_leaving(&request) {
            return reply;
        }
        let Some(guest) = self.guest.take() else {
            return Message::DisconnectResponse;
        };
        // Boxed, as the rare long part (see `on_request`).
        Box::pin(self.leave(guest)).await;
        Message::DisconnectResponse
    }

    /// A connect to the network the guest's own guest-directed connection
    /// holds (a re-association, a guest driver reload, a DISCONNECT that
    /// got lost). It is not mirroring: the connection stays guest-directed
    /// on the same interface, so the policy hold stays and the guest's
    /// disconnect still makes the host leave. With the same credentials
    /// (and no other BSSID asked for) the host's connection is kept as it
    /// is and the guest gets a new session id; otherwise the guest leaves
    /// it first (the host disconnects, as for a DISCONNECT) and the connect
    /// goes on as a new one. `None`: not such a connect.
    async fn connect_again_to_own_network(
        &mut self,
        request: &ConnectRequest,
        requested: Result<Security, ConnectRefusal>,
        deadline: Instant,
    ) -> Option<ConnectEnding> {
        let ssid = request.ssid;
        let own = self
            .guest
            .as_ref()
            .filter(|g| g.kind == ConnectionKind::GuestDirected && g.ssid == ssid)?;
        // Compared in place: the key is never copied for it.
        let same_credentials = match (&own.credentials, requested) {
            (Some((security, key)), Ok(asked)) => {
                *security == asked
                    && match key {
                        Some(key) => asked != Security::OPEN && *key == request.key,
                        None => asked == Security::OPEN,
                    }
            }
            _ => false,
        };
        let auth = own
            .credentials
            .as_ref()
            .map_or(AuthAlgorithm::Open, |c| c.0.auth);
        let own_interface = own.interface;
        let iface = self.interface(own_interface)?;
        // The interface may have left the network without the event having
        // been read yet: ask it.
        let network = Self::query_connection(&iface)
            .await
            .filter(|n| n.ssid == ssid)?;
        let same_bss = request
            .bssid
            .is_none_or(|b| b.is_zero() || b == network.bssid);
        let kind = ConnectionKind::GuestDirected;
        if !(same_credentials && same_bss) {
            tracing::info!(ssid = %ssid, interface = %iface.name(), "the guest connects again to its own network with other credentials or another BSS; leaving the old connection first");
            if let Some(guest) = self.guest.take() {
                self.leave(guest).await;
            }
            return None;
        }
        let end = match self.authorize_within(kind, ssid, deadline).await {
            Authorization::Approve => {
                tracing::info!(ssid = %ssid, interface = %iface.name(), "the guest connects again to its own guest-directed connection; keeping it");
                ConnectEnd::Joined {
                    interface: own_interface,
                    bssid: network.bssid,
                }
            }
            Authorization::Deny => {
                // The guest asked to connect and was refused: it has no
                // connection any more, and the host joined only for it.
                tracing::info!(ssid = %ssid, "the observer denied the connection; leaving the guest's connection");
                if let Some(guest) = self.guest.take() {
                    self.leave(guest).await;
                }
                ConnectEnd::Denied
            }
        };
        Some(ConnectEnding { kind, auth, end })
    }

    /// The guest leaves its connection: a guest-directed one makes the host
    /// interface disconnect; a mirrored one leaves the host as it is.
    async fn leave(&mut self, guest: GuestConnection) {
        let event = GuestDisconnect {
            kind: guest.kind,
            interface: guest.interface,
            ssid: guest.ssid,
        };
        self.observer
            .notify(ObserverEvent::GuestDisconnectRequested(event.clone()));
        if guest.kind == ConnectionKind::GuestDirected {
            match self.interface(guest.interface) {
                Some(iface) => {
                    match timeout(self.settings.disconnect_timeout, iface.disconnect()).await {
                        Ok(Ok(())) => {
                            tracing::info!(interface = %iface.name(), "guest disconnected the host");
                            self.host_disconnected(guest.interface);
                        }
                        Ok(Err(e)) => {
                            tracing::warn!(interface = %iface.name(), "disconnect failed: {e}")
                        }
                        Err(_) => tracing::warn!(
                            interface = %iface.name(),
                            "no disconnection within {:?}",
                            self.settings.disconnect_timeout
                        ),
                    }
                }
                None => {
                    tracing::info!(interface = %guest.interface, "the guest's interface is gone")
                }
            }
        } else {
            tracing::info!(ssid = %guest.ssid, "guest left a mirrored connection; the host stays connected");
        }
        self.observer
            .notify(ObserverEvent::GuestDisconnectCompleted(event));
    }
}
