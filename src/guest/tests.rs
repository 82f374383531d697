//! The client and the watcher against scripted fake hosts: real TCP
//! sockets answering crafted bytes, and in-memory streams under tokio's
//! virtual time for the time limits.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::*;
use crate::protocol::{
    pmk_from_passphrase, ssid_element, wpa2_psk_ccmp_rsn_element, ConnectResponse, DecodeError,
    Header, MacAddr, Message, Operation, Request, ScanBss, ScanLayout, ScanResponse, Ssid,
};
use crate::transport::framing::read_message;
use crate::transport::{BoxStream, RequestConnector, TransportConfig};

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// What the scripted host does after reading the request.
enum Script {
    /// Writes these bytes and closes.
    Reply(Vec<u8>),
    /// Closes without writing.
    Close,
    /// Keeps the connection open and never answers.
    Silent,
}

/// A host that accepts one request connection, records the request's
/// bytes (header and body, as framed by the header) and follows `script`.
async fn scripted_host(script: Script) -> (TransportConfig, JoinHandle<Vec<u8>>) {
    let listener = TcpListener::bind((LOCALHOST, 0)).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let handle = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let (header, body) = read_message(&mut stream, Header::decode_request)
            .await
            .unwrap();
        let mut request = header.encode().to_vec();
        request.extend_from_slice(&body);
        match script {
            Script::Reply(bytes) => {
                stream.write_all(&bytes).await.unwrap();
                stream.shutdown().await.unwrap();
            }
            Script::Close => drop(stream),
            Script::Silent => {
                // Hold the connection until the client gives up.
                let mut rest = Vec::new();
                let _ = stream.read_to_end(&mut rest).await;
            }
        }
        request
    });
    let config = TransportConfig::Tcp {
        address: LOCALHOST,
        request_port: port,
        notification_port: 0,
    };
    (config, handle)
}

fn bss(mac: u8, ssid: &str, freq_khz: u32, wpa2: bool) -> ScanBss {
    let mut ies = ssid_element(&Ssid::new(ssid.as_bytes()).unwrap());
    if wpa2 {
        ies.extend_from_slice(&wpa2_psk_ccmp_rsn_element());
    }
    ScanBss {
        bssid: MacAddr([2, 0, 0, 0, 0, mac]),
        capabilities: if wpa2 { 0x11 } else { 0x01 },
        rssi_dbm: -40 - i32::from(mac),
        beacon_interval: 100,
        freq_khz,
        ies,
    }
}

fn two_networks(complete: bool) -> ScanResponse {
    ScanResponse {
        scan_complete: complete,
        bss: vec![
            bss(1, "FakeWpa2Psk", 2_437_000, true),
            bss(2, "FakeOpen", 5_180_000, false),
        ],
    }
}

fn scan_reply(layout: ScanLayout, resp: &ScanResponse) -> Vec<u8> {
    Message::ScanResponse(resp.clone()).encode(layout).unwrap()
}

/// A body-patching helper: encodes `resp`, lets `patch` change the body
/// (header excluded), and fixes the header size to the new body length.
fn patched(resp: &ScanResponse, patch: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut body = resp.encode_body(ScanLayout::Current).unwrap();
    patch(&mut body);
    let mut out = Header::new(Operation::ScanResponse, body.len() as u32)
        .encode()
        .to_vec();
    out.extend_from_slice(&body);
    out
}

async fn scan_with(script: Script, layout: ScanLayout) -> Result<ScanResponse, GuestError> {
    let (config, host) = scripted_host(script).await;
    let client = GuestClient::new(&config).unwrap().scan_layout(layout);
    let result = client.scan(None).await;
    host.abort();
    result
}

fn violation_of(result: Result<impl std::fmt::Debug, GuestError>) -> Violation {
    match result {
        Err(GuestError::MalformedReply { violation, .. }) => violation,
        other => panic!("expected a malformed reply, got {other:?}"),
    }
}

