//! The service for one guest: a transport, a handler, the host's Wi-Fi, the
//! client's fake networks and observer, started and stopped as one.
//!
//! ```no_run
//! # async fn demo() -> Result<(), proxy_wifi::service::ServiceError> {
//! use proxy_wifi::service::Service;
//! use proxy_wifi::transport::TransportConfig;
//! use proxy_wifi::wifi::simulated::SimulatedWifi;
//!
//! let service = Service::builder(
//!     TransportConfig::tcp("127.0.0.1".parse().unwrap()),
//!     SimulatedWifi::reference(),
//! )
//! .build();
//! service.start().await?;
//! // ... serve until told to stop ...
//! service.stop().await;
//! # Ok(()) }
//! ```
//!
//! Per guest request connection a task reads one message (under a 1 s read
//! deadline), hands it to the handler, writes the reply and closes, exactly
//! as the driver expects. A request that cannot be read or decoded is
//! answered INVALID and the service carries on. At most
//! [`MAX_CONNECTIONS_IN_FLIGHT`] request connections are served at once;
//! past that, new ones are closed at once (the guest reads that as INVALID)
//! and a warning is logged at most once a second.
//!
//! Notifications leave through one sender task: each is encoded first, then
//! a connection is opened and the whole message written at once, with
//! nothing awaited in between (the driver gives the connection 10 ms). Until
//! the first guest request has arrived, notifications are dropped: the guest
//! may not be listening yet. While a notification is being delivered (up to
//! the connect and write timeouts when the guest does not cooperate), the
//! next ones wait in a bounded queue that keeps only the latest
//! NOTIF_SIGNAL_QUALITY and, when full, gives up signal updates and partial
//! scan results before anything else: a NOTIF_DISCONNECTED or a completing
//! SCAN_RESPONSE is never dropped to make room for them.
//!
//! Many services (one per guest) may share one [`HostWifi`] backend.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, Mutex};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::{timeout, Instant};

use crate::handler::{
    self, HandlerClient, HandlerSettings, HandlerStatus, ReplyGate, REPLY_WRITE_WAIT,
};
use crate::metrics::Metrics;
use crate::observer::{Observer, ObserverQueue};
use crate::protocol::{Header, MacAddr, Message, Operation, Request, ScanLayout, Ssid};
use crate::transport::framing::{read_message, write_message, FrameError};
use crate::transport::{
    BoxStream, NotificationConnector, RequestListener, TransportConfig, TransportError,
};
use crate::wifi::{fake_networks, FakeNetworkProvider, HostWifi};

/// How long a guest connection may take to deliver its request.
pub const REQUEST_READ_TIMEOUT: Duration = Duration::from_secs(1);
/// How long writing a reply may take.
pub const REPLY_WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long opening a notification connection may take.
pub const NOTIFICATION_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// How long writing a notification may take.
pub const NOTIFICATION_WRITE_TIMEOUT: Duration = Duration::from_secs(1);
/// Notifications waiting for the sender; past it, the least important
/// waiting one is dropped with a warning (see the module notes).
pub const NOTIFICATION_QUEUE: usize = 64;
/// Guest request connections served at once. A driver never has more than
/// one request outstanding; past this, new connections are closed at once.
pub const MAX_CONNECTIONS_IN_FLIGHT: usize = 32;
/// At most one "too many connections" warning per interval.
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(1);
/// How long [`Service::stop`] lets in-flight requests finish before it
/// severs them. A request is bounded by the read deadline and the handler's
/// 10 s rules, so most finish well within it.
pub const STOP_GRACE: Duration = Duration::from_secs(5);

/// Why a service could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error("the service is already running")]
    AlreadyRunning,
}

/// Counters, for status output and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServiceStats {
    /// Guest requests received (including ones answered INVALID).
    pub requests: u64,
    /// Requests answered INVALID because they could not be read or decoded.
    pub invalid_requests: u64,
    pub notifications_sent: u64,
    /// Dropped: before the first request, the guest could not be reached,
    /// or the queue was backed up (an older signal update replaced by a
    /// newer one, or no room left).
    pub notifications_dropped: u64,
    /// Request connections closed unanswered because
    /// [`MAX_CONNECTIONS_IN_FLIGHT`] were already being served.
    pub refused_connections: u64,
}

#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    invalid_requests: AtomicU64,
    notifications_sent: AtomicU64,
    notifications_dropped: AtomicU64,
    refused_connections: AtomicU64,
    /// Prometheus metrics and this guest's name in them, when a daemon runs
    /// the service.
    metrics: Option<(Arc<Metrics>, String)>,
    /// The scan floor (`scan_min_latency`), a label of the latency metric.
    scan_floor: Duration,
}

