//! TCP transport: for tests, and guests that reach the host over IP.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use async_trait::async_trait;
use tokio::net::{TcpListener, TcpStream};

use super::{
    BoxStream, HostEndpoint, NotificationConnector, NotificationListener, Peer, RequestConnector,
    RequestListener, TransportError,
};

async fn listen(address: SocketAddr) -> Result<TcpListener, TransportError> {
    TcpListener::bind(address)
        .await
        .map_err(|source| TransportError::Bind {
            address: address.to_string(),
            source,
        })
}

fn connected(stream: TcpStream) -> BoxStream {
    // Messages are small and written whole: send them now, not after Nagle's delay.
    let _ = stream.set_nodelay(true);
    Box::new(stream)
}

/// Host end over TCP.
pub async fn bind_host(
    address: IpAddr,
    request_port: u16,
    notification_port: u16,
) -> Result<HostEndpoint, TransportError> {
    let listener = listen_requests(SocketAddr::new(address, request_port)).await?;
    Ok(HostEndpoint {
        listener: Box::new(TcpRequestListener { listener }),
        notifier: Arc::new(TcpConnector {
            address: SocketAddr::new(address, notification_port),
        }),
    })
}

/// On Linux, request connections join the reactor only if they have to
/// wait (`unregistered.rs`): two system calls fewer per request.
#[cfg(target_os = "linux")]
type RequestSocket = super::unregistered::LazyListener<mio::net::TcpListener>;
#[cfg(not(target_os = "linux"))]
type RequestSocket = TcpListener;

#[cfg(target_os = "linux")]
async fn listen_requests(address: SocketAddr) -> Result<RequestSocket, TransportError> {
    // mio binds as tokio's `TcpListener::bind` does (SO_REUSEADDR, then
    // listen), non-blocking.
    mio::net::TcpListener::bind(address)
        .and_then(super::unregistered::LazyListener::new)
        .map_err(|source| TransportError::Bind {
            address: address.to_string(),
            source,
        })
}

#[cfg(not(target_os = "linux"))]
async fn listen_requests(address: SocketAddr) -> Result<RequestSocket, TransportError> {
    listen(address).await
}

#[cfg(target_os = "linux")]
fn request_local_addr(listener: &RequestSocket) -> io::Result<SocketAddr> {
    listener.get_ref().local_addr()
}

#[cfg(not(target_os = "linux"))]
fn request_local_addr(listener: &RequestSocket) -> io::Result<SocketAddr> {
    listener.local_addr()
}

struct TcpRequestListener {
    listener: RequestSocket,
}

#[async_trait]
impl RequestListener for TcpRequestListener {
    async fn accept(&self) -> io::Result<(BoxStream, Peer)> {
        let (stream, peer) = self.listener.accept().await?;
        // Messages are small and written whole: send them now, not after
        // Nagle's delay.
        #[cfg(target_os = "linux")]
        {
            if let Some(fd) = stream.fd() {
                let _ = socket2::SockRef::from(&fd).set_tcp_nodelay(true);
            }
            Ok((Box::new(stream), Peer::Ip(peer)))
        }
        #[cfg(not(target_os = "linux"))]
        Ok((connected(stream), Peer::Ip(peer)))
    }

    fn local_description(&self) -> String {
        describe_local(request_local_addr(&self.listener))
    }

    fn local_port(&self) -> Option<u32> {
        bound_port(request_local_addr(&self.listener))
    }
}

/// Connects to a fixed TCP address: the host's notification connector, and
/// the guest's request connector.
pub struct TcpConnector {
    address: SocketAddr,
}

impl TcpConnector {
    pub fn new(address: SocketAddr) -> TcpConnector {
        TcpConnector { address }
    }

    async fn open(&self) -> io::Result<BoxStream> {
        Ok(connected(TcpStream::connect(self.address).await?))
    }
}

#[async_trait]
impl NotificationConnector for TcpConnector {
    async fn connect(&self) -> io::Result<BoxStream> {
        self.open().await
    }
    fn describe(&self) -> String {
        self.address.to_string()
    }
}

/// Guest end: connects to the host's request port.
pub struct TcpRequestConnector(TcpConnector);

impl TcpRequestConnector {
    pub fn new(address: IpAddr, request_port: u16) -> TcpRequestConnector {
        TcpRequestConnector(TcpConnector::new(SocketAddr::new(address, request_port)))
    }
}

#[async_trait]
impl RequestConnector for TcpRequestConnector {
    async fn connect(&self) -> io::Result<BoxStream> {
        self.0.open().await
    }
    fn describe(&self) -> String {
        self.0.address.to_string()
    }
}

/// Guest end: listens for the host's notification connections.
pub async fn bind_guest_notifications(
    address: IpAddr,
    notification_port: u16,
) -> Result<Box<dyn NotificationListener>, TransportError> {
    let listener = listen(SocketAddr::new(address, notification_port)).await?;
    Ok(Box::new(TcpNotificationListener { listener }))
}

struct TcpNotificationListener {
    listener: TcpListener,
}

#[async_trait]
impl NotificationListener for TcpNotificationListener {
    async fn accept(&self) -> io::Result<BoxStream> {
        let (stream, _) = self.listener.accept().await?;
        Ok(connected(stream))
    }
    fn local_description(&self) -> String {
        describe_local(self.listener.local_addr())
    }
    fn local_port(&self) -> Option<u32> {
        bound_port(self.listener.local_addr())
    }
}

/// A listener's address, for logs.
fn describe_local(local: io::Result<SocketAddr>) -> String {
    match local {
        Ok(a) => a.to_string(),
        Err(_) => "tcp".to_string(),
    }
}

/// The port a listener is bound to (port 0 binds an ephemeral one).
fn bound_port(local: io::Result<SocketAddr>) -> Option<u32> {
    local.ok().map(|a| u32::from(a.port()))
}
