//! Hyper-V sockets (AF_HYPERV), the host end on Windows.
//!
//! A Linux guest's AF_VSOCK port P is, on the Hyper-V host, the service id
//! made from the vsock template GUID `xxxxxxxx-facb-11e6-bd58-64006a7986d3`
//! with P as its first field. The host listens on (VM id, service id of the
//! request port), so only that VM can connect, and sends each notification
//! on a new connection to (VM id, service id of the notification port).
//! Sockets are created with `HVSOCKET_CONNECTED_SUSPEND`, so connections
//! survive the VM being suspended, as the reference does.
//!
//! The address arithmetic (service ids, the `SOCKADDR_HV` bytes) is plain
//! code, tested on every platform. The sockets themselves only exist on
//! Windows.
//!
//! Design of the Windows part: tokio has no AF_HYPERV type, but mio (under
//! tokio) polls any winsock socket through the AFD driver, the same
//! readiness mechanism Microsoft's OpenVMM uses for its AF_HYPERV listeners
//! and streams (`pal_async` over `vmsocket`). A connected Hyper-V socket is
//! therefore handed to tokio as a `TcpStream` (only its read/write/shutdown
//! paths are used, which are family-agnostic). The listening socket is
//! registered the same way and accepted with `async_io(READABLE, accept)`:
//! the raw `accept` keeps the peer's `SOCKADDR_HV` (std would refuse an
//! address of an unknown family), and dropping the listener closes the
//! socket at once. The notification connect is a blocking `connect` (with
//! `HVSOCKET_CONNECT_TIMEOUT`) on tokio's blocking pool.

use uuid::Uuid;

/// The vsock template service id: a Linux guest's vsock port P is this GUID
/// with its first field replaced by P.
pub const VSOCK_TEMPLATE: Uuid = Uuid::from_u128(0x0000_0000_facb_11e6_bd58_6400_6a79_86d3);
/// `AF_HYPERV`.
pub const AF_HYPERV: u16 = 34;
/// `HV_PROTOCOL_RAW`, the protocol and the socket option level.
pub const HV_PROTOCOL_RAW: i32 = 1;
/// `HVSOCKET_CONNECT_TIMEOUT` socket option (milliseconds).
pub const HVSOCKET_CONNECT_TIMEOUT: i32 = 1;
/// `HVSOCKET_CONNECTED_SUSPEND` socket option.
pub const HVSOCKET_CONNECTED_SUSPEND: i32 = 4;
/// Size of `SOCKADDR_HV`.
pub const SOCKADDR_HV_LEN: usize = 36;
/// How long a notification connect may take before it is given up.
pub const NOTIFICATION_CONNECT_TIMEOUT_MS: u32 = 2_000;

/// The service id of a Linux guest's vsock port.
pub fn service_id(port: u32) -> Uuid {
    let (_, d2, d3, d4) = VSOCK_TEMPLATE.as_fields();
    Uuid::from_fields(port, d2, d3, d4)
}

/// The vsock port a service id stands for, when it is made from the template.
pub fn vsock_port(service: Uuid) -> Option<u32> {
    let (port, d2, d3, d4) = service.as_fields();
    let (_, t2, t3, t4) = VSOCK_TEMPLATE.as_fields();
    (d2 == t2 && d3 == t3 && d4 == t4).then_some(port)
}

/// A GUID's in-memory bytes (`Data1..Data3` little endian, then `Data4`),
/// from its 128-bit value as written (`{data1}-{data2}-{data3}-{data4}`).
pub const fn guid_bytes(value: u128) -> [u8; 16] {
    let be = value.to_be_bytes();
    [
        be[3], be[2], be[1], be[0], be[5], be[4], be[7], be[6], be[8], be[9], be[10], be[11],
        be[12], be[13], be[14], be[15],
    ]
}

/// A `SOCKADDR_HV` as bytes: `Family` (u16), `Reserved` (u16), `VmId`
/// (GUID), `ServiceId` (GUID). Aligned like the C struct, so a pointer to it
/// can be passed as a `SOCKADDR`.
#[repr(C, align(4))]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SockaddrHv(pub [u8; SOCKADDR_HV_LEN]);