impl Counters {
    fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn answered(&self, operation: Option<Operation>, reply: &Message, arrived: Instant) {
        if let Some((metrics, guest)) = &self.metrics {
            let result = match reply {
                Message::Invalid => "invalid",
                Message::ConnectResponse(r) if r.result_code != 0 => "failed",
                _ => "ok",
            };
            let floor = match operation {
                Some(Operation::ScanRequest) => self.scan_floor,
                _ => Duration::ZERO,
            };
            let operation = operation.map_or("unreadable", Operation::name);
            metrics.request(guest, operation, result, arrived.elapsed(), floor);
        }
    }

    fn connection_refused(&self) {
        Counters::bump(&self.refused_connections);
        if let Some((metrics, guest)) = &self.metrics {
            metrics.connection_refused(guest, "too_many_in_flight");
        }
    }

    /// Keeps the guest's `guest_connected` metric equal to the handler's
    /// view until the handler goes away. Wakes only when that view changes.
    fn follow_connection(
        &self,
        mut status: tokio::sync::watch::Receiver<HandlerStatus>,
    ) -> Option<JoinHandle<()>> {
        let (metrics, guest) = self.metrics.clone()?;
        Some(tokio::spawn(async move {
            loop {
                let connected = status.borrow_and_update().connection.is_some();
                metrics.set_guest_connected(&guest, connected);
                if status.changed().await.is_err() {
                    metrics.set_guest_connected(&guest, false);
                    return;
                }
            }
        }))
    }

    fn notification_sent(&self) {
        Counters::bump(&self.notifications_sent);
        if let Some((metrics, guest)) = &self.metrics {
            metrics.notification_sent(guest);
        }
    }

    fn notification_dropped(&self, reason: &str) {
        Counters::bump(&self.notifications_dropped);
        if let Some((metrics, guest)) = &self.metrics {
            metrics.notification_dropped(guest, reason);
        }
    }
}

/// Builds a [`Service`].
pub struct ServiceBuilder {
    transport: TransportConfig,
    backend: Arc<dyn HostWifi>,
    fake: Option<FakeNetworkProvider>,
    observer: Option<Arc<dyn Observer>>,
    settings: HandlerSettings,
    metrics: Option<(Arc<Metrics>, String)>,
}

impl ServiceBuilder {
    /// Records requests and notifications in `metrics` under `guest`.
    pub fn metrics(mut self, metrics: Arc<Metrics>, guest: impl Into<String>) -> ServiceBuilder {
        self.metrics = Some((metrics, guest.into()));
        self
    }

    /// Fake networks: a closure returning (SSID, BSSID) pairs, called at
    /// every scan and connect. They are shown as WPA2-PSK/CCMP on 5240 MHz
    /// at -50 dBm and are always connected.
    pub fn fake_networks(
        mut self,
        provider: impl Fn() -> Vec<(Ssid, MacAddr)> + Send + Sync + 'static,
    ) -> ServiceBuilder {
        self.fake = Some(Arc::new(provider));
        self
    }

    /// The client application's observer.
    pub fn observer(mut self, observer: Arc<dyn Observer>) -> ServiceBuilder {
        self.observer = Some(observer);
        self
    }

    pub fn settings(mut self, settings: HandlerSettings) -> ServiceBuilder {
        self.settings = settings;
        self
    }

    pub fn build(self) -> Service {
        let scan_floor = self.settings.scan_min_latency;
        Service {
            transport: self.transport,
            backend: self.backend,
            fake: self.fake,
            observer: self.observer,
            settings: self.settings,
            counters: Arc::new(Counters {
                metrics: self.metrics,
                scan_floor,
                ..Counters::default()
            }),
            running: Mutex::new(None),
        }
    }
}

struct Running {
    /// Tells the accept loop to stop accepting and drain.
    stop: tokio::sync::watch::Sender<bool>,
    /// The accept loop: it owns the listener and the in-flight connections.
    acceptor: JoinHandle<()>,
    tasks: Vec<JoinHandle<()>>,
    local_description: String,
    local_port: Option<u32>,
    /// The handler's view of the guest's connection.
    status: tokio::sync::watch::Receiver<HandlerStatus>,
}

/// The host service for one guest. Start, stop, start again.
pub struct Service {
    transport: TransportConfig,
    backend: Arc<dyn HostWifi>,
    fake: Option<FakeNetworkProvider>,
    observer: Option<Arc<dyn Observer>>,
    settings: HandlerSettings,
    counters: Arc<Counters>,
    running: Mutex<Option<Running>>,
}

impl Service {
    pub fn builder(transport: TransportConfig, backend: Arc<dyn HostWifi>) -> ServiceBuilder {
        ServiceBuilder {
            transport,
            backend,
            fake: None,
            observer: None,
            settings: HandlerSettings::default(),
            metrics: None,
        }
    }

    pub fn transport(&self) -> &TransportConfig {
        &self.transport
    }

