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
use tokio::sync::mpsc;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

use super::counters::Counters;
use super::requests::encode_or_invalid;
use crate::handler::{ReplyGate, REPLY_WRITE_WAIT};
use crate::protocol::{Message, Operation, ScanLayout};
use crate::transport::framing::write_message;
use crate::transport::NotificationConnector;

/// How long opening a notification connection may take.
pub const NOTIFICATION_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// How long writing a notification may take.
pub const NOTIFICATION_WRITE_TIMEOUT: Duration = Duration::from_secs(1);
/// Notifications waiting for the sender; past it, the least important
/// waiting one is dropped with a warning (see the service's notes).
pub const NOTIFICATION_QUEUE: usize = 64;

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

/// Delivers the handler's notifications until the handler is gone and the
/// queue is empty, or until `shutdown` (what is still waiting then is
/// dropped: the guest's session is over).
pub(super) async fn run_notifier(
    mut queue: mpsc::Receiver<Message>,
    connector: Arc<dyn NotificationConnector>,
    layout: ScanLayout,
    guest_seen: Arc<AtomicBool>,
    counters: Arc<Counters>,
    reply_gate: Option<Arc<ReplyGate>>,
    shutdown: CancellationToken,
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
            _ = shutdown.cancelled() => {
                let waiting = pending.queue.len() + usize::from(delivering.is_some());
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
    use std::io;
    use std::sync::atomic::AtomicU64;
    use std::sync::Mutex as StdMutex;
    use std::task::{Context, Poll};

    use async_trait::async_trait;
    use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};
    use tokio::time::Instant;

    use crate::transport::BoxStream;

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
        let counters = Arc::new(Counters::new(None));
        let task = tokio::spawn(run_notifier(
            rx,
            connector.clone(),
            ScanLayout::Current,
            seen.clone(),
            counters.clone(),
            None,
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
        let counters = Arc::new(Counters::new(None));
        let task = tokio::spawn(run_notifier(
            rx,
            connector.clone(),
            ScanLayout::Current,
            Arc::new(AtomicBool::new(true)),
            counters.clone(),
            None,
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
