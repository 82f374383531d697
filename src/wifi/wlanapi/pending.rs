//! Waiting for WlanAPI notifications: a running host scan, a connection
//! attempt, a disconnection. WlanAPI calls return at once and report their
//! outcome later through the notification callback; these small types
//! pair the two up.

use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::protocol::Ssid;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // None of these states can be left half-updated by a panic.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A scan still marked running after this long is taken as lost (its
/// completion notification never came): the next scan starts afresh.
pub const SCAN_STALE_AFTER: Duration = Duration::from_secs(15);

/// What a scan request should do.
pub enum ScanStart<T> {
    /// No host scan was running: answer with the cached results and start
    /// one (call [`ScanTracker::start_failed`] if starting it fails).
    Started,
    /// A host scan is running: wait for its results.
    Wait(oneshot::Receiver<T>),
}

struct ScanState<T> {
    running_since: Option<Instant>,
    waiters: Vec<oneshot::Sender<T>>,
}

/// Tracks whether a host scan is running on one interface, and who waits
/// for its results.
pub struct ScanTracker<T> {
    state: Mutex<ScanState<T>>,
}

impl<T> Default for ScanTracker<T> {
    fn default() -> Self {
        ScanTracker {
            state: Mutex::new(ScanState {
                running_since: None,
                waiters: Vec::new(),
            }),
        }
    }
}

impl<T> ScanTracker<T> {
    pub fn begin(&self) -> ScanStart<T> {
        let mut s = lock(&self.state);
        let now = Instant::now();
        match s.running_since {
            Some(since) if now.duration_since(since) < SCAN_STALE_AFTER => {
                let (tx, rx) = oneshot::channel();
                s.waiters.push(tx);
                ScanStart::Wait(rx)
            }
            _ => {
                s.running_since = Some(now);
                ScanStart::Started
            }
        }
    }

    /// The host refused to start the scan: nothing is running.
    pub fn start_failed(&self) -> Vec<oneshot::Sender<T>> {
        self.finish()
    }

    /// A host scan ended (completed or failed, ours or not): nothing is
    /// running any more. Returns the waiters to hand the results to; none
    /// means nobody waited for these results.
    pub fn finish(&self) -> Vec<oneshot::Sender<T>> {
        let mut s = lock(&self.state);
        s.running_since = None;
        std::mem::take(&mut s.waiters)
    }

    /// Whether a host scan is running and not stale.
    #[cfg(test)]
    pub fn is_running(&self) -> bool {
        lock(&self.state)
            .running_since
            .is_some_and(|since| since.elapsed() < SCAN_STALE_AFTER)
    }
}

/// One connection attempt waiting for its `connection_complete`
/// notification, which carries the SSID and a WlanAPI reason code.
#[derive(Default)]
pub struct PendingConnect {
    slot: Mutex<Option<(Ssid, oneshot::Sender<u32>)>>,
}

impl PendingConnect {
    /// Arms the slot for `ssid`, replacing an older attempt (whose waiter
    /// then sees its channel closed).
    pub fn arm(&self, ssid: Ssid) -> oneshot::Receiver<u32> {
        let (tx, rx) = oneshot::channel();
        *lock(&self.slot) = Some((ssid, tx));
        rx
    }

    /// Delivers a completion. Returns whether it answered the armed attempt
    /// (a completion for another SSID belongs to someone else).
    pub fn complete(&self, ssid: Option<&Ssid>, reason: u32) -> bool {
        let mut slot = lock(&self.slot);
        let matches = match (slot.as_ref(), ssid) {
            (Some((want, _)), Some(got)) => want == got,
            // No SSID in the notification: it can only be ours.
            (Some(_), None) => true,
            (None, _) => false,
        };
        if !matches {
            return false;
        }
        match slot.take() {
            Some((_, tx)) => tx.send(reason).is_ok(),
            None => false,
        }
    }

