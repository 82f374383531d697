//! The handler driven the way a hostile guest and a busy host would drive
//! it, with its invariants checked. Shared by the `handler` fuzz target and
//! the bounded property test in `tests/faults.rs` (included with `#[path]`),
//! so both interpret an input the same way.
//!
//! An input is a byte string read as a sequence of steps. Each step is a
//! guest request connection (well-formed requests, mutated ones, or raw
//! bytes) served through the service's own request path
//! ([`serve_request_connection`]) over an in-memory stream, or a host event
//! of the simulated backend (host connects or disconnects, signal changes,
//! spontaneous scan results, scans switching between sync and async), or a
//! pause. Everything runs on a current-thread runtime in paused (virtual)
//! time, so the handler's scan latency and timeouts cost nothing.
//!
//! Invariants, checked after every step:
//! - a connection that carried any byte gets exactly one reply, then EOF;
//!   one that carried nothing gets none;
//! - the reply decodes strictly (it was encoded correctly);
//! - a request that decodes gets the matching reply operation, anything
//!   else gets INVALID;
//! - connect responses carry session ids 1, 2, 3, ... in order, and a
//!   success names a BSSID;
//! - every notification the handler emits encodes and decodes back to
//!   itself.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use proxy_wifi::handler::{self, HandlerSettings};
use proxy_wifi::observer::ObserverQueue;
use proxy_wifi::protocol::{
    DisconnectRequest, Header, Key, MacAddr, Message, Operation, Request, ScanLayout, ScanRequest,
    Ssid, HEADER_LEN,
};
use proxy_wifi::test_utils::{open_connect, serve_request_connection, spawn_handler, wpa2_connect};
use proxy_wifi::wifi::fake_networks;
use proxy_wifi::wifi::simulated::{ScanMode, SimulatedWifi};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// SSIDs a well-formed request may name: the simulated networks, a fake
/// network, and one nobody has.
const NAMES: [&str; 5] = ["FakeWpa2Psk", "FakeOpen", "Fake6GHz", "FakeNet", "Missing"];

/// What a run did, for statistics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub requests: u64,
    pub invalid: u64,
    pub events: u64,
    pub notifications: u64,
}

/// Reads steps from the input, a byte at a time; past the end, zeros.
struct Input<'a> {
    data: &'a [u8],
}

impl Input<'_> {
    fn byte(&mut self) -> u8 {
        match self.data.split_first() {
            Some((b, rest)) => {
                self.data = rest;
                *b
            }
            None => 0,
        }
    }

    fn bytes(&mut self, n: usize) -> &[u8] {
        let n = n.min(self.data.len());
        let (head, rest) = self.data.split_at(n);
        self.data = rest;
        head
    }

    fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
}

fn ssid(name: &str) -> Ssid {
    Ssid::new(name.as_bytes()).unwrap_or_default()
}

fn connect_request(choice: u8) -> Request {
    let name = NAMES[usize::from(choice) % NAMES.len()];
    let psk = (choice / 8).is_multiple_of(2);
    Request::Connect(if psk {
        wpa2_connect(name, Key::new(vec![choice; 32]))
    } else {
        open_connect(name)
    })
}

fn scan_request(choice: u8) -> Request {
    let target =
        (!choice.is_multiple_of(6)).then(|| ssid(NAMES[usize::from(choice) % NAMES.len()]));
    Request::Scan(ScanRequest { ssid: target })
}

/// What the service must answer to a connection that carried `bytes`:
/// `None` for no reply at all.
fn expected_reply(bytes: &[u8]) -> Option<Operation> {
    if bytes.is_empty() {
        return None;
    }
    let Some(head) = bytes
        .get(..HEADER_LEN)
        .and_then(|h| <&[u8; HEADER_LEN]>::try_from(h).ok())
    else {
        return Some(Operation::Invalid);
    };
    let Ok(header) = Header::decode_request(head) else {
        return Some(Operation::Invalid);
    };
    let Some(body) = bytes.get(HEADER_LEN..HEADER_LEN + header.size as usize) else {
        return Some(Operation::Invalid);
    };
    Some(match Request::decode_body(header.operation, body) {
        Ok(Request::Scan(_)) => Operation::ScanResponse,
        Ok(Request::Connect(_)) => Operation::ConnectResponse,
        Ok(Request::Disconnect(_)) => Operation::DisconnectResponse,
        Err(_) => Operation::Invalid,
    })
}

/// Runs one input. Panics when an invariant breaks.
pub fn run(data: &[u8]) -> Summary {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a current-thread runtime");
    runtime.block_on(drive(data))
}