    pub fn settings(&self) -> &HandlerSettings {
        &self.settings
    }

    /// The host backend.
    pub fn backend(&self) -> &Arc<dyn HostWifi> {
        &self.backend
    }

    /// Binds the transport and starts serving. Every start is a new guest
    /// session: the session counter starts again at 1.
    pub async fn start(&self) -> Result<(), ServiceError> {
        let mut running = self.running.lock().await;
        if running.is_some() {
            return Err(ServiceError::AlreadyRunning);
        }
        let endpoint = self.transport.bind_host().await?;
        let local_description = endpoint.listener.local_description();
        let local_port = endpoint.listener.local_port();

        let mut tasks = Vec::new();
        let (observer, observer_task) = ObserverQueue::start(self.observer.clone());
        tasks.extend(observer_task);
        let (notify_tx, notify_rx) = mpsc::channel(NOTIFICATION_QUEUE);
        let handler = handler::spawn(
            self.backend.clone(),
            self.fake.clone().map(fake_networks),
            observer,
            notify_tx,
            self.settings.clone(),
        );
        let guest_seen = Arc::new(AtomicBool::new(false));
        let layout = self.settings.scan_layout;
        tasks.push(tokio::spawn(run_notifier(
            notify_rx,
            endpoint.notifier,
            layout,
            guest_seen.clone(),
            self.counters.clone(),
            Some(handler.reply_gate.clone()),
        )));
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let acceptor = tokio::spawn(accept_loop(
            endpoint.listener,
            handler.client,
            layout,
            guest_seen,
            self.counters.clone(),
            stop_rx,
        ));
        tasks.push(handler.task);
        tasks.extend(self.counters.follow_connection(handler.status.clone()));
        tracing::info!("listening for guest requests on {local_description}");
        *running = Some(Running {
            stop,
            acceptor,
            tasks,
            local_description,
            local_port,
            status: handler.status,
        });
        Ok(())
    }

    /// Stops the service gracefully: stops accepting (a hybrid socket file
    /// is removed at once), lets in-flight requests finish for up to
    /// [`STOP_GRACE`], then severs what is left and stops the tasks.
    /// Stopping a stopped service does nothing; `start` may be called again.
    pub async fn stop(&self) {
        let Some(mut running) = self.running.lock().await.take() else {
            return;
        };
        let _ = running.stop.send(true);
        if timeout(STOP_GRACE, &mut running.acceptor).await.is_err() {
            running.acceptor.abort();
            let _ = running.acceptor.await;
        }
        for task in &running.tasks {
            task.abort();
        }
        for task in running.tasks {
            let _ = task.await;
        }
        if let Some((metrics, guest)) = &self.counters.metrics {
            metrics.set_guest_connected(guest, false);
        }
        tracing::info!(
            "stopped serving guest requests on {}",
            running.local_description
        );
    }

    pub async fn is_running(&self) -> bool {
        self.running.lock().await.is_some()
    }

    /// The request port actually bound (useful with port 0), while running.
    pub async fn request_port(&self) -> Option<u32> {
        self.running
            .lock()
            .await
            .as_ref()
            .and_then(|r| r.local_port)
    }

    /// Where requests are accepted, while running.
    pub async fn local_description(&self) -> Option<String> {
        self.running
            .lock()
            .await
            .as_ref()
            .map(|r| r.local_description.clone())
    }

    /// The guest's session id and connection, while running (never waits
    /// for a request in progress).
    pub async fn handler_status(&self) -> Option<HandlerStatus> {
        self.running
            .lock()
            .await
            .as_ref()
            .map(|r| r.status.borrow().clone())
    }

    pub fn stats(&self) -> ServiceStats {
        let c = &self.counters;
        ServiceStats {
            requests: c.requests.load(Ordering::Relaxed),
            invalid_requests: c.invalid_requests.load(Ordering::Relaxed),
            notifications_sent: c.notifications_sent.load(Ordering::Relaxed),
            notifications_dropped: c.notifications_dropped.load(Ordering::Relaxed),
            refused_connections: c.refused_connections.load(Ordering::Relaxed),
        }
    }
}

/// Encodes a message, falling back to INVALID if it cannot be encoded (the
/// handler only builds encodable messages; this is the last guard).
pub fn encode_or_invalid(message: &Message, layout: ScanLayout) -> Vec<u8> {
    match message.encode(layout) {
        Ok(bytes) => bytes,
        Err(e) => {
            tracing::error!(operation = %message.operation(), "cannot encode a reply ({e}); answering INVALID");
            crate::protocol::Header::new(crate::protocol::Operation::Invalid, 0)
                .encode()
                .to_vec()
        }
    }
}