    /// The SSID of the armed attempt, if one is waiting.
    pub fn armed(&self) -> Option<Ssid> {
        lock(&self.slot).as_ref().map(|(ssid, _)| *ssid)
    }

    /// Drops the armed attempt (the interface went away).
    pub fn cancel(&self) {
        lock(&self.slot).take();
    }
}

/// Callers waiting for one kind of event (a disconnection).
#[derive(Default)]
pub struct Waiters {
    list: Mutex<Vec<oneshot::Sender<()>>>,
}

impl Waiters {
    pub fn add(&self) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        lock(&self.list).push(tx);
        rx
    }

    pub fn wake_all(&self) {
        for tx in std::mem::take(&mut *lock(&self.list)) {
            let _ = tx.send(());
        }
    }

    /// Drops every waiter: they see their channel closed.
    pub fn cancel_all(&self) {
        lock(&self.list).clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn second_scan_waits_for_the_running_one() {
        let t: ScanTracker<u32> = ScanTracker::default();
        assert!(matches!(t.begin(), ScanStart::Started));
        assert!(t.is_running());
        let ScanStart::Wait(rx1) = t.begin() else {
            panic!("expected to wait")
        };
        let ScanStart::Wait(rx2) = t.begin() else {
            panic!("expected to wait")
        };
        let waiters = t.finish();
        assert_eq!(waiters.len(), 2);
        for w in waiters {
            w.send(7).unwrap();
        }
        assert_eq!(rx1.await.unwrap(), 7);
        assert_eq!(rx2.await.unwrap(), 7);
        assert!(!t.is_running());
        // Finished: the next scan starts one again, and a completion nobody
        // waited for has no waiters.
        assert!(t.finish().is_empty());
        assert!(matches!(t.begin(), ScanStart::Started));
    }

    #[tokio::test(start_paused = true)]
    async fn a_lost_scan_does_not_block_forever() {
        let t: ScanTracker<u32> = ScanTracker::default();
        assert!(matches!(t.begin(), ScanStart::Started));
        tokio::time::advance(SCAN_STALE_AFTER - Duration::from_millis(1)).await;
        assert!(matches!(t.begin(), ScanStart::Wait(_)));
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(!t.is_running());
        assert!(matches!(t.begin(), ScanStart::Started));
    }

    #[tokio::test]
    async fn failed_start_releases_waiters() {
        let t: ScanTracker<u32> = ScanTracker::default();
        assert!(matches!(t.begin(), ScanStart::Started));
        let ScanStart::Wait(rx) = t.begin() else {
            panic!("expected to wait")
        };
        let waiters = t.start_failed();
        drop(waiters);
        assert!(rx.await.is_err());
        assert!(!t.is_running());
    }

    #[tokio::test]
    async fn connect_completion_matches_ssid() {
        let p = PendingConnect::default();
        let a = Ssid::new(b"a").unwrap();
        let b = Ssid::new(b"b").unwrap();
        let rx = p.arm(a);
        assert!(!p.complete(Some(&b), 0));
        assert!(p.complete(Some(&a), 5));
        assert_eq!(rx.await.unwrap(), 5);
        assert!(!p.complete(Some(&a), 0), "slot is consumed");
        let rx = p.arm(a);
        assert!(p.complete(None, 0));
        assert_eq!(rx.await.unwrap(), 0);
        let old = p.arm(a);
        let _new = p.arm(b);
        assert!(old.await.is_err(), "a newer attempt replaces the old one");
        let rx = p.arm(a);
        p.cancel();
        assert!(rx.await.is_err());
    }

    #[tokio::test]
    async fn waiters_wake_or_cancel() {
        let w = Waiters::default();
        let a = w.add();
        let b = w.add();
        w.wake_all();
        assert!(a.await.is_ok() && b.await.is_ok());
        let c = w.add();
        w.cancel_all();
        assert!(c.await.is_err());
    }
}
