//! Following a D-Bus service for a backend's life, written once for both
//! D-Bus backends: the service's bus name (it appears, restarts, goes
//! away), the bus connection itself (lost when the bus daemon restarts:
//! made again with backoff, without end) and the backend's health
//! meanwhile ([`BackendHealth`]: `up`, `service-down`, `reconnecting`).
//!
//! A backend keeps its bus connection and health in a [`BusLink`],
//! implements [`FollowedService`] (how a session of the service starts and
//! stops, what a new connection needs, how a session start is retried) and
//! calls [`follow`]. The supervisor task that starts runs until the
//! backend's [`Following`] is stopped or dropped.
//!
//! Why never give up: one daemon serves many guests, whose listeners,
//! sessions and notification channels would all be torn down by exiting
//! and letting systemd restart it; the bus or the service coming back is an
//! event the backend handles by re-reading everything, as at start.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};
use zbus::fdo::NameOwnerChangedStream;
use zbus::names::OwnedUniqueName;

use super::{bus_name, connect, follow_name, new_owner, BusAddress, BusError};
use crate::wifi::BackendHealth;

/// Delays between attempts: `first`, doubling up to `max`, without end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Backoff {
    pub first: Duration,
    pub max: Duration,
}

impl Backoff {
    /// The delays, in order.
    pub(crate) fn delays(self) -> impl Iterator<Item = Duration> {
        std::iter::successors(Some(self.first.min(self.max)), move |d| {
            Some(d.saturating_mul(2).min(self.max))
        })
    }
}

/// How a lost bus connection is made again: at once, then after 0.25 s,
/// doubling to 10 s (a restarted bus daemon is usually back within a
/// second; a host without one for long is not flooded with attempts).
pub(crate) const RECONNECT: Backoff = Backoff {
    first: Duration::from_millis(250),
    max: Duration::from_secs(10),
};

/// After this many failed attempts at a session, a service that owns its
/// name and does not answer is worth a warning (before: debug).
const WARN_AFTER: u32 = 5;

/// A backend's bus connection, replaced when it is lost, and the backend's
/// health.
pub(crate) struct BusLink {
    address: BusAddress,
    call_timeout: Duration,
    conn: Mutex<zbus::Connection>,
    health: watch::Sender<BackendHealth>,
}

impl BusLink {
    /// Connects to the bus at `address` (method calls bounded by
    /// `call_timeout`); `service` names the service the health then says
    /// was not seen yet.
    pub(crate) async fn connect(
        address: BusAddress,
        call_timeout: Duration,
        service: &str,
    ) -> Result<BusLink, BusError> {
        let conn = connect(&address, call_timeout)
            .await
            .map_err(BusError::Bus)?;
        let (health, _) = watch::channel(BackendHealth::ServiceDown(format!(
            "{service} not seen yet"
        )));
        Ok(BusLink {
            address,
            call_timeout,
            conn: Mutex::new(conn),
            health,
        })
    }

    fn locked_conn(&self) -> MutexGuard<'_, zbus::Connection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The bus connection now.
    pub(crate) fn conn(&self) -> zbus::Connection {
        self.locked_conn().clone()
    }

    fn set_conn(&self, conn: zbus::Connection) {
        *self.locked_conn() = conn;
    }

    /// The backend's health, and its changes.
    pub(crate) fn health(&self) -> watch::Receiver<BackendHealth> {
        self.health.subscribe()
    }

    fn set_health(&self, health: BackendHealth) {
        set_health(&self.health, health);
    }
}

/// Sets the health; observers hear only of changes.
fn set_health(tx: &watch::Sender<BackendHealth>, health: BackendHealth) {
    tx.send_if_modified(|h| {
        let changed = *h != health;
        *h = health;
        changed
    });
}

/// A service followed while it owns its bus name.
pub(crate) struct Session<T> {
    /// The service's unique name.
    pub owner: OwnedUniqueName,
    /// The task routing its signals.
    pub dispatcher: JoinHandle<()>,
    /// What the backend keeps for this session.
    pub state: T,
}

/// What a D-Bus backend tells the supervisor about its service.
#[async_trait]
pub(crate) trait FollowedService: Send + Sync + Sized + 'static {
    /// What the backend keeps for a session.
    type State: Send + 'static;

    /// The service's well-known bus name.
    const BUS_NAME: &'static str;

    /// The service's name in logs and in the health.
    const NAME: &'static str;

    /// How a session start is retried while the service owns its name and
    /// does not answer.
    const START_RETRY: Backoff;

    /// The backend's bus connection and health.
    fn link(&self) -> &BusLink;

    /// Readies a new bus connection (the first one, and each one made after
    /// a loss) before the service is followed on it: e.g. exports objects
    /// the service calls. An error fails the start, or that reconnection
    /// attempt.
    async fn on_new_connection(me: &Arc<Self>, conn: &zbus::Connection) -> zbus::Result<()> {
        let _ = (me, conn);
        Ok(())
    }

    /// One attempt at following the service at `owner` on the current
    /// connection.
    async fn try_start_session(
        me: &Arc<Self>,
        owner: OwnedUniqueName,
    ) -> zbus::Result<Session<Self::State>>;

    /// Stops following a session: the service went away or restarted, the
    /// bus connection was lost, or the backend shuts down.
    async fn stop_session(&self, session: Session<Self::State>);
}

