//! What the D-Bus backends (NetworkManager, iwd) share: the bus connection,
//! following a service's bus name through bus restarts with the backend's
//! health ([`follow`]), its signal stream, D-Bus errors as
//! [`InterfaceError`]s, and one interface's service-independent logic
//! ([`station`]). The backends keep only their D-Bus calls.

pub(crate) mod follow;
pub(crate) mod station;

pub(crate) use follow::{follow, Backoff, BusLink, FollowedService, Following, Session};

use std::collections::HashMap;
use std::time::Duration;

use futures::StreamExt;
use zbus::fdo::NameOwnerChangedStream;
use zbus::message::Type as MessageType;
use zbus::names::{BusName, OwnedUniqueName, WellKnownName};
use zbus::zvariant::{ObjectPath, OwnedObjectPath, OwnedValue};
use zbus::{MatchRule, Message, MessageStream};

use crate::wifi::InterfaceError;

/// Which D-Bus bus to find the host's Wi-Fi service on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BusAddress {
    /// The system bus (`DBUS_SYSTEM_BUS_ADDRESS` when set, else the standard
    /// socket).
    System,
    /// An explicit bus address, e.g. `unix:path=/tmp/test-bus`.
    Address(String),
}

/// Namespace of the interface ids the D-Bus backends derive (a fixed random
/// UUID, so ids do not collide with anything derived from the same
/// strings). Never to change: ids are what observers know adapters by.
const INTERFACE_ID_NAMESPACE: uuid::Uuid =
    uuid::Uuid::from_u128(0x6f1c_2a4e_93d7_4b0a_9c1e_5d2b_7a80_41f3);

/// The stable id of a Wi-Fi adapter: a v5 UUID of its permanent hardware
/// address when the service knows one (NetworkManager's `PermHwAddress`,
/// iwd's `Address`), else of its interface name. Both backends derive it
/// alike, so an adapter keeps its id across them.
///
/// The permanent address belongs to the adapter: it survives reboots,
/// service restarts (which renumber object paths), interface renames and
/// MAC address randomisation (which changes NetworkManager's `HwAddress`,
/// never `PermHwAddress`). The interface name is the fallback for drivers
/// that report no permanent address.
pub fn interface_id(perm_hw_address: Option<&str>, interface: &str) -> uuid::Uuid {
    use std::str::FromStr;
    match perm_hw_address.and_then(|a| crate::protocol::MacAddr::from_str(a).ok()) {
        Some(mac) if !mac.is_zero() => {
            uuid::Uuid::new_v5(&INTERFACE_ID_NAMESPACE, format!("mac:{mac}").as_bytes())
        }
        _ => uuid::Uuid::new_v5(
            &INTERFACE_ID_NAMESPACE,
            format!("ifname:{interface}").as_bytes(),
        ),
    }
}