impl SockaddrHv {
    pub fn new(vm_id: Uuid, service_id: Uuid) -> SockaddrHv {
        let mut b = [0u8; SOCKADDR_HV_LEN];
        b[0..2].copy_from_slice(&AF_HYPERV.to_le_bytes());
        // b[2..4]: Reserved, zero.
        b[4..20].copy_from_slice(&guid_bytes(vm_id.as_u128()));
        b[20..36].copy_from_slice(&guid_bytes(service_id.as_u128()));
        SockaddrHv(b)
    }

    /// The address a guest's vsock port is reached at.
    pub fn vsock(vm_id: Uuid, port: u32) -> SockaddrHv {
        SockaddrHv::new(vm_id, service_id(port))
    }

    /// The (VM id, service id) of an `AF_HYPERV` address, as `accept` fills
    /// it in; `None` for anything shorter or of another family.
    pub fn parse(bytes: &[u8]) -> Option<(Uuid, Uuid)> {
        let b: &[u8; SOCKADDR_HV_LEN] = bytes.get(..SOCKADDR_HV_LEN)?.try_into().ok()?;
        if u16::from_le_bytes([b[0], b[1]]) != AF_HYPERV {
            return None;
        }
        let vm: [u8; 16] = b[4..20].try_into().ok()?;
        let service: [u8; 16] = b[20..36].try_into().ok()?;
        Some((Uuid::from_bytes_le(vm), Uuid::from_bytes_le(service)))
    }
}

/// A peer address for logs: the VM id and the vsock port when it has one.
pub fn describe_peer(vm_id: Uuid, service: Uuid) -> String {
    match vsock_port(service) {
        Some(port) => format!("hyper-v vm {vm_id} port {port}"),
        None => format!("hyper-v vm {vm_id} service {service}"),
    }
}

#[cfg(windows)]
pub use windows_impl::bind_host;

#[cfg(windows)]
mod windows_impl {
    use std::io;
    use std::mem::{align_of, offset_of, size_of};
    use std::os::windows::io::{FromRawSocket, RawSocket};
    use std::sync::{Arc, OnceLock};

    use async_trait::async_trait;
    use tokio::io::Interest;
    use tracing::{debug, warn};
    use uuid::Uuid;
    use windows_sys::core::GUID;
    use windows_sys::Win32::Networking::WinSock::{
        accept, bind, closesocket, connect, ioctlsocket, listen, setsockopt, WSAGetLastError,
        WSASocketW, WSAStartup, FIONBIO, INVALID_SOCKET, SOCKADDR, SOCKET, SOCKET_ERROR,
        SOCK_STREAM, SOMAXCONN, WSADATA, WSA_FLAG_NO_HANDLE_INHERIT, WSA_FLAG_OVERLAPPED,
    };
    use windows_sys::Win32::System::Hypervisor::{self as hv, SOCKADDR_HV};

    use super::{describe_peer, guid_bytes, SockaddrHv, SOCKADDR_HV_LEN};
    use crate::transport::{
        BoxStream, HostEndpoint, NotificationConnector, Peer, RequestListener, TransportError,
    };

