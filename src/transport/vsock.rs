//! AF_VSOCK (Linux hosts running QEMU/KVM with vhost-vsock, crosvm; and the
//! guest side of any of them).
//!
//! Host: listens on (any local CID, request port) and accepts only
//! connections whose peer CID is the configured guest's; any other VM's
//! connection is closed and logged, never handed to the service.
//! Notifications connect to (guest CID, notification port).
//!
//! Guest: requests connect to (host CID, request port); notifications are
//! accepted on (any CID, notification port) from the host CID alone.
//!
//! Streams are the bare sockets (vsock has no Nagle-style delay), so a
//! message written on a fresh notification connection leaves at once.

use std::io;
use std::sync::Arc;

use async_trait::async_trait;
use tokio_vsock::{VsockAddr, VsockListener, VsockStream, VMADDR_CID_ANY};

use super::{
    BoxStream, HostEndpoint, NotificationConnector, NotificationListener, RequestConnector,
    RequestListener, TransportError,
};

/// CID of the hypervisor.
pub const CID_HYPERVISOR: u32 = 0;
/// CID for local (loopback) communication, `vsock_loopback`.
pub const CID_LOCAL: u32 = 1;
/// CID of the host.
pub const CID_HOST: u32 = 2;
/// Wildcard CID (`VMADDR_CID_ANY`).
pub const CID_ANY: u32 = u32::MAX;
/// Wildcard port (`VMADDR_PORT_ANY`): bind to any free port.
pub const PORT_ANY: u32 = u32::MAX;

/// Whether a connection from `peer_cid` may be served by a listener that
/// expects `expected_cid`.
pub fn peer_allowed(expected_cid: u32, peer_cid: u32) -> bool {
    peer_cid == expected_cid
}

/// Checks the CID given to the host service: the guest's CID. 1 (loopback)
/// is allowed for tests on one machine.
pub fn check_guest_cid(cid: u32) -> Result<(), TransportError> {
    let why = match cid {
        CID_HYPERVISOR => "is the hypervisor's",
        CID_HOST => "is the host's own",
        CID_ANY => "is the wildcard (VMADDR_CID_ANY)",
        _ => return Ok(()),
    };
    Err(TransportError::Invalid(format!(
        "vsock CID {cid} {why}, not a guest's: give the guest's CID (3 or more; 1 for loopback)"
    )))
}

/// Checks the CID given to the guest client: the host's CID (2, or 1 for
/// loopback).
pub fn check_host_cid(cid: u32) -> Result<(), TransportError> {
    match cid {
        CID_HYPERVISOR | CID_ANY => Err(TransportError::Invalid(format!(
            "vsock CID {cid} cannot be the host's: use 2 (or 1 for loopback)"
        ))),
        _ => Ok(()),
    }
}

/// The address a listener binds: any local CID, `port`.
pub fn listen_address(port: u32) -> VsockAddr {
    VsockAddr::new(VMADDR_CID_ANY, port)
}

/// The address a connector reaches.
pub fn peer_address(cid: u32, port: u32) -> VsockAddr {
    VsockAddr::new(cid, port)
}

/// An address for logs.
pub fn describe(address: &VsockAddr) -> String {
    if address.cid() == CID_ANY {
        format!("vsock any-cid:{}", address.port())
    } else {
        format!("vsock {}:{}", address.cid(), address.port())
    }
}

fn bind(port: u32) -> Result<VsockListener, TransportError> {
    let address = listen_address(port);
    VsockListener::bind(address).map_err(|source| {
        let hint = match source.raw_os_error() {
            Some(libc::EAFNOSUPPORT) | Some(libc::ENODEV) => {
                " (AF_VSOCK is unavailable: on a host, load the vhost_vsock module)"
            }
            _ => "",
        };
        TransportError::Bind {
            address: format!("{}{hint}", describe(&address)),
            source,
        }
    })
}

/// A listener that serves one peer CID, closing others.
struct FilteredListener {
    listener: VsockListener,
    peer_cid: u32,
    role: &'static str,
}

impl FilteredListener {
    async fn accept(&self) -> io::Result<(VsockStream, VsockAddr)> {
        loop {
            let (stream, peer) = self.listener.accept().await?;
            if peer_allowed(self.peer_cid, peer.cid()) {
                return Ok((stream, peer));
            }
            tracing::warn!(
                peer = %describe(&peer),
                expected_cid = self.peer_cid,
                "closing a {} connection from an unexpected vsock CID",
                self.role
            );
            drop(stream);
        }
    }

    fn description(&self) -> String {
        match self.listener.local_addr() {
            Ok(a) => format!("{} (from CID {})", describe(&a), self.peer_cid),
            Err(_) => "vsock".to_string(),
        }
    }

    fn port(&self) -> Option<u32> {
        self.listener.local_addr().ok().map(|a| a.port())
    }
}

// ---------------------------------------------------------------- host side