async fn accept_loop(
    listener: Box<dyn RequestListener>,
    handler: HandlerClient,
    layout: ScanLayout,
    guest_seen: Arc<AtomicBool>,
    counters: Arc<Counters>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    // Dropping the set (when this task is aborted) aborts every connection.
    let mut connections = JoinSet::new();
    let mut refusals = RefusalLog::default();
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    // Reap finished connections first, so only live ones count.
                    while connections.try_join_next().is_some() {}
                    if connections.len() >= MAX_CONNECTIONS_IN_FLIGHT {
                        counters.connection_refused();
                        refusals.refused(&peer);
                        drop(stream);
                        continue;
                    }
                    tracing::trace!(%peer, "guest request connection");
                    connections.spawn(serve_connection(
                        stream,
                        handler.clone(),
                        layout,
                        guest_seen.clone(),
                        counters.clone(),
                    ));
                }
                Err(e) => {
                    tracing::warn!("accepting a guest connection failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    // Stop accepting before draining, so a hybrid socket file disappears now.
    drop(listener);
    if !connections.is_empty() {
        tracing::info!("finishing {} in-flight request(s)", connections.len());
    }
    while connections.join_next().await.is_some() {}
}

/// Logs refused connections, at most once per [`REFUSAL_LOG_INTERVAL`].
#[derive(Default)]
struct RefusalLog {
    last: Option<Instant>,
    suppressed: u64,
}

impl RefusalLog {
    fn refused(&mut self, peer: &str) {
        let now = Instant::now();
        if self
            .last
            .is_some_and(|last| now.duration_since(last) < REFUSAL_LOG_INTERVAL)
        {
            self.suppressed += 1;
            return;
        }
        tracing::warn!(
            %peer,
            suppressed = self.suppressed,
            "{MAX_CONNECTIONS_IN_FLIGHT} guest connections already in flight; closing a new one unanswered"
        );
        self.last = Some(now);
        self.suppressed = 0;
    }
}

/// Serves one guest request connection exactly as a running service does
/// (one request read under [`REQUEST_READ_TIMEOUT`], one reply, close), for
/// a handler the caller spawned. Fuzz targets and property tests drive the
/// request path through it over in-memory streams.
pub async fn serve_request_connection(
    stream: BoxStream,
    handler: HandlerClient,
    layout: ScanLayout,
) {
    serve_connection(
        stream,
        handler,
        layout,
        Arc::new(AtomicBool::new(false)),
        Arc::new(Counters::default()),
    )
    .await;
}

/// One request connection: read one message, answer it, close.
async fn serve_connection(
    mut stream: BoxStream,
    handler: HandlerClient,
    layout: ScanLayout,
    guest_seen: Arc<AtomicBool>,
    counters: Arc<Counters>,
) {
    let read = timeout(
        REQUEST_READ_TIMEOUT,
        read_message(&mut stream, Header::decode_request),
    )
    .await;
    let arrived = Instant::now();
    let mut operation = None;
    // Held until the reply is written: the notification sender waits for
    // it, so no notification can overtake this reply.
    let mut written_guard = None;
    let reply = match read {
        Ok(Ok((header, body))) => {
            Counters::bump(&counters.requests);
            guest_seen.store(true, Ordering::SeqCst);
            operation = Some(header.operation);
            match Request::decode_body(header.operation, &body) {
                Ok(request) => {
                    tracing::debug!(operation = %header.operation, "guest request");
                    let (reply, guard) = handler.request_until_written(request, arrived).await;
                    written_guard = Some(guard);
                    reply
                }
                Err(e) => {
                    Counters::bump(&counters.invalid_requests);
                    tracing::warn!(operation = %header.operation, "undecodable request ({e}); answering INVALID");
                    Message::Invalid
                }
            }
        }
        Ok(Err(FrameError::Closed)) => {
            tracing::debug!("a guest connection closed without a request");
            return;
        }
        Ok(Err(e)) => {
            Counters::bump(&counters.requests);
            Counters::bump(&counters.invalid_requests);
            guest_seen.store(true, Ordering::SeqCst);
            tracing::warn!("unreadable request ({e}); answering INVALID");
            Message::Invalid
        }
        Err(_) => {
            Counters::bump(&counters.invalid_requests);
            tracing::warn!(
                "no complete request within {REQUEST_READ_TIMEOUT:?}; answering INVALID"
            );
            Message::Invalid
        }
    };
    let bytes = encode_or_invalid(&reply, layout);
    let written = timeout(REPLY_WRITE_TIMEOUT, write_message(&mut stream, &bytes)).await;
    counters.answered(operation, &reply, arrived);
    match written {
        Ok(Ok(())) => {
            tracing::debug!(operation = %reply.operation(), bytes = bytes.len(), "reply sent");
            let _ = stream.shutdown().await;
        }
        Ok(Err(e)) => tracing::warn!("cannot write the reply: {e}"),
        Err(_) => tracing::warn!("writing the reply timed out"),
    }
    drop(written_guard);
}

/// How much a waiting notification matters when the queue is full: the
/// lowest goes first.
fn importance(message: &Message) -> u8 {
    match message {
        Message::NotifSignalQuality { .. } => 0,
        Message::ScanResponse(s) if !s.scan_complete => 1,
        // NOTIF_DISCONNECTED, a SCAN_RESPONSE that completes the guest's
        // scan, and anything else.
        _ => 2,
    }
}

/// Why a waiting notification was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum QueueDrop {
    /// A newer signal quality replaced it.
    Coalesced,
    /// The queue was full and it was the least important.
    Full,
}