    // The plain-code constants and layout must be the real ones.
    const _: () = {
        assert!(size_of::<SOCKADDR_HV>() == SOCKADDR_HV_LEN);
        assert!(size_of::<SockaddrHv>() == SOCKADDR_HV_LEN);
        assert!(align_of::<SockaddrHv>() >= align_of::<SOCKADDR_HV>());
        assert!(offset_of!(SOCKADDR_HV, Family) == 0);
        assert!(offset_of!(SOCKADDR_HV, Reserved) == 2);
        assert!(offset_of!(SOCKADDR_HV, VmId) == 4);
        assert!(offset_of!(SOCKADDR_HV, ServiceId) == 20);
        assert!(windows_sys::Win32::Networking::WinSock::AF_HYPERV == super::AF_HYPERV);
        assert!(hv::HV_PROTOCOL_RAW as i32 == super::HV_PROTOCOL_RAW);
        assert!(hv::HVSOCKET_CONNECTED_SUSPEND as i32 == super::HVSOCKET_CONNECTED_SUSPEND);
        assert!(hv::HVSOCKET_CONNECT_TIMEOUT as i32 == super::HVSOCKET_CONNECT_TIMEOUT);
        // guid_bytes is the in-memory layout of a GUID.
        let template: [u8; 16] =
            // SAFETY: GUID is 16 plain bytes.
            unsafe { std::mem::transmute::<GUID, [u8; 16]>(hv::HV_GUID_VSOCK_TEMPLATE) };
        let ours = guid_bytes(super::VSOCK_TEMPLATE.as_u128());
        let mut i = 0;
        while i < 16 {
            assert!(template[i] == ours[i]);
            i += 1;
        }
    };

    fn last_error() -> io::Error {
        // SAFETY: no preconditions.
        io::Error::from_raw_os_error(unsafe { WSAGetLastError() })
    }

    /// Winsock must be started before the first `socket` call; std does it
    /// lazily for its own types, this does it for ours (the count is
    /// per-process and never needs undoing).
    fn winsock() -> io::Result<()> {
        static STARTED: OnceLock<i32> = OnceLock::new();
        let code = *STARTED.get_or_init(|| {
            let mut data: WSADATA = unsafe { std::mem::zeroed() };
            // SAFETY: data is a valid out-pointer.
            unsafe { WSAStartup(0x0202, &mut data) }
        });
        if code == 0 {
            Ok(())
        } else {
            Err(io::Error::from_raw_os_error(code))
        }
    }

    /// An owned winsock socket, closed on drop unless handed on.
    struct Socket(SOCKET);

    impl Drop for Socket {
        fn drop(&mut self) {
            // SAFETY: we own the socket.
            unsafe { closesocket(self.0) };
        }
    }

    impl Socket {
        fn new() -> io::Result<Socket> {
            winsock()?;
            // SAFETY: plain socket creation.
            let s = unsafe {
                WSASocketW(
                    i32::from(super::AF_HYPERV),
                    SOCK_STREAM,
                    super::HV_PROTOCOL_RAW,
                    std::ptr::null(),
                    0,
                    WSA_FLAG_OVERLAPPED | WSA_FLAG_NO_HANDLE_INHERIT,
                )
            };
            if s == INVALID_SOCKET {
                return Err(last_error());
            }
            let socket = Socket(s);
            socket.set_u32(super::HVSOCKET_CONNECTED_SUSPEND, 1)?;
            Ok(socket)
        }

        fn set_u32(&self, option: i32, value: u32) -> io::Result<()> {
            let bytes = value.to_ne_bytes();
            // SAFETY: the option value is 4 valid bytes.
            let rc = unsafe {
                setsockopt(
                    self.0,
                    super::HV_PROTOCOL_RAW,
                    option,
                    bytes.as_ptr(),
                    bytes.len() as i32,
                )
            };
            if rc == SOCKET_ERROR {
                Err(last_error())
            } else {
                Ok(())
            }
        }

        fn set_nonblocking(&self) -> io::Result<()> {
            let mut on = 1u32;
            // SAFETY: valid socket and argument.
            if unsafe { ioctlsocket(self.0, FIONBIO, &mut on) } == SOCKET_ERROR {
                Err(last_error())
            } else {
                Ok(())
            }
        }

        /// Hands the socket to tokio (see the module docs for why a
        /// `TcpStream`).
        fn into_tokio(self) -> io::Result<tokio::net::TcpStream> {
            self.set_nonblocking()?;
            let raw = self.0 as RawSocket;
            std::mem::forget(self);
            // SAFETY: we owned the socket; std now does.
            let std_stream = unsafe { std::net::TcpStream::from_raw_socket(raw) };
            tokio::net::TcpStream::from_std(std_stream)
        }
    }

    fn addr_ptr(addr: &SockaddrHv) -> *const SOCKADDR {
        (addr as *const SockaddrHv).cast::<SOCKADDR>()
    }