/// Host end: accept requests from `guest_cid` on `request_port`, notify it
/// on `notification_port`.
pub async fn bind_host(
    guest_cid: u32,
    request_port: u32,
    notification_port: u32,
) -> Result<HostEndpoint, TransportError> {
    check_guest_cid(guest_cid)?;
    let listener = bind(request_port)?;
    Ok(HostEndpoint {
        listener: Box::new(VsockRequestListener(FilteredListener {
            listener,
            peer_cid: guest_cid,
            role: "request",
        })),
        notifier: Arc::new(VsockConnector {
            address: peer_address(guest_cid, notification_port),
        }),
    })
}

struct VsockRequestListener(FilteredListener);

#[async_trait]
impl RequestListener for VsockRequestListener {
    async fn accept(&self) -> io::Result<(BoxStream, String)> {
        let (stream, peer) = self.0.accept().await?;
        Ok((Box::new(stream), describe(&peer)))
    }

    fn local_description(&self) -> String {
        self.0.description()
    }

    fn local_port(&self) -> Option<u32> {
        self.0.port()
    }
}

/// Connects to a fixed vsock address: the host's notification connector and
/// the guest's request connector.
pub struct VsockConnector {
    address: VsockAddr,
}

impl VsockConnector {
    /// Connects to `port` of the VM (or host) with context id `cid`.
    pub fn new(cid: u32, port: u32) -> VsockConnector {
        VsockConnector {
            address: peer_address(cid, port),
        }
    }

    async fn open(&self) -> io::Result<BoxStream> {
        let stream = VsockStream::connect(self.address).await.map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot connect to {}: {e}", describe(&self.address)),
            )
        })?;
        Ok(Box::new(stream))
    }
}

#[async_trait]
impl NotificationConnector for VsockConnector {
    /// Returns once the connection is established; the stream is the bare
    /// socket.
    async fn connect(&self) -> io::Result<BoxStream> {
        self.open().await
    }

    fn describe(&self) -> String {
        describe(&self.address)
    }
}

#[async_trait]
impl RequestConnector for VsockConnector {
    async fn connect(&self) -> io::Result<BoxStream> {
        self.open().await
    }

    fn describe(&self) -> String {
        describe(&self.address)
    }
}

// --------------------------------------------------------------- guest side

/// Guest end: requests go to (host_cid, request_port).
pub fn guest_connector(
    host_cid: u32,
    request_port: u32,
) -> Result<Arc<dyn RequestConnector>, TransportError> {
    check_host_cid(host_cid)?;
    Ok(Arc::new(VsockConnector::new(host_cid, request_port)))
}

/// Guest end: accepts the host's notification connections on
/// `notification_port`, from `host_cid` only.
pub async fn bind_guest_notifications(
    host_cid: u32,
    notification_port: u32,
) -> Result<Box<dyn NotificationListener>, TransportError> {
    check_host_cid(host_cid)?;
    let listener = bind(notification_port)?;
    Ok(Box::new(VsockNotificationListener(FilteredListener {
        listener,
        peer_cid: host_cid,
        role: "notification",
    })))
}

struct VsockNotificationListener(FilteredListener);

#[async_trait]
impl NotificationListener for VsockNotificationListener {
    async fn accept(&self) -> io::Result<BoxStream> {
        let (stream, _) = self.0.accept().await?;
        Ok(Box::new(stream))
    }

    fn local_description(&self) -> String {
        self.0.description()
    }

    fn local_port(&self) -> Option<u32> {
        self.0.port()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_configured_cid_is_served() {
        assert!(peer_allowed(3, 3));
        assert!(!peer_allowed(3, 4));
        assert!(!peer_allowed(3, CID_HOST));
        assert!(!peer_allowed(3, CID_LOCAL));
        assert!(peer_allowed(CID_LOCAL, CID_LOCAL));
        assert!(!peer_allowed(CID_HOST, 5));
    }

    #[test]
    fn guest_cids_are_validated() {
        for bad in [CID_HYPERVISOR, CID_HOST, CID_ANY] {
            let err = check_guest_cid(bad).unwrap_err();
            assert!(matches!(err, TransportError::Invalid(_)), "{bad}");
        }
        for good in [CID_LOCAL, 3, 42, u32::MAX - 1] {
            assert!(check_guest_cid(good).is_ok(), "{good}");
        }
        for bad in [CID_HYPERVISOR, CID_ANY] {
            assert!(check_host_cid(bad).is_err(), "{bad}");
        }
        for good in [CID_LOCAL, CID_HOST] {
            assert!(check_host_cid(good).is_ok(), "{good}");
        }
    }

    #[test]
    fn addresses() {
        assert_eq!(CID_ANY, VMADDR_CID_ANY);
        assert_eq!(CID_HOST, tokio_vsock::VMADDR_CID_HOST);
        assert_eq!(CID_LOCAL, tokio_vsock::VMADDR_CID_LOCAL);
        assert_eq!(CID_HYPERVISOR, tokio_vsock::VMADDR_CID_HYPERVISOR);
        let l = listen_address(12345);
        assert_eq!((l.cid(), l.port()), (VMADDR_CID_ANY, 12345));
        assert_eq!(describe(&l), "vsock any-cid:12345");
        let p = peer_address(7, 12346);
        assert_eq!((p.cid(), p.port()), (7, 12346));
        assert_eq!(describe(&p), "vsock 7:12346");
        assert_eq!(VsockConnector::new(7, 12346).address, p);
    }
}
