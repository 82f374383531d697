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
    let listener = listen(SocketAddr::new(address, request_port)).await?;
    Ok(HostEndpoint {
        listener: Box::new(TcpRequestListener { listener }),
        notifier: Arc::new(TcpConnector {
            address: SocketAddr::new(address, notification_port),
        }),
    })
}

struct TcpRequestListener {
    listener: TcpListener,
}

#[async_trait]
impl RequestListener for TcpRequestListener {
    async fn accept(&self) -> io::Result<(BoxStream, Peer)> {
        let (stream, peer) = self.listener.accept().await?;
        Ok((connected(stream), Peer::Ip(peer)))
    }

    fn local_description(&self) -> String {
        describe_local(&self.listener)
    }

    fn local_port(&self) -> Option<u32> {
        bound_port(&self.listener)
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
        describe_local(&self.listener)
    }
    fn local_port(&self) -> Option<u32> {
        bound_port(&self.listener)
    }
}

/// The listener's address, for logs.
fn describe_local(listener: &TcpListener) -> String {
    match listener.local_addr() {
        Ok(a) => a.to_string(),
        Err(_) => "tcp".to_string(),
    }
}

/// The port the listener is bound to (port 0 binds an ephemeral one).
fn bound_port(listener: &TcpListener) -> Option<u32> {
    listener.local_addr().ok().map(|a| u32::from(a.port()))
}