    /// Host end over Hyper-V sockets.
    pub async fn bind_host(
        vm_id: Uuid,
        request_port: u32,
        notification_port: u32,
    ) -> Result<HostEndpoint, TransportError> {
        let address = SockaddrHv::vsock(vm_id, request_port);
        let description = describe_peer(vm_id, super::service_id(request_port));
        let bind_error = |source| TransportError::Bind {
            address: description.clone(),
            source,
        };
        let socket = Socket::new().map_err(bind_error)?;
        // SAFETY: the address is a valid SOCKADDR_HV of the length given.
        if unsafe { bind(socket.0, addr_ptr(&address), SOCKADDR_HV_LEN as i32) } == SOCKET_ERROR {
            return Err(bind_error(last_error()));
        }
        // SAFETY: bound socket.
        if unsafe { listen(socket.0, SOMAXCONN as i32) } == SOCKET_ERROR {
            return Err(bind_error(last_error()));
        }
        let listener = socket.into_tokio().map_err(bind_error)?;
        Ok(HostEndpoint {
            listener: Box::new(HyperVRequestListener {
                listener,
                vm_id,
                description,
            }),
            notifier: Arc::new(HyperVConnector {
                vm_id,
                port: notification_port,
            }),
        })
    }

    struct HyperVRequestListener {
        /// The listening socket, registered with tokio for readiness only.
        listener: tokio::net::TcpStream,
        vm_id: Uuid,
        description: String,
    }

    impl HyperVRequestListener {
        fn accept_now(&self) -> io::Result<(Socket, Option<(Uuid, Uuid)>)> {
            use std::os::windows::io::AsRawSocket;
            let mut peer = SockaddrHv([0; SOCKADDR_HV_LEN]);
            let mut len = SOCKADDR_HV_LEN as i32;
            // SAFETY: the buffer is SOCKADDR_HV_LEN bytes and aligned.
            let s = unsafe {
                accept(
                    self.listener.as_raw_socket() as SOCKET,
                    (&mut peer as *mut SockaddrHv).cast::<SOCKADDR>(),
                    &mut len,
                )
            };
            if s == INVALID_SOCKET {
                return Err(last_error());
            }
            let filled = usize::try_from(len).unwrap_or(0).min(SOCKADDR_HV_LEN);
            Ok((Socket(s), SockaddrHv::parse(&peer.0[..filled])))
        }
    }

    #[async_trait]
    impl RequestListener for HyperVRequestListener {
        async fn accept(&self) -> io::Result<(BoxStream, Peer)> {
            loop {
                let (socket, peer) = self
                    .listener
                    .async_io(Interest::READABLE, || self.accept_now())
                    .await?;
                // The listener is bound to the VM id, so Hyper-V only lets
                // that VM in; checked again in case of a wildcard binding.
                match peer {
                    Some((vm, service)) if vm == self.vm_id => {
                        let stream = socket.into_tokio()?;
                        return Ok((
                            Box::new(stream),
                            Peer::Described(describe_peer(vm, service)),
                        ));
                    }
                    Some((vm, service)) => {
                        warn!(peer = %describe_peer(vm, service), "connection from another VM refused");
                    }
                    None => warn!("connection with an unreadable peer address refused"),
                }
            }
        }

        fn local_description(&self) -> String {
            self.description.clone()
        }

        fn local_port(&self) -> Option<u32> {
            None
        }
    }

    /// Opens a connection to the guest's notification port.
    struct HyperVConnector {
        vm_id: Uuid,
        port: u32,
    }

    fn connect_blocking(vm_id: Uuid, port: u32) -> io::Result<Socket> {
        let socket = Socket::new()?;
        socket.set_u32(
            super::HVSOCKET_CONNECT_TIMEOUT,
            super::NOTIFICATION_CONNECT_TIMEOUT_MS,
        )?;
        let address = SockaddrHv::vsock(vm_id, port);
        // SAFETY: the address is a valid SOCKADDR_HV of the length given.
        if unsafe { connect(socket.0, addr_ptr(&address), SOCKADDR_HV_LEN as i32) } == SOCKET_ERROR
        {
            return Err(last_error());
        }
        Ok(socket)
    }