impl QueueDrop {
    fn reason(self) -> &'static str {
        match self {
            QueueDrop::Coalesced => "coalesced",
            QueueDrop::Full => "queue_full",
        }
    }
}

/// The notifications waiting while one is being delivered: bounded, in
/// order, with only the latest signal quality kept.
struct PendingNotifications {
    queue: VecDeque<Message>,
    capacity: usize,
}

impl PendingNotifications {
    fn new(capacity: usize) -> PendingNotifications {
        PendingNotifications {
            queue: VecDeque::new(),
            capacity: capacity.max(1),
        }
    }

    /// Queues `message`; returns what was dropped to keep the bound, if
    /// anything (possibly `message` itself).
    fn push(&mut self, message: Message) -> Option<(Message, QueueDrop)> {
        let mut dropped = None;
        if matches!(message, Message::NotifSignalQuality { .. }) {
            // Only the latest value matters; it takes the place in line of
            // the moment it was measured.
            if let Some(i) = self
                .queue
                .iter()
                .position(|m| matches!(m, Message::NotifSignalQuality { .. }))
            {
                dropped = self.queue.remove(i).map(|m| (m, QueueDrop::Coalesced));
            }
        }
        if self.queue.len() >= self.capacity {
            let rank = importance(&message);
            // The oldest of the least important waiting ones, if it matters
            // no more than the newcomer; otherwise the newcomer goes.
            let victim = self
                .queue
                .iter()
                .enumerate()
                .filter(|(_, m)| importance(m) <= rank)
                .min_by_key(|(i, m)| (importance(m), *i))
                .map(|(i, _)| i);
            return match victim.and_then(|i| self.queue.remove(i)) {
                Some(old) => {
                    self.queue.push_back(message);
                    Some((old, QueueDrop::Full))
                }
                None => Some((message, QueueDrop::Full)),
            };
        }
        self.queue.push_back(message);
        dropped
    }

    fn pop(&mut self) -> Option<Message> {
        self.queue.pop_front()
    }
}

type Delivery = Pin<Box<dyn Future<Output = (Operation, std::io::Result<()>)> + Send>>;

async fn run_notifier(
    mut queue: mpsc::Receiver<Message>,
    connector: Arc<dyn NotificationConnector>,
    layout: ScanLayout,
    guest_seen: Arc<AtomicBool>,
    counters: Arc<Counters>,
    reply_gate: Option<Arc<ReplyGate>>,
) {
    let mut pending = PendingNotifications::new(NOTIFICATION_QUEUE);
    let mut delivering: Option<Delivery> = None;
    let mut open = true;
    loop {
        if delivering.is_none() {
            match pending.pop() {
                Some(message) => {
                    let operation = message.operation();
                    let bytes = encode_or_invalid(&message, layout);
                    let connector = connector.clone();
                    let gate = reply_gate.clone();
                    delivering = Some(Box::pin(async move {
                        // A reply handed over before this notification was
                        // produced goes out first (they use different
                        // connections). Encoding happened above; nothing
                        // is awaited between connect and write.
                        if let Some(gate) = gate {
                            gate.wait_clear(REPLY_WRITE_WAIT).await;
                        }
                        (operation, send_notification(&*connector, &bytes).await)
                    }));
                }
                None if !open => break,
                None => {}
            }
        }
        // Keep taking notifications from the handler while one is being
        // delivered, so a guest that does not cooperate never backs the
        // handler up; the bounded queue decides what waits.
        tokio::select! {
            received = queue.recv(), if open => match received {
                Some(message) => {
                    let operation = message.operation();
                    if !guest_seen.load(Ordering::SeqCst) {
                        counters.notification_dropped("no_guest_request_yet");
                        tracing::info!(%operation, "no guest request yet; dropping a notification");
                    } else if let Some((old, why)) = pending.push(message) {
                        counters.notification_dropped(why.reason());
                        match why {
                            QueueDrop::Coalesced => tracing::debug!("a newer signal quality replaces one still waiting"),
                            QueueDrop::Full => tracing::warn!(operation = %old.operation(), "notification queue full; dropping a notification"),
                        }
                    }
                }
                None => open = false,
            },
            (operation, result) = async {
                match delivering.as_mut() {
                    Some(delivery) => delivery.await,
                    None => std::future::pending().await,
                }
            }, if delivering.is_some() => {
                delivering = None;
                match result {
                    Ok(()) => {
                        counters.notification_sent();
                        tracing::debug!(%operation, "notification sent");
                    }
                    Err(e) => {
                        counters.notification_dropped("undeliverable");
                        tracing::warn!(%operation, to = %connector.describe(), "notification not delivered: {e}");
                    }
                }
            }
        }
    }
}