type SessionSlot<T> = Arc<tokio::sync::Mutex<Option<Session<T>>>>;

/// A backend's current session and the supervisor task that follows the
/// service; both stop when it is dropped.
pub(crate) struct Following<T> {
    session: SessionSlot<T>,
    supervisor: Mutex<Option<JoinHandle<()>>>,
}

impl<T> Following<T> {
    fn supervisor(&self) -> MutexGuard<'_, Option<JoinHandle<()>>> {
        self.supervisor.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stops the supervisor: the service is no longer followed.
    pub(crate) fn stop_supervisor(&self) {
        if let Some(s) = self.supervisor().take() {
            s.abort();
        }
    }

    /// Whether the service is followed now (it owns its name and answered).
    pub(crate) async fn is_up(&self) -> bool {
        self.session.lock().await.is_some()
    }

    /// Takes the current session, if any.
    pub(crate) async fn take(&self) -> Option<Session<T>> {
        self.session.lock().await.take()
    }
}

impl<T> Drop for Following<T> {
    fn drop(&mut self) {
        self.stop_supervisor();
        if let Ok(mut session) = self.session.try_lock() {
            if let Some(session) = session.take() {
                session.dispatcher.abort();
            }
        }
    }
}

/// Starts following `service` on its current connection: readies the
/// connection, makes the first attempt at a session here (so a running
/// service's interfaces are there when this returns; later attempts run in
/// the background) and starts the supervisor. Succeeds when the service is
/// absent; fails only when the bus refuses what every client may ask.
pub(crate) async fn follow<S: FollowedService>(
    service: &Arc<S>,
) -> Result<Following<S::State>, BusError> {
    let link = service.link();
    let conn = link.conn();
    S::on_new_connection(service, &conn)
        .await
        .map_err(BusError::DBus)?;
    let (owners, owner) = follow_name(&conn, S::BUS_NAME)
        .await
        .map_err(BusError::DBus)?;
    let session: SessionSlot<S::State> = Arc::new(tokio::sync::Mutex::new(None));
    let mut pending = None;
    match owner {
        Some(owner) => match S::try_start_session(service, owner.clone()).await {
            Ok(s) => {
                link.set_health(BackendHealth::Up);
                *session.lock().await = Some(s);
            }
            Err(e) => {
                debug!("{} not ready ({e}); retrying in the background", S::NAME);
                pending = Some(owner);
            }
        },
        None => service_absent::<S>(link),
    }
    let supervisor = tokio::spawn(supervise(service.clone(), session.clone(), owners, pending));
    Ok(Following {
        session,
        supervisor: Mutex::new(Some(supervisor)),
    })
}

/// The service does not own its name.
fn service_absent<S: FollowedService>(link: &BusLink) {
    warn!(
        "{} is not running; serving without host Wi-Fi until it appears",
        S::NAME
    );
    link.set_health(BackendHealth::ServiceDown(format!(
        "{} is not on the bus",
        S::NAME
    )));
}

/// Follows the service for the backend's life: owner changes (it appears,
/// restarts, goes away) and the bus connection itself (lost: made again
/// with backoff). `pending` is an owner to start a session with first.
async fn supervise<S: FollowedService>(
    service: Arc<S>,
    session: SessionSlot<S::State>,
    mut owners: NameOwnerChangedStream,
    mut pending: Option<OwnedUniqueName>,
) {
    loop {
        if let Some(owner) = pending.take() {
            let mut current = session.lock().await;
            if let Some(old) = current.take() {
                service.stop_session(old).await;
            }
            *current = start_session(&service, owner).await;
        }
        let Some(signal) = owners.next().await else {
            warn!("lost the D-Bus connection; reconnecting");
            if let Some(old) = session.lock().await.take() {
                service.stop_session(old).await;
            }
            (owners, pending) = reconnect(&service).await;
            continue;
        };
        let Ok(new_owner) = new_owner(&signal) else {
            continue;
        };
        match new_owner {
            Some(owner) => {
                if session
                    .lock()
                    .await
                    .as_ref()
                    .is_some_and(|s| s.owner == owner)
                {
                    continue;
                }
                info!("{} appeared on the bus", S::NAME);
                pending = Some(owner);
            }
            None => {
                if let Some(old) = session.lock().await.take() {
                    warn!(
                        "{} went away; host Wi-Fi interfaces are gone until it returns",
                        S::NAME
                    );
                    service.stop_session(old).await;
                }
                service
                    .link()
                    .set_health(BackendHealth::ServiceDown(format!(
                        "{} is not on the bus",
                        S::NAME
                    )));
            }
        }
    }
}