    #[async_trait]
    impl NotificationConnector for HyperVConnector {
        async fn connect(&self) -> io::Result<BoxStream> {
            let (vm_id, port) = (self.vm_id, self.port);
            let socket = tokio::task::spawn_blocking(move || connect_blocking(vm_id, port))
                .await
                .map_err(io::Error::other)??;
            debug!(vm = %vm_id, port, "notification connection open");
            Ok(Box::new(socket.into_tokio()?))
        }

        fn describe(&self) -> String {
            describe_peer(self.vm_id, super::service_id(self.port))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_id_is_the_template_with_the_port_first() {
        assert_eq!(
            service_id(12345).to_string(),
            "00003039-facb-11e6-bd58-64006a7986d3"
        );
        assert_eq!(
            service_id(12346).to_string(),
            "0000303a-facb-11e6-bd58-64006a7986d3"
        );
        assert_eq!(service_id(0), VSOCK_TEMPLATE);
        assert_eq!(
            service_id(u32::MAX).to_string(),
            "ffffffff-facb-11e6-bd58-64006a7986d3"
        );
        for port in [0, 1, 12345, 0x8000_0000, u32::MAX] {
            assert_eq!(vsock_port(service_id(port)), Some(port));
        }
        let other = Uuid::from_u128(0x0000_3039_0000_0000_0000_0000_0000_0001);
        assert_eq!(vsock_port(other), None);
    }

    #[test]
    fn guid_bytes_match_the_windows_memory_layout() {
        // {00003039-facb-11e6-bd58-64006a7986d3} in memory: Data1..Data3
        // little endian, Data4 as written.
        assert_eq!(
            guid_bytes(service_id(12345).as_u128()),
            [
                0x39, 0x30, 0x00, 0x00, 0xcb, 0xfa, 0xe6, 0x11, 0xbd, 0x58, 0x64, 0x00, 0x6a, 0x79,
                0x86, 0xd3
            ]
        );
        let id = Uuid::from_u128(0x0123_4567_89ab_cdef_0011_2233_4455_6677);
        assert_eq!(guid_bytes(id.as_u128()), id.to_bytes_le());
    }

    #[test]
    fn sockaddr_hv_layout() {
        let vm = Uuid::from_u128(0x1122_3344_5566_7788_99aa_bbcc_ddee_ff00);
        let a = SockaddrHv::vsock(vm, 12346);
        assert_eq!(&a.0[0..2], &[34, 0], "family AF_HYPERV, little endian");
        assert_eq!(&a.0[2..4], &[0, 0], "reserved");
        assert_eq!(
            &a.0[4..20],
            &[
                0x44, 0x33, 0x22, 0x11, 0x66, 0x55, 0x88, 0x77, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee,
                0xff, 0x00
            ]
        );
        assert_eq!(&a.0[20..24], &[0x3a, 0x30, 0, 0]);
        assert_eq!(std::mem::size_of::<SockaddrHv>(), 36);
        assert_eq!(std::mem::align_of::<SockaddrHv>(), 4);
        assert_eq!(SockaddrHv::parse(&a.0), Some((vm, service_id(12346))));
    }

    #[test]
    fn parse_refuses_other_families_and_short_buffers() {
        let a = SockaddrHv::vsock(Uuid::from_u128(7), 1);
        assert_eq!(SockaddrHv::parse(&a.0[..35]), None);
        let mut inet = a.0;
        inet[0] = 2;
        assert_eq!(SockaddrHv::parse(&inet), None);
        let mut longer = a.0.to_vec();
        longer.extend_from_slice(&[0; 8]);
        assert!(SockaddrHv::parse(&longer).is_some());
        assert_eq!(
            describe_peer(Uuid::from_u128(7), service_id(12345)),
            "hyper-v vm 00000000-0000-0000-0000-000000000007 port 12345"
        );
    }
}