#[tokio::test]
async fn scan_sends_the_driver_request_and_reads_both_layouts() {
    for layout in [ScanLayout::Current, ScanLayout::Legacy] {
        let expected = two_networks(true);
        let (config, host) = scripted_host(Script::Reply(scan_reply(layout, &expected))).await;
        let client = GuestClient::new(&config).unwrap().scan_layout(layout);
        let got = client.scan(None).await.unwrap();
        assert_eq!(got, expected, "{layout:?}");
        let request = host.await.unwrap();
        let mut wire = vec![1, 33, 0, 0, 0, 1, 0];
        wire.extend_from_slice(&[0; 33]);
        assert_eq!(request, wire, "wildcard scan, 33-byte body");
    }
}

#[tokio::test]
async fn targeted_scan_and_incomplete_reply() {
    let expected = two_networks(false);
    let (config, host) =
        scripted_host(Script::Reply(scan_reply(ScanLayout::Current, &expected))).await;
    let client = GuestClient::new(&config).unwrap();
    let got = client
        .scan(Some(Ssid::new(b"FakeOpen").unwrap()))
        .await
        .unwrap();
    assert!(!got.scan_complete);
    let request = host.await.unwrap();
    assert_eq!(request.len(), 7 + 33);
    assert_eq!(request[7], 8);
    assert_eq!(&request[8..16], b"FakeOpen");
    assert!(request[16..].iter().all(|b| *b == 0));
}

#[tokio::test]
async fn a_legacy_reply_read_as_current_is_refused() {
    // The 8-byte layout read as the 9-byte one: num_bss low byte becomes
    // the scan_complete flag, everything after shifts.
    let reply = scan_reply(ScanLayout::Legacy, &two_networks(true));
    let v = violation_of(scan_with(Script::Reply(reply), ScanLayout::Current).await);
    assert!(matches!(v, Violation::Body(_)), "{v:?}");
}

#[tokio::test]
async fn wrong_reply_operation() {
    let reply = Message::DisconnectResponse
        .encode(ScanLayout::Current)
        .unwrap();
    let v = violation_of(scan_with(Script::Reply(reply), ScanLayout::Current).await);
    assert!(
        matches!(
            v,
            Violation::WrongOperation {
                got: Operation::DisconnectResponse,
                ..
            }
        ),
        "{v:?}"
    );
    assert_eq!(v.rule(), "wrong-operation");
    // A request operation is not something a host sends at all.
    let reply = vec![1, 0, 0, 0, 0, 1, 0];
    let v = violation_of(scan_with(Script::Reply(reply), ScanLayout::Current).await);
    assert_eq!(
        v,
        Violation::Header(DecodeError::NotAHostMessage(Operation::ScanRequest))
    );
    // Nor is an unknown one.
    let reply = vec![42, 0, 0, 0, 0, 1, 0];
    let v = violation_of(scan_with(Script::Reply(reply), ScanLayout::Current).await);
    assert_eq!(v, Violation::Header(DecodeError::UnknownOperation(42)));
}

#[tokio::test]
async fn wrong_version() {
    let mut reply = scan_reply(ScanLayout::Current, &two_networks(true));
    reply[5] = 2;
    let v = violation_of(scan_with(Script::Reply(reply), ScanLayout::Current).await);
    assert_eq!(v, Violation::Header(DecodeError::Version(2)));
    assert_eq!(v.rule(), "version");
}

#[tokio::test]
async fn short_scan_body() {
    // A header announcing 5 bytes and 5 bytes: shorter than the fixed part.
    let reply = vec![2, 5, 0, 0, 0, 1, 0, 1, 0, 0, 0, 0];
    let v = violation_of(scan_with(Script::Reply(reply), ScanLayout::Current).await);
    assert!(
        matches!(v, Violation::Body(DecodeError::Truncated { .. })),
        "{v:?}"
    );
    // A header announcing more than arrives before the host closes.
    let mut reply = scan_reply(ScanLayout::Current, &two_networks(true));
    reply.truncate(reply.len() - 3);
    let v = violation_of(scan_with(Script::Reply(reply.clone()), ScanLayout::Current).await);
    assert_eq!(
        v,
        Violation::Truncated {
            got: reply.len(),
            expected: reply.len() + 3
        }
    );
}