/// Opens a notification connection and writes `bytes` (a whole, already
/// encoded message) at once: nothing else is awaited between the connect
/// and the write, because the guest gives the connection 10 ms.
pub async fn send_notification(
    connector: &dyn NotificationConnector,
    bytes: &[u8],
) -> std::io::Result<()> {
    let mut stream = timeout(NOTIFICATION_CONNECT_TIMEOUT, connector.connect())
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))??;
    timeout(
        NOTIFICATION_WRITE_TIMEOUT,
        write_message(&mut stream, bytes),
    )
    .await
    .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "write timed out"))??;
    let _ = stream.shutdown().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wifi::simulated::SimulatedWifi;
    use std::io;
    use std::pin::Pin;
    use std::sync::Mutex as StdMutex;
    use std::task::{Context, Poll};

    use async_trait::async_trait;
    use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};

    /// A stream that records when, and how much, was written.
    struct Recording {
        log: Arc<StdMutex<Vec<(Instant, usize)>>>,
    }

    impl AsyncRead for Recording {
        fn poll_read(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            _: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    impl tokio::io::AsyncWrite for Recording {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.log.lock().unwrap().push((Instant::now(), buf.len()));
            Poll::Ready(Ok(buf.len()))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    /// A connector whose connect takes 30 ms of virtual time.
    struct SlowConnector {
        connected_at: Arc<StdMutex<Vec<Instant>>>,
        writes: Arc<StdMutex<Vec<(Instant, usize)>>>,
    }

    #[async_trait]
    impl NotificationConnector for SlowConnector {
        async fn connect(&self) -> io::Result<BoxStream> {
            tokio::time::sleep(Duration::from_millis(30)).await;
            self.connected_at.lock().unwrap().push(Instant::now());
            Ok(Box::new(Recording {
                log: self.writes.clone(),
            }))
        }
        fn describe(&self) -> String {
            "recording".into()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn notifications_are_written_whole_the_moment_the_connection_is_up() {
        let connector = Arc::new(SlowConnector {
            connected_at: Arc::default(),
            writes: Arc::default(),
        });
        let (tx, rx) = mpsc::channel(8);
        let seen = Arc::new(AtomicBool::new(false));
        let counters = Arc::new(Counters::default());
        let task = tokio::spawn(run_notifier(
            rx,
            connector.clone(),
            ScanLayout::Current,
            seen.clone(),
            counters.clone(),
            None,
        ));
        // Before the first request: dropped, no connection.
        tx.send(Message::NotifSignalQuality { dbm: -60 })
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(connector.connected_at.lock().unwrap().is_empty());
        assert_eq!(counters.notifications_dropped.load(Ordering::Relaxed), 1);

        seen.store(true, Ordering::SeqCst);
        let big = Message::NotifDisconnected { session_id: 7 };
        tx.send(Message::NotifSignalQuality { dbm: -60 })
            .await
            .unwrap();
        tx.send(big.clone()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let connected = connector.connected_at.lock().unwrap().clone();
        let writes = connector.writes.lock().unwrap().clone();
        assert_eq!(connected.len(), 2);
        // One write per message, the whole message, at the very instant the
        // connection came up (virtual time: any await in between that
        // waited would show).
        assert_eq!(
            writes,
            vec![
                (connected[0], 8),
                (connected[1], big.encode(ScanLayout::Current).unwrap().len())
            ]
        );
        assert_eq!(counters.notifications_sent.load(Ordering::Relaxed), 2);
        task.abort();
    }

    fn signal(dbm: i8) -> Message {
        Message::NotifSignalQuality { dbm }
    }

    fn scan(complete: bool) -> Message {
        Message::ScanResponse(crate::protocol::ScanResponse {
            scan_complete: complete,
            bss: Vec::new(),
        })
    }

    fn gone(session_id: u64) -> Message {
        Message::NotifDisconnected { session_id }
    }

    fn drain(p: &mut PendingNotifications) -> Vec<Message> {
        std::iter::from_fn(|| p.pop()).collect()
    }

    #[test]
    fn the_queue_keeps_only_the_latest_signal_in_order() {
        let mut p = PendingNotifications::new(8);
        assert_eq!(p.push(signal(-90)), None);
        assert_eq!(p.push(gone(1)), None);
        assert_eq!(
            p.push(signal(-80)),
            Some((signal(-90), QueueDrop::Coalesced))
        );
        assert_eq!(p.push(scan(false)), None);
        assert_eq!(
            p.push(signal(-70)),
            Some((signal(-80), QueueDrop::Coalesced))
        );
        assert_eq!(p.push(scan(true)), None);
        assert_eq!(
            drain(&mut p),
            vec![gone(1), scan(false), signal(-70), scan(true)]
        );
    }

    #[test]
    fn a_full_queue_gives_up_signal_and_partial_scans_first() {
        let mut p = PendingNotifications::new(4);
        for m in [gone(1), scan(true), gone(2), scan(true)] {
            assert_eq!(p.push(m), None);
        }
        // Full of essential ones: a signal update is the one dropped.
        assert_eq!(p.push(signal(-60)), Some((signal(-60), QueueDrop::Full)));
        // So is a partial scan.
        assert_eq!(p.push(scan(false)), Some((scan(false), QueueDrop::Full)));
        assert_eq!(
            drain(&mut p),
            vec![gone(1), scan(true), gone(2), scan(true)]
        );

        let mut p = PendingNotifications::new(4);
        for m in [scan(false), signal(-60), gone(1), scan(false)] {
            assert_eq!(p.push(m), None);
        }
        // An essential newcomer evicts the signal first, then the oldest
        // partial scan.
        assert_eq!(p.push(gone(2)), Some((signal(-60), QueueDrop::Full)));
        assert_eq!(p.push(scan(true)), Some((scan(false), QueueDrop::Full)));
        // A partial newcomer may evict an older partial, never an essential.
        assert_eq!(p.push(scan(false)), Some((scan(false), QueueDrop::Full)));
        assert_eq!(
            drain(&mut p),
            vec![gone(1), gone(2), scan(true), scan(false)]
        );
        // A signal newcomer replaces a waiting signal even when full.
        let mut p = PendingNotifications::new(2);
        assert_eq!(p.push(gone(1)), None);
        assert_eq!(p.push(signal(-90)), None);
        assert_eq!(
            p.push(signal(-50)),
            Some((signal(-90), QueueDrop::Coalesced))
        );
        assert_eq!(drain(&mut p), vec![gone(1), signal(-50)]);
    }

    /// A stream that keeps what is written to it.
    struct Capture(Arc<StdMutex<Vec<Vec<u8>>>>, Vec<u8>);

    impl AsyncRead for Capture {
        fn poll_read(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            _: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    impl tokio::io::AsyncWrite for Capture {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.1.extend_from_slice(buf);
            Poll::Ready(Ok(buf.len()))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            let bytes = std::mem::take(&mut self.1);
            self.0.lock().unwrap().push(bytes);
            Poll::Ready(Ok(()))
        }
    }

    /// A guest whose first notification connection never completes.
    struct StallsOnce {
        connects: AtomicU64,
        delivered: Arc<StdMutex<Vec<Vec<u8>>>>,
    }

    #[async_trait]
    impl NotificationConnector for StallsOnce {
        async fn connect(&self) -> io::Result<BoxStream> {
            if self.connects.fetch_add(1, Ordering::SeqCst) == 0 {
                std::future::pending::<()>().await;
            }
            Ok(Box::new(Capture(self.delivered.clone(), Vec::new())))
        }
        fn describe(&self) -> String {
            "stalls once".into()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_guest_backs_up_signal_updates_but_never_loses_a_disconnect() {
        let connector = Arc::new(StallsOnce {
            connects: AtomicU64::new(0),
            delivered: Arc::default(),
        });
        let (tx, rx) = mpsc::channel(NOTIFICATION_QUEUE);
        let counters = Arc::new(Counters::default());
        let task = tokio::spawn(run_notifier(
            rx,
            connector.clone(),
            ScanLayout::Current,
            Arc::new(AtomicBool::new(true)),
            counters.clone(),
            None,
        ));
        // The first one stalls in connect; meanwhile the handler keeps
        // producing far more than the queue holds, and never finds the
        // channel full.
        tx.try_send(signal(-100)).unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
        for i in 0..500u32 {
            tx.try_send(signal(-100 + (i % 50) as i8)).unwrap();
            if i == 100 {
                tx.try_send(gone(4)).unwrap();
            }
            if i == 200 {
                tx.try_send(scan(true)).unwrap();
            }
            tokio::task::yield_now().await;
        }
        tx.try_send(signal(-55)).unwrap();
        // The stalled delivery gives up at the connect timeout; the rest go.
        tokio::time::sleep(NOTIFICATION_CONNECT_TIMEOUT * 2).await;
        let delivered: Vec<Message> = connector
            .delivered
            .lock()
            .unwrap()
            .iter()
            .map(|b| Message::decode(b, ScanLayout::Current).unwrap())
            .collect();
        assert_eq!(delivered, vec![gone(4), scan(true), signal(-55)]);
        let stats = |c: &AtomicU64| c.load(Ordering::Relaxed);
        assert_eq!(stats(&counters.notifications_sent), 3);
        // 1 undeliverable, 500 signal updates replaced by a newer one.
        assert_eq!(stats(&counters.notifications_dropped), 501);
        drop(tx);
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_header_announcing_4_gib_is_refused_before_any_wait() {
        let wifi = SimulatedWifi::reference();
        let (notify, _rx) = mpsc::channel(4);
        let handler = handler::spawn(
            wifi,
            None,
            ObserverQueue::default(),
            notify,
            HandlerSettings::default(),
        );
        let (mut guest, host) = tokio::io::duplex(64);
        let started = Instant::now();
        let served = tokio::spawn(serve_request_connection(
            Box::new(host),
            handler.client.clone(),
            ScanLayout::Current,
        ));
        // CONNECT_REQUEST, size u32::MAX; the connection stays open.
        guest
            .write_all(&[3, 0xff, 0xff, 0xff, 0xff, 1, 0])
            .await
            .unwrap();
        let mut reply = [0u8; crate::protocol::HEADER_LEN];
        guest.read_exact(&mut reply).await.unwrap();
        assert_eq!(reply, [0, 0, 0, 0, 0, 1, 0]);
        // Virtual time: had it waited for a body, the read deadline would
        // have passed.
        assert_eq!(started.elapsed(), Duration::ZERO);
        served.await.unwrap();
        handler.task.abort();
    }

    #[tokio::test]
    async fn a_driver_like_reader_with_a_10_ms_timeout_gets_the_notification() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let connector = crate::transport::tcp::TcpConnector::new(address);
        let reader = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 8];
            // The driver's receive timeout, counted from accept.
            timeout(Duration::from_millis(10), s.read_exact(&mut buf))
                .await
                .expect("the notification came late")
                .unwrap();
            buf
        });
        let bytes = Message::NotifSignalQuality { dbm: -60 }
            .encode(ScanLayout::Current)
            .unwrap();
        send_notification(&connector, &bytes).await.unwrap();
        assert_eq!(reader.await.unwrap(), bytes);
    }

    #[test]
    fn unencodable_messages_become_invalid() {
        use crate::protocol::{ScanBss, ScanResponse};
        let bad = Message::ScanResponse(ScanResponse {
            scan_complete: true,
            bss: vec![ScanBss {
                bssid: MacAddr([1; 6]),
                capabilities: 1,
                rssi_dbm: -50,
                beacon_interval: 100,
                freq_khz: 1,
                ies: vec![0, 1, b'x'],
            }],
        });
        assert_eq!(
            encode_or_invalid(&bad, ScanLayout::Current),
            vec![0, 0, 0, 0, 0, 1, 0]
        );
    }

    #[tokio::test]
    async fn start_stop_start_and_port_in_use() {
        let config = TransportConfig::Tcp {
            address: "127.0.0.1".parse().unwrap(),
            request_port: 0,
            notification_port: 9,
        };
        let service = Service::builder(config, SimulatedWifi::reference()).build();
        service.start().await.unwrap();
        assert!(matches!(
            service.start().await,
            Err(ServiceError::AlreadyRunning)
        ));
        let port = service.request_port().await.unwrap();
        let scan = crate::protocol::Request::Scan(Default::default())
            .encode()
            .unwrap();
        let ask = |port: u32| {
            let scan = scan.clone();
            async move {
                let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port as u16)).await?;
                s.write_all(&scan).await?;
                let mut out = Vec::new();
                s.read_to_end(&mut out).await?;
                io::Result::Ok(out)
            }
        };
        let reply = ask(port).await.unwrap();
        assert!(matches!(
            Message::decode(&reply, ScanLayout::Current).unwrap(),
            Message::ScanResponse(s) if s.bss.len() == 3
        ));
        // Another service on the same port cannot start.
        let clash = Service::builder(
            TransportConfig::Tcp {
                address: "127.0.0.1".parse().unwrap(),
                request_port: port as u16,
                notification_port: 9,
            },
            SimulatedWifi::reference(),
        )
        .build();
        let err = clash.start().await.unwrap_err();
        assert!(err.to_string().contains("cannot listen"), "{err}");

        service.stop().await;
        assert!(ask(port).await.is_err(), "still listening after stop");
        service.start().await.unwrap();
        let port = service.request_port().await.unwrap();
        assert!(!ask(port).await.unwrap().is_empty());
        assert_eq!(service.stats().requests, 2);
        service.stop().await;
    }
}