/// Makes the bus connection again (readied by
/// [`FollowedService::on_new_connection`]), retrying with [`RECONNECT`]
/// until it succeeds; the health says so meanwhile. Returns the new
/// connection's owner changes and the owner now.
async fn reconnect<S: FollowedService>(
    service: &Arc<S>,
) -> (NameOwnerChangedStream, Option<OwnedUniqueName>) {
    let link = service.link();
    let mut delays = RECONNECT.delays();
    let mut attempts: u32 = 0;
    let mut last_error = None;
    loop {
        link.set_health(BackendHealth::Reconnecting {
            attempts,
            last_error: last_error.clone(),
        });
        let attempt = async {
            let conn = connect(&link.address, link.call_timeout).await?;
            S::on_new_connection(service, &conn).await?;
            let (owners, owner) = follow_name(&conn, S::BUS_NAME).await?;
            Ok::<_, zbus::Error>((conn, owners, owner))
        };
        match attempt.await {
            Ok((conn, owners, owner)) => {
                link.set_conn(conn);
                info!("reconnected to the D-Bus bus after {attempts} failed attempt(s)");
                if owner.is_none() {
                    service_absent::<S>(link);
                }
                return (owners, owner);
            }
            Err(e) => {
                attempts = attempts.saturating_add(1);
                let delay = delays.next().unwrap_or(RECONNECT.max);
                if attempts == 1 {
                    warn!("cannot reconnect to the D-Bus bus ({e}); retrying with backoff");
                } else {
                    debug!("cannot reconnect to the D-Bus bus ({e}); retrying in {delay:?}");
                }
                last_error = Some(e.to_string());
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// Starts following the service at `owner`, retrying with
/// [`FollowedService::START_RETRY`] for as long as `owner` holds the
/// service's name; `None` once it no longer does (it went away or
/// restarted: the supervisor hears of that) or the bus connection is lost.
///
/// A service may take its bus name before it exports its objects; on a slow
/// or loaded host the gap was seen (NetworkManager, VM test) to last
/// several seconds, and a service stuck there is worth waiting for rather
/// than giving up on until it restarts. The health says what is going on
/// meanwhile.
async fn start_session<S: FollowedService>(
    service: &Arc<S>,
    owner: OwnedUniqueName,
) -> Option<Session<S::State>> {
    let link = service.link();
    let mut delays = S::START_RETRY.delays();
    let mut attempts: u32 = 0;
    loop {
        match S::try_start_session(service, owner.clone()).await {
            Ok(session) => {
                link.set_health(BackendHealth::Up);
                return Some(session);
            }
            Err(e) => {
                attempts = attempts.saturating_add(1);
                if !still_owner::<S>(&link.conn(), &owner).await {
                    debug!("{} {owner} no longer owns its name ({e})", S::NAME);
                    return None;
                }
                let delay = delays.next().unwrap_or(S::START_RETRY.max);
                if attempts == WARN_AFTER {
                    warn!(
                        "{} is on the bus but does not answer ({e}); still retrying",
                        S::NAME
                    );
                } else {
                    debug!("{} not ready ({e}); retrying in {delay:?}", S::NAME);
                }
                link.set_health(BackendHealth::ServiceDown(format!(
                    "{} does not answer yet: {e}",
                    S::NAME
                )));
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// Whether `owner` owns the service's name now (no: the bus says another,
/// none, or cannot be asked).
async fn still_owner<S: FollowedService>(conn: &zbus::Connection, owner: &OwnedUniqueName) -> bool {
    match zbus::fdo::DBusProxy::new(conn).await {
        Ok(dbus) => dbus
            .get_name_owner(bus_name(S::BUS_NAME))
            .await
            .is_ok_and(|o| *o == **owner),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_its_bound_and_never_ends() {
        let delays: Vec<Duration> = RECONNECT.delays().take(9).collect();
        let ms: Vec<u128> = delays.iter().map(Duration::as_millis).collect();
        assert_eq!(
            ms,
            [250, 500, 1000, 2000, 4000, 8000, 10000, 10000, 10000],
            "0.25 s doubling to 10 s"
        );
        let odd = Backoff {
            first: Duration::from_secs(3),
            max: Duration::from_secs(2),
        };
        assert_eq!(
            odd.delays().take(2).collect::<Vec<_>>(),
            [Duration::from_secs(2); 2],
            "never above the bound"
        );
        let huge = Backoff {
            first: Duration::MAX,
            max: Duration::MAX,
        };
        assert_eq!(huge.delays().nth(3), Some(Duration::MAX), "no overflow");
    }

    #[test]
    fn health_observers_hear_only_of_changes() {
        let (tx, mut health) = watch::channel(BackendHealth::ServiceDown("x".into()));
        health.borrow_and_update();
        set_health(&tx, BackendHealth::ServiceDown("x".into()));
        assert!(!health.has_changed().unwrap(), "the same health again");
        set_health(&tx, BackendHealth::Up);
        assert!(health.has_changed().unwrap());
        assert_eq!(*health.borrow_and_update(), BackendHealth::Up);
    }
}
