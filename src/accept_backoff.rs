//! What an accept loop does when `accept` fails: out of file descriptors
//! (EMFILE/ENFILE) is the usual cause, and it repeats until descriptors are
//! freed. Retrying at once would spin and log in a tight loop; this backs
//! off (10 ms doubling to 1 s, reset by the next success) and logs at most
//! one warning per [`LOG_INTERVAL`], with how many were suppressed.

use std::time::Duration;

use tokio::time::Instant;

/// At most one accept-failure warning per interval, per listener.
pub const LOG_INTERVAL: Duration = Duration::from_secs(10);
const FIRST_DELAY: Duration = Duration::from_millis(10);
const MAX_DELAY: Duration = Duration::from_secs(1);

/// Backoff and log throttling for one accept loop.
pub struct AcceptBackoff {
    what: &'static str,
    delay: Duration,
    last_log: Option<Instant>,
    suppressed: u64,
}

impl AcceptBackoff {
    /// `what` names the listener in the warning ("control socket").
    pub fn new(what: &'static str) -> AcceptBackoff {
        AcceptBackoff {
            what,
            delay: FIRST_DELAY,
            last_log: None,
            suppressed: 0,
        }
    }

    /// An accept succeeded: the next failure starts from the first delay.
    pub fn succeeded(&mut self) {
        self.delay = FIRST_DELAY;
    }

    /// An accept failed: logs (throttled) and waits before the next try.
    pub async fn failed(&mut self, error: &std::io::Error) {
        let now = Instant::now();
        let quiet = self
            .last_log
            .is_some_and(|last| now.duration_since(last) < LOG_INTERVAL);
        if quiet {
            self.suppressed += 1;
        } else {
            tracing::warn!(
                suppressed = self.suppressed,
                "{}: accept failed ({error}); backing off",
                self.what
            );
            self.last_log = Some(now);
            self.suppressed = 0;
        }
        tokio::time::sleep(self.delay).await;
        self.delay = (self.delay * 2).min(MAX_DELAY);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn backs_off_and_logs_once_per_interval() {
        let mut b = AcceptBackoff::new("test");
        let e = std::io::Error::from_raw_os_error(24);
        let start = Instant::now();
        for _ in 0..10 {
            b.failed(&e).await;
        }
        // 10+20+40+...+640 ms, then capped at 1 s: 1270 + 3 * 1000.
        assert_eq!(start.elapsed(), Duration::from_millis(4270));
        assert_eq!(b.suppressed, 9);
        b.succeeded();
        assert_eq!(b.delay, FIRST_DELAY);
    }
}