#[tokio::test]
async fn num_bss_too_large() {
    let reply = patched(&two_networks(true), |b| b[1] = 200);
    let v = violation_of(scan_with(Script::Reply(reply), ScanLayout::Current).await);
    assert!(
        matches!(
            v,
            Violation::Body(DecodeError::BssCount { num_bss: 200, .. })
        ),
        "{v:?}"
    );
    assert_eq!(v.rule(), "bss-count");
}

#[tokio::test]
async fn total_size_differs_from_body() {
    let reply = patched(&two_networks(true), |b| b[5] = b[5].wrapping_add(1));
    let v = violation_of(scan_with(Script::Reply(reply), ScanLayout::Current).await);
    assert_eq!(v.rule(), "total-size");
}

#[tokio::test]
async fn ie_offset_out_of_body() {
    // Second entry's ie_offset (at 9 + 26 + 22) pushed past the end.
    let reply = patched(&two_networks(true), |b| {
        b[9 + 26 + 22..9 + 26 + 26].copy_from_slice(&1000u32.to_le_bytes())
    });
    let v = violation_of(scan_with(Script::Reply(reply), ScanLayout::Current).await);
    assert!(
        matches!(
            v,
            Violation::Body(DecodeError::IeOutOfBounds {
                index: 1,
                offset: 1000,
                ..
            })
        ),
        "{v:?}"
    );
    // IEs pointing back into the entries.
    let reply = patched(&two_networks(true), |b| b[9 + 22] = 4);
    let v = violation_of(scan_with(Script::Reply(reply), ScanLayout::Current).await);
    assert_eq!(v.rule(), "ie-overlaps-entries");
}

#[tokio::test]
async fn unknown_frequency() {
    // 2437 MHz sent in MHz instead of kHz: no such channel.
    let reply = patched(&two_networks(true), |b| {
        b[9 + 14..9 + 18].copy_from_slice(&2437u32.to_le_bytes())
    });
    let v = violation_of(scan_with(Script::Reply(reply), ScanLayout::Current).await);
    assert_eq!(
        v,
        Violation::Body(DecodeError::UnknownChannel {
            index: 0,
            freq_khz: 2437
        })
    );
}

#[tokio::test]
async fn missing_ssid_element() {
    let resp = two_networks(true);
    // The IEs of the first BSS start right after the entries; turn its SSID
    // element into a Supported Rates element.
    let reply = patched(&resp, |b| b[9 + 2 * 26] = 1);
    let v = violation_of(scan_with(Script::Reply(reply), ScanLayout::Current).await);
    assert_eq!(v, Violation::Body(DecodeError::MissingSsid { index: 0 }));
}

#[tokio::test]
async fn malformed_element() {
    // The SSID element's length runs past the IEs of the second BSS (the last).
    let resp = two_networks(true);
    let second_ies = 9 + 2 * 26 + resp.bss[0].ies.len();
    let reply = patched(&resp, |b| b[second_ies + 1] = 200);
    let v = violation_of(scan_with(Script::Reply(reply), ScanLayout::Current).await);
    assert!(
        matches!(
            v,
            Violation::Body(DecodeError::MalformedElement { index: 1, .. })
        ),
        "{v:?}"
    );
}

#[tokio::test]
async fn duplicate_bssid() {
    let reply = patched(&two_networks(true), |b| b[9 + 26 + 5] = 1);
    let v = violation_of(scan_with(Script::Reply(reply), ScanLayout::Current).await);
    assert!(
        matches!(
            v,
            Violation::Body(DecodeError::DuplicateBssid { index: 1, .. })
        ),
        "{v:?}"
    );
}

#[tokio::test]
async fn bad_scan_complete_flag() {
    let reply = patched(&two_networks(true), |b| b[0] = 7);
    let v = violation_of(scan_with(Script::Reply(reply), ScanLayout::Current).await);
    assert_eq!(v, Violation::Body(DecodeError::ScanCompleteFlag(7)));
}