async fn drive(data: &[u8]) -> Summary {
    let mut input = Input { data };
    let layout = if input.byte() % 4 == 3 {
        ScanLayout::Legacy
    } else {
        ScanLayout::Current
    };
    let wifi = SimulatedWifi::reference();
    wifi.set_async_scan_delay(Duration::from_millis(300));
    let fake = fake_networks(Arc::new(|| {
        vec![(ssid("FakeNet"), MacAddr([2, 0, 0, 0, 0, 9]))]
    }));
    let (notify_tx, mut notify_rx) = tokio::sync::mpsc::channel::<Message>(64);
    let handle = spawn_handler(
        wifi.clone(),
        Some(fake),
        ObserverQueue::default(),
        notify_tx,
        HandlerSettings {
            scan_layout: layout,
            ..HandlerSettings::default()
        },
    );
    let notifications = Arc::new(Mutex::new(0u64));
    let counted = notifications.clone();
    let checker = tokio::spawn(async move {
        while let Some(message) = notify_rx.recv().await {
            let bytes = message
                .encode(layout)
                .unwrap_or_else(|e| panic!("notification {message:?} does not encode: {e}"));
            let back = Message::decode(&bytes, layout).expect("a notification decodes");
            assert_eq!(back, message, "a notification changed on the wire");
            *counted.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        }
    });

    let mut summary = Summary::default();
    let mut session: u64 = 0;
    let mut steps = 0;
    while !input.is_empty() && steps < 256 {
        steps += 1;
        let selector = input.byte();
        let bytes: Vec<u8> = match selector % 16 {
            0..=2 => encode(&scan_request(input.byte())),
            3..=5 => encode(&connect_request(input.byte())),
            6..=7 => {
                let session_id = match input.byte() % 5 {
                    0 => session,
                    1 => session.saturating_sub(1),
                    2 => session + 1,
                    3 => 0,
                    _ => {
                        let mut raw = [0u8; 8];
                        let got = input.bytes(8);
                        raw[..got.len()].copy_from_slice(got);
                        u64::from_le_bytes(raw)
                    }
                };
                encode(&Request::Disconnect(DisconnectRequest { session_id }))
            }
            8..=9 => {
                let n = usize::from(input.byte());
                input.bytes(n).to_vec()
            }
            10 => {
                // A well-formed request, then damaged: one byte changed and
                // perhaps cut short.
                let choice = input.byte();
                let mut bytes = match choice % 3 {
                    0 => encode(&scan_request(choice)),
                    1 => encode(&connect_request(choice)),
                    _ => encode(&Request::Disconnect(DisconnectRequest {
                        session_id: session,
                    })),
                };
                let at = usize::from(input.byte());
                let value = input.byte();
                let len = bytes.len().max(1);
                if let Some(b) = bytes.get_mut(at % len) {
                    *b = value;
                }
                let cut = usize::from(input.byte());
                if cut < bytes.len() {
                    bytes.truncate(cut);
                }
                bytes
            }
            11 => {
                let _ = wifi.host_connect(&ssid(NAMES[usize::from(input.byte()) % 3]));
                summary.events += 1;
                continue;
            }
            12 => {
                let _ = wifi.host_disconnect();
                summary.events += 1;
                continue;
            }
            13 => {
                let _ = wifi.signal(input.byte() % 101);
                summary.events += 1;
                continue;
            }
            14 => {
                match input.byte() % 3 {
                    0 => wifi.scan_results(),
                    1 => wifi.set_scan_mode(ScanMode::Async),
                    _ => wifi.set_scan_mode(ScanMode::Sync),
                }
                summary.events += 1;
                continue;
            }
            _ => {
                tokio::time::sleep(Duration::from_millis(u64::from(input.byte()) * 20)).await;
                continue;
            }
        };

        let expected = expected_reply(&bytes);
        let reply = exchange(&bytes, handle.client.clone(), layout).await;
        let Some(expected) = expected else {
            assert!(reply.is_empty(), "an empty connection was answered");
            continue;
        };
        summary.requests += 1;
        let message = Message::decode(&reply, layout)
            .unwrap_or_else(|e| panic!("reply {reply:02x?} to {bytes:02x?} does not decode: {e}"));
        assert_eq!(
            message.operation(),
            expected,
            "wrong reply to {bytes:02x?}: {message:?}"
        );
        match message {
            Message::Invalid => summary.invalid += 1,
            Message::ConnectResponse(c) => {
                assert_eq!(
                    c.session_id,
                    session + 1,
                    "session ids must count up by one"
                );
                session = c.session_id;
                if c.result_code == 0 {
                    assert_ne!(c.bssid, MacAddr::default(), "a success names its BSSID");
                }
            }
            _ => {}
        }
    }
    // Let pending asynchronous scans deliver, then stop the handler.
    tokio::time::sleep(Duration::from_secs(1)).await;
    handle.client.sync().await;
    drop(handle.client);
    let _ = handle.task.await;
    let _ = checker.await;
    summary.notifications = *notifications.lock().unwrap_or_else(|e| e.into_inner());
    summary
}

fn encode(request: &Request) -> Vec<u8> {
    request
        .encode()
        .expect("a well-formed request encodes")
        .to_vec()
}

/// One guest connection: send `bytes`, close the sending side, read
/// everything the service answers until it closes.
async fn exchange(bytes: &[u8], client: handler::HandlerClient, layout: ScanLayout) -> Vec<u8> {
    let (mut guest, host) = tokio::io::duplex(64 * 1024);
    let served = tokio::spawn(serve_request_connection(Box::new(host), client, layout));
    guest
        .write_all(bytes)
        .await
        .expect("the request is written");
    guest.shutdown().await.expect("the request side closes");
    let mut reply = Vec::new();
    guest
        .read_to_end(&mut reply)
        .await
        .expect("the reply is read");
    served.await.expect("the connection task does not panic");
    reply
}
