//! The notification path: a bounded queue that coalesces signal updates
//! and never drops what the guest must see, and the sender that delivers
//! each notification on its own connection.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, watch};
use tokio::time::{timeout, Instant};
use tokio_util::sync::CancellationToken;

use super::counters::Counters;
use super::requests::encode_or_invalid;
use crate::handler::{HandlerStatus, ReplyGate, REPLY_WRITE_WAIT};
use crate::protocol::{Message, ScanLayout};
use crate::transport::framing::write_message;
use crate::transport::NotificationConnector;

/// How long opening a notification connection may take.
pub const NOTIFICATION_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// How long writing a notification may take.
pub const NOTIFICATION_WRITE_TIMEOUT: Duration = Duration::from_secs(1);
/// Notifications waiting for the sender; past it, the least important
/// waiting one is dropped with a warning (see the module notes).
pub const NOTIFICATION_QUEUE: usize = 64;
/// How long, by default, a notification is retried when the guest cannot be
/// reached (a paused VM, a live migration, a stopped VMM), counted from
/// when the handler produced it.
pub const DEFAULT_NOTIFICATION_DEADLINE: Duration = Duration::from_secs(60);
/// The pause after a first failed delivery; it doubles after every further
/// failure, up to [`NOTIFICATION_RETRY_MAX_PAUSE`].
pub const NOTIFICATION_RETRY_FIRST_PAUSE: Duration = Duration::from_millis(250);
/// The longest pause between two delivery attempts.
pub const NOTIFICATION_RETRY_MAX_PAUSE: Duration = Duration::from_secs(2);
/// A SCAN_RESPONSE notification is retried for at most this long (the
/// guest's own scan timer): delivered later, a completing one could finish
/// a newer guest scan with stale results (the hazard in the protocol
/// notes); dropped, the guest's timer finishes its scan.
pub const SCAN_NOTIFICATION_DEADLINE: Duration = Duration::from_secs(10);

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
/// order, with only the latest signal quality kept. Each is stamped with
/// when it was queued: its retry deadline counts from then.
struct PendingNotifications {
    queue: VecDeque<(Message, Instant)>,
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
        let now = Instant::now();
        let mut dropped = None;
        if matches!(message, Message::NotifSignalQuality { .. }) {
            // Only the latest value matters; it takes the place in line of
            // the moment it was measured.
            if let Some(i) = self
                .queue
                .iter()
                .position(|(m, _)| matches!(m, Message::NotifSignalQuality { .. }))
            {
                dropped = self.queue.remove(i).map(|(m, _)| (m, QueueDrop::Coalesced));
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
                .filter(|(_, (m, _))| importance(m) <= rank)
                .min_by_key(|(i, (m, _))| (importance(m), *i))
                .map(|(i, _)| i);
            return match victim.and_then(|i| self.queue.remove(i)) {
                Some((old, _)) => {
                    self.queue.push_back((message, now));
                    Some((old, QueueDrop::Full))
                }
                None => Some((message, QueueDrop::Full)),
            };
        }
        self.queue.push_back((message, now));
        dropped
    }

    fn pop(&mut self) -> Option<(Message, Instant)> {
        self.queue.pop_front()
    }

    fn has_signal(&self) -> bool {
        self.queue
            .iter()
            .any(|(m, _)| matches!(m, Message::NotifSignalQuality { .. }))
    }
}

type Delivery = Pin<Box<dyn Future<Output = std::io::Result<()>> + Send>>;

/// How undeliverable notifications are retried.
pub(super) struct Retry {
    /// How long after it was produced a notification is given up.
    pub(super) deadline: Duration,
    /// The handler's status: its session id tells which disconnects a newer
    /// connect superseded.
    pub(super) status: Option<watch::Receiver<HandlerStatus>>,
}

/// The notification being delivered, possibly again.
struct InFlight {
    message: Message,
    bytes: Vec<u8>,
    give_up_at: Instant,
    /// Attempts started so far.
    attempts: u32,
}

/// The pause after the `attempts`-th failed attempt.
fn retry_pause(attempts: u32) -> Duration {
    let doublings = attempts.saturating_sub(1).min(16);
    NOTIFICATION_RETRY_FIRST_PAUSE
        .saturating_mul(1 << doublings)
        .min(NOTIFICATION_RETRY_MAX_PAUSE)
}