#[tokio::test]
async fn invalid_answer() {
    let reply = Message::Invalid.encode(ScanLayout::Current).unwrap();
    match scan_with(Script::Reply(reply), ScanLayout::Current).await {
        Err(e @ GuestError::Invalid { .. }) => {
            assert_eq!(e.class(), ErrorClass::Invalid);
            assert!(e.to_string().contains("INVALID"), "{e}");
        }
        other => panic!("{other:?}"),
    }
    // INVALID with a body is not INVALID.
    let reply = vec![0, 1, 0, 0, 0, 1, 0, 0];
    let v = violation_of(scan_with(Script::Reply(reply), ScanLayout::Current).await);
    assert_eq!(v.rule(), "body-too-large");
}

#[tokio::test]
async fn host_closes_without_reply() {
    let result = scan_with(Script::Close, ScanLayout::Current).await;
    let e = result.unwrap_err();
    assert_eq!(e.class(), ErrorClass::Malformed);
    assert_eq!(e.violation(), Some(&Violation::NoMessage));
}

#[tokio::test]
async fn host_unreachable() {
    let listener = TcpListener::bind((LOCALHOST, 0)).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let config = TransportConfig::Tcp {
        address: LOCALHOST,
        request_port: port,
        notification_port: 0,
    };
    let e = GuestClient::new(&config)
        .unwrap()
        .scan(None)
        .await
        .unwrap_err();
    assert!(matches!(e, GuestError::Unreachable { .. }), "{e:?}");
    assert_eq!(e.class(), ErrorClass::Unreachable);
    assert!(e.to_string().contains(&format!("127.0.0.1:{port}")), "{e}");
}

