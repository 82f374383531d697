//! The notification side: the host connects to the guest for every
//! notification and writes one message.

use std::time::Duration;

use super::error::{GuestError, Violation};
use crate::protocol::{Header, Message, Operation, ScanLayout, ScanResponse};
use crate::transport::framing::read_message;
use crate::transport::{NotificationListener, TransportConfig};

/// How long the driver waits for a notification's bytes after accepting
/// the connection.
pub const DRIVER_NOTIFICATION_READ_TIMEOUT: Duration = Duration::from_millis(10);

/// How long the watcher waits by default: longer than the driver, so a
/// loaded machine does not lose notifications; set
/// [`DRIVER_NOTIFICATION_READ_TIMEOUT`] to judge a host as the driver would.
pub const DEFAULT_NOTIFICATION_READ_TIMEOUT: Duration = Duration::from_secs(1);

/// A notification from the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notification {
    /// The host ended the guest's connection with this session id.
    Disconnected {
        /// The session that ended.
        session_id: u64,
    },
    /// The signal of the guest's connection changed.
    SignalQuality {
        /// The new signal strength in dBm.
        dbm: i8,
    },
    /// Scan results the guest did not wait for, or that finish a scan the
    /// host reported as still running (`scan_complete`).
    ScanResults(ScanResponse),
}

/// Listens on the guest's notification port and yields each notification.
///
/// A malformed notification yields an error for that one connection; the
/// next call to [`NotificationWatcher::next`] accepts the next connection.
pub struct NotificationWatcher {
    listener: Box<dyn NotificationListener>,
    layout: ScanLayout,
    read_timeout: Duration,
}

impl NotificationWatcher {
    /// Binds the guest's notification listener of `config`.
    pub async fn bind(
        config: &TransportConfig,
        layout: ScanLayout,
    ) -> Result<NotificationWatcher, GuestError> {
        let listener = config.bind_guest_notifications().await?;
        Ok(NotificationWatcher::from_listener(listener, layout))
    }

    /// A watcher over any listener (tests, custom transports).
    pub fn from_listener(
        listener: Box<dyn NotificationListener>,
        layout: ScanLayout,
    ) -> NotificationWatcher {
        NotificationWatcher {
            listener,
            layout,
            read_timeout: DEFAULT_NOTIFICATION_READ_TIMEOUT,
        }
    }

    /// How long a notification connection may take to deliver its message.
    pub fn read_timeout(mut self, limit: Duration) -> NotificationWatcher {
        self.read_timeout = limit;
        self
    }

    /// Where it listens, for messages.
    pub fn local_description(&self) -> String {
        self.listener.local_description()
    }

    /// The port bound (useful with port 0).
    pub fn local_port(&self) -> Option<u32> {
        self.listener.local_port()
    }

    /// Waits for the next notification connection and reads its message.
    pub async fn next(&self) -> Result<Notification, GuestError> {
        let mut stream = self
            .listener
            .accept()
            .await
            .map_err(GuestError::NotificationIo)?;
        let frame = tokio::time::timeout(
            self.read_timeout,
            read_message(&mut stream, Header::decode_host),
        )
        .await
        .map_err(|_| GuestError::NotificationTimeout {
            limit: self.read_timeout,
        })?;
        let (header, body) = frame.map_err(|e| match Violation::from_frame(e) {
            Ok(v) => GuestError::MalformedNotification(v),
            Err(io) => GuestError::NotificationIo(io),
        })?;
        match header.operation {
            Operation::NotifDisconnected
            | Operation::NotifSignalQuality
            | Operation::ScanResponse => {}
            got => return Err(GuestError::MalformedNotification(
                Violation::WrongOperation {
                    expected:
                        "a notification (scan_response, notif_disconnected or notif_signal_quality)"
                            .into(),
                    got,
                },
            )),
        }
        let message = Message::decode_body(header.operation, &body, self.layout)
            .map_err(|e| GuestError::MalformedNotification(Violation::Body(e)))?;
        Ok(match message {
            Message::NotifDisconnected { session_id } => Notification::Disconnected { session_id },
            Message::NotifSignalQuality { dbm } => Notification::SignalQuality { dbm },
            Message::ScanResponse(scan) => Notification::ScanResults(scan),
            other => {
                return Err(GuestError::MalformedNotification(
                    Violation::WrongOperation {
                        expected: "a notification".into(),
                        got: other.operation(),
                    },
                ))
            }
        })
    }
}