/// Why a notification no longer needs to reach the guest, if it does not.
fn superseded(
    message: &Message,
    pending: &PendingNotifications,
    status: Option<&watch::Receiver<HandlerStatus>>,
) -> Option<&'static str> {
    match message {
        // The guest was answered a newer connect: this disconnect is about
        // a connection it no longer has.
        Message::NotifDisconnected { session_id }
            if status.is_some_and(|s| s.borrow().session_id > *session_id) =>
        {
            Some("the guest connected again since")
        }
        Message::NotifSignalQuality { .. } if pending.has_signal() => {
            Some("a newer signal quality waits")
        }
        _ => None,
    }
}

/// Delivers the handler's notifications until the handler is gone and the
/// queue is empty, or until `shutdown` (what is still waiting then is
/// dropped: the guest's session is over).
// Each argument is one independent input of the sender; a struct holding
// them would only be built here.
#[allow(clippy::too_many_arguments)]
pub(super) async fn run_notifier(
    mut queue: mpsc::Receiver<Message>,
    connector: Arc<dyn NotificationConnector>,
    layout: ScanLayout,
    guest_seen: Arc<AtomicBool>,
    counters: Arc<Counters>,
    reply_gate: Option<Arc<ReplyGate>>,
    retry: Retry,
    shutdown: CancellationToken,
) {
    let mut pending = PendingNotifications::new(NOTIFICATION_QUEUE);
    let mut current: Option<InFlight> = None;
    // The running attempt, or the pause before the next one.
    let mut attempt: Option<Delivery> = None;
    let mut pause: Option<Pin<Box<tokio::time::Sleep>>> = None;
    let mut open = true;
    loop {
        if current.is_none() {
            match pending.pop() {
                Some((message, queued)) => {
                    // Encoded once: every attempt writes the same bytes.
                    let bytes = encode_or_invalid(&message, layout);
                    let deadline = match message {
                        Message::ScanResponse(_) => retry.deadline.min(SCAN_NOTIFICATION_DEADLINE),
                        _ => retry.deadline,
                    };
                    current = Some(InFlight {
                        message,
                        bytes,
                        give_up_at: queued + deadline,
                        attempts: 0,
                    });
                }
                None if !open => break,
                None => {}
            }
        }
        if let Some(inflight) = current
            .as_mut()
            .filter(|_| attempt.is_none() && pause.is_none())
        {
            let operation = inflight.message.operation();
            if let Some(why) = superseded(&inflight.message, &pending, retry.status.as_ref()) {
                counters.notification_dropped("superseded");
                tracing::debug!(%operation, "dropping a notification: {why}");
                current = None;
                continue;
            }
            inflight.attempts += 1;
            if inflight.attempts > 1 {
                counters.notification_retry();
                tracing::debug!(%operation, attempt = inflight.attempts, "delivering a notification again");
            }
            let bytes = inflight.bytes.clone();
            let connector = connector.clone();
            let gate = reply_gate.clone();
            attempt = Some(Box::pin(async move {
                // A reply handed over before this notification was
                // produced goes out first (they use different
                // connections). Encoding happened above; nothing is
                // awaited between connect and write.
                if let Some(gate) = gate {
                    gate.wait_clear(REPLY_WRITE_WAIT).await;
                }
                send_notification(&*connector, &bytes).await
            }));
        }
        // Keep taking notifications from the handler while one is being
        // delivered or waits to be retried, so a guest that does not
        // cooperate never backs the handler up; the bounded queue decides
        // what waits.
        tokio::select! {
            _ = shutdown.cancelled() => {
                let waiting = pending.queue.len() + usize::from(current.is_some());
                if waiting > 0 {
                    tracing::debug!(waiting, "stopping; dropping the notifications not yet delivered");
                }
                break;
            }
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
            result = async {
                match attempt.as_mut() {
                    Some(delivery) => delivery.await,
                    None => std::future::pending().await,
                }
            }, if attempt.is_some() => {
                attempt = None;
                let Some(inflight) = current.take() else { continue };
                let operation = inflight.message.operation();
                match result {
                    Ok(()) => {
                        counters.notification_sent();
                        tracing::debug!(%operation, attempts = inflight.attempts, "notification sent");
                    }
                    Err(e) => {
                        let wait = retry_pause(inflight.attempts);
                        if Instant::now() + wait > inflight.give_up_at {
                            counters.notification_given_up();
                            tracing::warn!(
                                %operation,
                                to = %connector.describe(),
                                attempts = inflight.attempts,
                                "notification not delivered within {:?}; giving up: {e}",
                                retry.deadline
                            );
                        } else {
                            if inflight.attempts == 1 {
                                tracing::info!(%operation, to = %connector.describe(), "the guest cannot take a notification ({e}); retrying for up to {:?}", retry.deadline);
                            } else {
                                tracing::debug!(%operation, attempts = inflight.attempts, "notification still not delivered: {e}");
                            }
                            pause = Some(Box::pin(tokio::time::sleep(wait)));
                            current = Some(inflight);
                        }
                    }
                }
            }
            () = async {
                match pause.as_mut() {
                    Some(p) => p.await,
                    None => std::future::pending().await,
                }
            }, if pause.is_some() => {
                pause = None;
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
#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::BoxStream;
    use std::io;
    use std::pin::Pin;
    use std::sync::atomic::AtomicU64;
    use std::sync::Mutex as StdMutex;
    use std::task::{Context, Poll};
    use tokio::task::JoinHandle;

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
        let counters = Arc::new(Counters::new(None, std::time::Duration::ZERO));
        let task = tokio::spawn(run_notifier(
            rx,
            connector.clone(),
            ScanLayout::Current,
            seen.clone(),
            counters.clone(),
            None,
            Retry {
                deadline: Duration::ZERO,
                status: None,
            },
            CancellationToken::new(),
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
        std::iter::from_fn(|| p.pop().map(|(m, _)| m)).collect()
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
        let counters = Arc::new(Counters::new(None, std::time::Duration::ZERO));
        let task = tokio::spawn(run_notifier(
            rx,
            connector.clone(),
            ScanLayout::Current,
            Arc::new(AtomicBool::new(true)),
            counters.clone(),
            None,
            Retry {
                deadline: Duration::ZERO,
                status: None,
            },
            CancellationToken::new(),
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

    /// A guest that cannot be reached until `until` (virtual time): every
    /// connect before then fails after `fail_after`.
    struct PausedUntil {
        until: Instant,
        fail_after: Duration,
        connects: AtomicU64,
        delivered: Arc<StdMutex<Vec<Vec<u8>>>>,
    }

    #[async_trait]
    impl NotificationConnector for PausedUntil {
        async fn connect(&self) -> io::Result<BoxStream> {
            self.connects.fetch_add(1, Ordering::SeqCst);
            if Instant::now() < self.until {
                tokio::time::sleep(self.fail_after).await;
                return Err(io::Error::new(io::ErrorKind::TimedOut, "paused"));
            }
            Ok(Box::new(Capture(self.delivered.clone(), Vec::new())))
        }
        fn describe(&self) -> String {
            "paused".into()
        }
    }

    fn paused_for(pause: Duration) -> Arc<PausedUntil> {
        Arc::new(PausedUntil {
            until: Instant::now() + pause,
            fail_after: NOTIFICATION_CONNECT_TIMEOUT,
            connects: AtomicU64::new(0),
            delivered: Arc::default(),
        })
    }

    fn delivered(c: &PausedUntil) -> Vec<Message> {
        c.delivered
            .lock()
            .unwrap()
            .iter()
            .map(|b| Message::decode(b, ScanLayout::Current).unwrap())
            .collect()
    }

    fn start(
        connector: Arc<PausedUntil>,
        deadline: Duration,
        status: Option<watch::Receiver<HandlerStatus>>,
    ) -> (mpsc::Sender<Message>, Arc<Counters>, JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(NOTIFICATION_QUEUE);
        let counters = Arc::new(Counters::new(None, std::time::Duration::ZERO));
        let task = tokio::spawn(run_notifier(
            rx,
            connector,
            ScanLayout::Current,
            Arc::new(AtomicBool::new(true)),
            counters.clone(),
            None,
            Retry { deadline, status },
            CancellationToken::new(),
        ));
        (tx, counters, task)
    }

    #[test]
    fn retry_pauses_double_up_to_two_seconds() {
        let pauses: Vec<u128> = (1..=6).map(|n| retry_pause(n).as_millis()).collect();
        assert_eq!(pauses, vec![250, 500, 1000, 2000, 2000, 2000]);
        assert_eq!(retry_pause(u32::MAX), NOTIFICATION_RETRY_MAX_PAUSE);
    }

    #[tokio::test(start_paused = true)]
    async fn a_paused_guest_gets_its_notifications_in_order_once_it_runs() {
        let guest = paused_for(Duration::from_secs(3));
        let (tx, counters, task) = start(guest.clone(), Duration::from_secs(60), None);
        tx.send(gone(3)).await.unwrap();
        tx.send(scan(true)).await.unwrap();
        for dbm in [-70, -60, -50] {
            tx.send(signal(dbm)).await.unwrap();
        }
        tokio::time::sleep(Duration::from_secs(10)).await;
        // In order; only the latest signal.
        assert_eq!(delivered(&guest), vec![gone(3), scan(true), signal(-50)]);
        // t=0 fails at 1 s, 1.25 fails at 2.25, 2.75 fails at 3.75 (the
        // connect began while paused), 4.75 goes through.
        assert_eq!(guest.connects.load(Ordering::SeqCst), 4 + 2);
        let stats = |c: &AtomicU64| c.load(Ordering::Relaxed);
        assert_eq!(stats(&counters.notification_retries), 3);
        assert_eq!(stats(&counters.notifications_sent), 3);
        assert_eq!(stats(&counters.notifications_given_up), 0);
        // Two signal updates replaced by a newer one.
        assert_eq!(stats(&counters.notifications_dropped), 2);
        drop(tx);
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_notification_is_given_up_at_its_deadline() {
        let guest = paused_for(Duration::from_secs(3600));
        let (tx, counters, task) = start(guest.clone(), Duration::from_secs(5), None);
        let started = Instant::now();
        tx.send(gone(1)).await.unwrap();
        drop(tx);
        task.await.unwrap();
        // Attempts at 0, 1.25, 2.75, 4.75 (each failing 1 s later); the next
        // pause (2 s) would end past the 5 s deadline.
        assert_eq!(guest.connects.load(Ordering::SeqCst), 4);
        assert_eq!(started.elapsed(), Duration::from_millis(5750));
        let stats = |c: &AtomicU64| c.load(Ordering::Relaxed);
        assert_eq!(stats(&counters.notifications_given_up), 1);
        assert_eq!(stats(&counters.notification_retries), 3);
        assert_eq!(stats(&counters.notifications_dropped), 1);
        assert!(delivered(&guest).is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn scan_results_are_retried_only_within_the_guests_scan_wait() {
        let guest = paused_for(Duration::from_secs(3600));
        let (tx, counters, task) = start(guest.clone(), Duration::from_secs(60), None);
        let started = Instant::now();
        tx.send(scan(true)).await.unwrap();
        drop(tx);
        task.await.unwrap();
        assert!(started.elapsed() <= SCAN_NOTIFICATION_DEADLINE + NOTIFICATION_CONNECT_TIMEOUT);
        assert_eq!(counters.notifications_given_up.load(Ordering::Relaxed), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_newer_connect_or_signal_supersedes_what_is_being_retried() {
        let guest = paused_for(Duration::from_secs(3));
        let (status_tx, status) = watch::channel(HandlerStatus {
            session_id: 4,
            connection: None,
        });
        let (tx, counters, task) = start(guest.clone(), Duration::from_secs(60), Some(status));
        tx.send(gone(4)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(1100)).await;
        // While it waits to be retried, the guest connects again (session 5)
        // and a signal update comes, then a newer one.
        status_tx.send_modify(|s| s.session_id = 5);
        tx.send(signal(-70)).await.unwrap();
        tx.send(signal(-40)).await.unwrap();
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(delivered(&guest), vec![signal(-40)]);
        let stats = |c: &AtomicU64| c.load(Ordering::Relaxed);
        // The stale disconnect and the older signal.
        assert_eq!(stats(&counters.notifications_dropped), 2);
        assert_eq!(stats(&counters.notifications_given_up), 0);
        drop(tx);
        task.await.unwrap();
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
}