#[tokio::test]
async fn host_never_answering_over_tcp_hits_the_configured_limit() {
    // Real sockets, so real time: a short limit keeps the test fast. The
    // default 20 s is checked under virtual time below.
    let (config, host) = scripted_host(Script::Silent).await;
    let client = GuestClient::new(&config)
        .unwrap()
        .timeout(Duration::from_millis(300));
    let e = client.scan(None).await.unwrap_err();
    host.abort();
    assert!(
        matches!(
            e,
            GuestError::Timeout {
                stage: Stage::AwaitingReply,
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(e.class(), ErrorClass::Timeout);
}

/// An in-memory transport: each connect hands the host end of a duplex pipe
/// to the test; `hang` makes connect itself never finish.
struct PipeConnector {
    to_host: mpsc::UnboundedSender<tokio::io::DuplexStream>,
    hang: bool,
}

#[async_trait]
impl RequestConnector for PipeConnector {
    async fn connect(&self) -> std::io::Result<BoxStream> {
        if self.hang {
            std::future::pending::<()>().await;
        }
        let (guest, host) = tokio::io::duplex(4096);
        self.to_host
            .send(host)
            .map_err(|_| std::io::Error::other("host gone"))?;
        Ok(Box::new(guest))
    }
    fn describe(&self) -> String {
        "pipe".into()
    }
}

fn pipe_client(
    hang: bool,
) -> (
    GuestClient,
    mpsc::UnboundedReceiver<tokio::io::DuplexStream>,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    let connector = PipeConnector { to_host: tx, hang };
    (GuestClient::from_connector(Arc::new(connector)), rx)
}

#[tokio::test(start_paused = true)]
async fn silent_host_times_out_after_20_virtual_seconds() {
    let (client, mut hosts) = pipe_client(false);
    let host = tokio::spawn(async move {
        let mut stream = hosts.recv().await.unwrap();
        let _ = read_message(&mut stream, Header::decode_request).await;
        // Never answer; keep the pipe open.
        std::future::pending::<()>().await;
    });
    let start = tokio::time::Instant::now();
    let e = client.scan(None).await.unwrap_err();
    assert_eq!(start.elapsed(), DEFAULT_REQUEST_TIMEOUT);
    assert!(
        matches!(
            e,
            GuestError::Timeout {
                stage: Stage::AwaitingReply,
                limit,
                ..
            } if limit == Duration::from_secs(20)
        ),
        "{e:?}"
    );
    host.abort();
}

#[tokio::test(start_paused = true)]
async fn the_limit_includes_connecting() {
    let (client, _hosts) = pipe_client(true);
    let start = tokio::time::Instant::now();
    let e = client.disconnect(1).await.unwrap_err();
    assert_eq!(start.elapsed(), Duration::from_secs(20));
    assert!(
        matches!(
            e,
            GuestError::Timeout {
                stage: Stage::Connecting,
                ..
            }
        ),
        "{e:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn requests_through_one_client_never_overlap() {
    let (client, mut hosts) = pipe_client(false);
    let client = Arc::new(client);
    let host = tokio::spawn(async move {
        let mut served = 0;
        while let Some(mut stream) = hosts.recv().await {
            // While this request is being answered (slowly), no other
            // connection may have been opened.
            let _ = read_message(&mut stream, Header::decode_request).await;
            tokio::time::sleep(Duration::from_secs(1)).await;
            assert!(hosts.is_empty(), "a second request was outstanding");
            let reply = Message::DisconnectResponse
                .encode(ScanLayout::Current)
                .unwrap();
            stream.write_all(&reply).await.unwrap();
            served += 1;
            if served == 3 {
                break;
            }
        }
        served
    });
    let calls = (0..3).map(|i| {
        let client = client.clone();
        tokio::spawn(async move { client.disconnect(i).await })
    });
    for call in calls.collect::<Vec<_>>() {
        call.await.unwrap().unwrap();
    }
    assert_eq!(host.await.unwrap(), 3);
}

fn connect_reply(code: u16, mac: [u8; 6], session: u64) -> Vec<u8> {
    Message::ConnectResponse(ConnectResponse {
        result_code: code,
        bssid: MacAddr(mac),
        session_id: session,
    })
    .encode(ScanLayout::Current)
    .unwrap()
}

#[tokio::test]
async fn connect_sends_the_pmk_and_reads_the_reply() {
    let ssid = Ssid::new(b"ThisIsASSID").unwrap();
    let reply = connect_reply(0, [2, 0, 0, 0, 0, 1], 7);
    let (config, host) = scripted_host(Script::Reply(reply)).await;
    let client = GuestClient::new(&config).unwrap();
    let spec = ConnectSpec::wpa2_passphrase(ssid, "ThisIsAPassword").unwrap();
    let got = client.connect(&spec).await.unwrap();
    assert_eq!(
        got,
        ConnectResponse {
            result_code: 0,
            bssid: MacAddr([2, 0, 0, 0, 0, 1]),
            session_id: 7
        }
    );
    let request = host.await.unwrap();
    // Header: operation 3, 76 + 32 body bytes, version 1.
    assert_eq!(&request[..7], &[3, 108, 0, 0, 0, 1, 0]);
    let body = &request[7..];
    assert_eq!(body.len(), 108);
    assert_eq!(body[0], 11);
    assert_eq!(&body[1..12], b"ThisIsASSID");
    assert!(body[12..33].iter().all(|b| *b == 0));
    assert_eq!(&body[33..39], &[0; 6], "any BSS");
    assert_eq!(&body[39..42], &[0, 2, 1]);
    assert_eq!(&body[42..50], &[0x02, 0xAC, 0x0F, 0, 0, 0, 0, 0]);
    assert_eq!(body[50], 1);
    assert_eq!(&body[51..55], &[0x04, 0xAC, 0x0F, 0]);
    assert!(body[55..71].iter().all(|b| *b == 0));
    assert_eq!(&body[71..75], &[0x04, 0xAC, 0x0F, 0]);
    assert_eq!(body[75], 32);
    // IEEE 802.11i test vector for this passphrase and SSID.
    assert_eq!(
        hex::encode(&body[76..]),
        "0dc0d6eb90555ed6419756b9a15ec3e3209b63df707dd508d14581f8982721af"
    );
    assert_eq!(
        &body[76..],
        pmk_from_passphrase("ThisIsAPassword", &ssid)
            .unwrap()
            .expose()
    );
    // And it is what the host side decodes.
    assert!(matches!(Request::decode(&request), Ok(Request::Connect(_))));
}

#[tokio::test]
async fn connect_open_with_bssid_and_failure_code() {
    let reply = connect_reply(17, [0; 6], 0);
    let (config, host) = scripted_host(Script::Reply(reply)).await;
    let client = GuestClient::new(&config).unwrap();
    let spec =
        ConnectSpec::open(Ssid::new(b"FakeOpen").unwrap()).bssid(MacAddr([2, 0, 0, 0, 0, 9]));
    let got = client.connect(&spec).await.unwrap();
    assert_eq!(got.result_code, 17, "a refusal is a reply, not an error");
    let request = host.await.unwrap();
    assert_eq!(&request[..7], &[3, 76, 0, 0, 0, 1, 0]);
    assert_eq!(&request[7 + 33..7 + 39], &[2, 0, 0, 0, 0, 9]);
    assert!(request[7 + 39..].iter().all(|b| *b == 0));
}

#[tokio::test]
async fn truncated_connect_responses_are_not_success() {
    let spec = ConnectSpec::open(Ssid::new(b"x").unwrap());
    // Header announcing 16 bytes, then a close: the driver reads zeros,
    // i.e. success with a zero BSSID.
    let (config, host) = scripted_host(Script::Reply(vec![4, 16, 0, 0, 0, 1, 0])).await;
    let e = GuestClient::new(&config)
        .unwrap()
        .connect(&spec)
        .await
        .unwrap_err();
    host.abort();
    assert_eq!(
        e.violation(),
        Some(&Violation::Truncated {
            got: 7,
            expected: 23
        })
    );
    // A header announcing fewer bytes than a CONNECT_RESPONSE has.
    let mut reply = vec![4, 8, 0, 0, 0, 1, 0];
    reply.extend_from_slice(&[0; 8]);
    let (config, host) = scripted_host(Script::Reply(reply)).await;
    let e = GuestClient::new(&config)
        .unwrap()
        .connect(&spec)
        .await
        .unwrap_err();
    host.abort();
    assert_eq!(e.violation().map(Violation::rule), Some("body-size"));
    // Complete, but success with no BSSID.
    let (config, host) = scripted_host(Script::Reply(connect_reply(0, [0; 6], 1))).await;
    let e = GuestClient::new(&config)
        .unwrap()
        .connect(&spec)
        .await
        .unwrap_err();
    host.abort();
    assert_eq!(e.violation(), Some(&Violation::ZeroBssidOnSuccess));
}

#[tokio::test]
async fn disconnect_sends_the_session_and_expects_an_empty_reply() {
    let reply = Message::DisconnectResponse
        .encode(ScanLayout::Current)
        .unwrap();
    let (config, host) = scripted_host(Script::Reply(reply)).await;
    GuestClient::new(&config)
        .unwrap()
        .disconnect(0x0102_0304_0506_0708)
        .await
        .unwrap();
    assert_eq!(
        host.await.unwrap(),
        vec![5, 8, 0, 0, 0, 1, 0, 8, 7, 6, 5, 4, 3, 2, 1]
    );
    // A DISCONNECT_RESPONSE with a body is refused before reading it.
    let (config, host) = scripted_host(Script::Reply(vec![6, 1, 0, 0, 0, 1, 0, 0])).await;
    let e = GuestClient::new(&config)
        .unwrap()
        .disconnect(1)
        .await
        .unwrap_err();
    host.abort();
    assert_eq!(e.violation().map(Violation::rule), Some("body-too-large"));
}

// --- notifications ---------------------------------------------------------

async fn watcher(layout: ScanLayout) -> (NotificationWatcher, u16) {
    let config = TransportConfig::Tcp {
        address: LOCALHOST,
        request_port: 0,
        notification_port: 0,
    };
    let w = NotificationWatcher::bind(&config, layout).await.unwrap();
    let port = w.local_port().unwrap() as u16;
    (w, port)
}

async fn notify(port: u16, bytes: &[u8]) {
    let mut s = TcpStream::connect((LOCALHOST, port)).await.unwrap();
    s.write_all(bytes).await.unwrap();
    s.shutdown().await.unwrap();
}

#[tokio::test]
async fn watcher_yields_each_notification_type() {
    let (w, port) = watcher(ScanLayout::Current).await;
    let l = ScanLayout::Current;
    let sender = tokio::spawn(async move {
        notify(
            port,
            &Message::NotifDisconnected { session_id: 9 }
                .encode(l)
                .unwrap(),
        )
        .await;
        notify(
            port,
            &Message::NotifSignalQuality { dbm: -61 }.encode(l).unwrap(),
        )
        .await;
        let scan = Message::ScanResponse(two_networks(false))
            .encode(l)
            .unwrap();
        notify(port, &scan).await;
    });
    assert_eq!(
        w.next().await.unwrap(),
        Notification::Disconnected { session_id: 9 }
    );
    assert_eq!(
        w.next().await.unwrap(),
        Notification::SignalQuality { dbm: -61 }
    );
    assert_eq!(
        w.next().await.unwrap(),
        Notification::ScanResults(two_networks(false))
    );
    sender.await.unwrap();
}

#[tokio::test]
async fn watcher_reads_legacy_scan_notifications_as_configured() {
    let (w, port) = watcher(ScanLayout::Legacy).await;
    let bytes = scan_reply(ScanLayout::Legacy, &two_networks(true));
    tokio::spawn(async move { notify(port, &bytes).await });
    assert_eq!(
        w.next().await.unwrap(),
        Notification::ScanResults(two_networks(true))
    );
}

#[tokio::test]
async fn a_malformed_notification_costs_only_its_connection() {
    let (w, port) = watcher(ScanLayout::Current).await;
    let sender = tokio::spawn(async move {
        // Signal quality must be exactly 1 byte.
        notify(port, &[8, 2, 0, 0, 0, 1, 0, 0xC4, 0]).await;
        // NOTIF_DISCONNECTED with its body missing.
        notify(port, &[7, 8, 0, 0, 0, 1, 0]).await;
        // A reply is not a notification.
        notify(port, &[6, 0, 0, 0, 0, 1, 0]).await;
        // Wrong version.
        notify(port, &[8, 1, 0, 0, 0, 2, 0, 0xC4]).await;
        // An empty connection.
        notify(port, &[]).await;
        // A scan notification with an unknown channel.
        notify(
            port,
            &patched(&two_networks(false), |b| {
                b[9 + 14..9 + 18].copy_from_slice(&1u32.to_le_bytes())
            }),
        )
        .await;
        // And then a good one.
        notify(port, &[8, 1, 0, 0, 0, 1, 0, 0xC4]).await;
    });
    let mut rules = Vec::new();
    for _ in 0..6 {
        let e = w.next().await.unwrap_err();
        assert_eq!(e.class(), ErrorClass::Malformed, "{e}");
        rules.push(e.violation().unwrap().rule());
    }
    assert_eq!(
        rules,
        [
            "body-too-large",
            "truncated",
            "wrong-operation",
            "version",
            "no-message",
            "unknown-channel"
        ]
    );
    assert_eq!(
        w.next().await.unwrap(),
        Notification::SignalQuality { dbm: -60 }
    );
    sender.await.unwrap();
}

#[tokio::test]
async fn a_notification_connection_that_stays_silent_times_out() {
    let (w, port) = watcher(ScanLayout::Current).await;
    let w = w.read_timeout(Duration::from_millis(50));
    let silent = tokio::spawn(async move {
        let mut s = TcpStream::connect((LOCALHOST, port)).await.unwrap();
        // Hold the connection open, silent, until the watcher drops it.
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf).await;
    });
    let e = w.next().await.unwrap_err();
    assert!(matches!(e, GuestError::NotificationTimeout { .. }), "{e:?}");
    silent.await.unwrap();
}