/// Why a D-Bus backend could not start.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// The bus could not be reached.
    #[error("cannot connect to the D-Bus bus: {0}")]
    Bus(#[source] zbus::Error),
    /// The bus refused a request every client may make.
    #[error("D-Bus request failed: {0}")]
    DBus(#[source] zbus::Error),
}

/// How many messages queue on a connection while its reader works: a scan
/// on a busy site changes hundreds of properties at once.
const QUEUE: usize = 4096;

/// Opens a bus connection whose method calls are bounded by `call_timeout`.
pub(crate) async fn connect(
    bus: &BusAddress,
    call_timeout: Duration,
) -> zbus::Result<zbus::Connection> {
    let builder = match bus {
        BusAddress::System => zbus::connection::Builder::system()?,
        BusAddress::Address(a) => zbus::connection::Builder::address(a.as_str())?,
    };
    builder
        .max_queued(QUEUE)
        .method_timeout(call_timeout)
        .build()
        .await
}

/// An uncached proxy of type `P` for the object at `path` of the service
/// at `destination` (a well-known or a unique name): every read asks the
/// service (its signals reach the backend through its own stream).
pub(crate) async fn proxy_at<P>(
    conn: &zbus::Connection,
    destination: BusName<'static>,
    path: &ObjectPath<'_>,
) -> zbus::Result<P>
where
    P: From<zbus::Proxy<'static>> + zbus::proxy::Defaults,
{
    zbus::proxy::Builder::<P>::new(conn)
        .destination(destination)?
        .path(path.to_owned())?
        .cache_properties(zbus::proxy::CacheProperties::No)
        .build()
        .await
}

/// `name` as a bus name.
pub(crate) fn bus_name(name: &'static str) -> BusName<'static> {
    BusName::from(WellKnownName::from_static_str_unchecked(name))
}

/// Follows the well-known bus name `name` on `conn`: the stream of owner
/// changes and the owner now. The stream is made first, so no change falls
/// between the two; it ends when the bus connection is lost.
pub(crate) async fn follow_name(
    conn: &zbus::Connection,
    name: &'static str,
) -> zbus::Result<(NameOwnerChangedStream, Option<OwnedUniqueName>)> {
    let dbus = zbus::fdo::DBusProxy::new(conn).await?;
    let owners = dbus
        .receive_name_owner_changed_with_args(&[(0, name)])
        .await?;
    let owner = dbus.get_name_owner(bus_name(name)).await.ok();
    Ok((owners, owner))
}

/// The new owner a `NameOwnerChanged` signal names (`None`: the name was
/// released); `Err` for a signal that does not parse.
pub(crate) fn new_owner(
    signal: &zbus::fdo::NameOwnerChanged,
) -> Result<Option<OwnedUniqueName>, zbus::Error> {
    let args = signal.args()?;
    Ok(args.new_owner().as_ref().map(|o| o.to_owned().into()))
}

/// Every signal `owner` sends (below `path_namespace`, if given), in order,
/// from now on.
pub(crate) async fn signals_from(
    conn: &zbus::Connection,
    owner: &OwnedUniqueName,
    path_namespace: Option<&'static str>,
) -> zbus::Result<MessageStream> {
    let mut rule = MatchRule::builder()
        .msg_type(MessageType::Signal)
        .sender(owner.clone())?;
    if let Some(ns) = path_namespace {
        rule = rule.path_namespace(ns)?;
    }
    MessageStream::for_match_rule(rule.build(), conn, Some(QUEUE)).await
}

/// One signal of a service, with what routing it needs.
pub(crate) struct Signal {
    /// The object that sent it.
    pub path: OwnedObjectPath,
    /// Its D-Bus interface.
    pub interface: String,
    /// Its name.
    pub member: String,
    /// The message, for its body.
    msg: Message,
}

/// The D-Bus properties interface, whose `PropertiesChanged` signal every
/// service sends.
const PROPERTIES_IFACE: &str = "org.freedesktop.DBus.Properties";

impl Signal {
    /// Its body as `T`; `None` when it is not one.
    pub(crate) fn body<T>(&self) -> Option<T>
    where
        T: serde::de::DeserializeOwned + zbus::zvariant::Type,
    {
        self.msg.body().deserialize::<T>().ok()
    }

    /// For a `PropertiesChanged` signal, the D-Bus interface whose
    /// properties changed and their new values.
    pub(crate) fn changed_properties(&self) -> Option<(String, HashMap<String, OwnedValue>)> {
        if (self.interface.as_str(), self.member.as_str())
            != (PROPERTIES_IFACE, "PropertiesChanged")
        {
            return None;
        }
        type Changed = (String, HashMap<String, OwnedValue>, Vec<String>);
        let (iface, changed, _) = self.body::<Changed>()?;
        Some((iface, changed))
    }
}

/// Hands every signal of `stream` to `route`, one at a time and in order,
/// until the stream ends (the bus connection was lost). `service` names the
/// service in the log.
pub(crate) async fn route_signals<F, Fut>(
    mut stream: MessageStream,
    service: &'static str,
    mut route: F,
) where
    F: FnMut(Signal) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    while let Some(signal) = next_signal(&mut stream).await {
        route(signal).await;
    }
    tracing::debug!("{service} signal stream ended");
}

/// The next signal on `stream` that names its object, interface and
/// member; `None` once the stream ended.
async fn next_signal(stream: &mut MessageStream) -> Option<Signal> {
    while let Some(msg) = stream.next().await {
        let Ok(msg) = msg else { continue };
        let header = msg.header();
        let (Some(path), Some(interface), Some(member)) =
            (header.path(), header.interface(), header.member())
        else {
            continue;
        };
        let (path, interface, member) = (
            path.to_owned().into(),
            interface.to_string(),
            member.to_string(),
        );
        return Some(Signal {
            path,
            interface,
            member,
            msg,
        });
    }
    None
}

/// The D-Bus error name of a failed call, if it was one.
pub(crate) fn error_name(e: &zbus::Error) -> Option<String> {
    match e {
        zbus::Error::MethodError(name, _, _) => Some(name.as_str().to_string()),
        zbus::Error::FDO(e) => Some(zbus::DBusError::name(&**e).to_string()),
        _ => None,
    }
}

/// A failed call `what` as an [`InterfaceError`]: the service gone from the
/// bus is `Unavailable`, the object gone is `Gone`, anything else the
/// service's own error.
pub(crate) fn call_error(what: &'static str, e: zbus::Error) -> InterfaceError {
    match error_name(&e).as_deref() {
        Some("org.freedesktop.DBus.Error.ServiceUnknown")
        | Some("org.freedesktop.DBus.Error.NameHasNoOwner")
        | Some("org.freedesktop.DBus.Error.NoReply") => {
            InterfaceError::Unavailable(format!("{what}: {e}"))
        }
        Some("org.freedesktop.DBus.Error.UnknownObject") => InterfaceError::Gone,
        _ => InterfaceError::HostServiceError {
            call: what,
            message: e.to_string(),
        },
    }
}
