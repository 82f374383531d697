//! Issue 17, point 11: every heap buffer a key passed through is wiped
//! before it is freed.
//!
//! A global allocator that, while armed, looks into every block being
//! freed (and every block a `realloc` leaves behind: the default `realloc`
//! allocates, copies and frees through `dealloc`) for the PMK and the
//! passphrase. One connect then goes the whole way in this process: the
//! passphrase read from a file as `guest connect --passphrase-file` reads
//! it, the PMK derived, the request encoded and sent by the guest client,
//! read, decoded and handed to the handler and the simulated backend (a
//! network with a passphrase, so the host derives and compares the PMK
//! too), then disconnect and stop. Any freed block still holding either
//! secret is a copy nobody wiped, and fails the test.
//!
//! What this cannot see: copies on the stack and in registers, and what
//! the kernel keeps of socket buffers.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::time::Duration;

use proxy_wifi::guest::{ConnectSpec, GuestClient};
use proxy_wifi::protocol::{pmk_from_passphrase, Ssid};
use proxy_wifi::service::Service;
use proxy_wifi::transport::TransportConfig;
use proxy_wifi::wifi::simulated::{SimulatedNetwork, SimulatedWifi};
use proxy_wifi::wifi::Security;

const PASSPHRASE: &str = "canary passphrase 7f3a9c";
const SSID: &[u8] = b"Guarded";

static ARMED: AtomicBool = AtomicBool::new(false);
static PMK: [AtomicU8; 32] = [const { AtomicU8::new(0) }; 32];
/// Freed blocks that still held a secret, and the sizes of the first few.
static FOUND: AtomicUsize = AtomicUsize::new(0);
static FOUND_SIZES: [AtomicUsize; 8] = [const { AtomicUsize::new(0) }; 8];

struct Checking;

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.len() >= needle.len() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// Whether `block` holds the PMK's first 16 bytes, compared byte by byte
/// with the atomics: a copy of them in a local would sit on the stack of
/// whichever thread frees, and a future built there later could carry it
/// into a heap block, which this check would then find (it did: the check
/// kept failing on its own copy).
fn holds_pmk_prefix(block: &[u8]) -> bool {
    block.windows(16).any(|w| {
        w.iter()
            .zip(&PMK)
            .all(|(b, a)| *b == a.load(Ordering::Relaxed))
    })
}

unsafe impl GlobalAlloc for Checking {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if ARMED.load(Ordering::SeqCst) && layout.size() >= 16 {
            // SAFETY: the block is live until System.dealloc below.
            let block = unsafe { std::slice::from_raw_parts(ptr, layout.size()) };
            if holds_pmk_prefix(block) || contains(block, PASSPHRASE.as_bytes()) {
                let n = FOUND.fetch_add(1, Ordering::SeqCst);
                if let Some(slot) = FOUND_SIZES.get(n) {
                    slot.store(layout.size(), Ordering::SeqCst);
                }
            }
        }
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Checking = Checking;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_freed_buffer_holds_the_key() {
    let ssid = Ssid::new(SSID).unwrap();
    {
        let pmk = pmk_from_passphrase(PASSPHRASE, &ssid).unwrap();
        for (a, b) in PMK.iter().zip(pmk.expose()) {
            a.store(*b, Ordering::SeqCst);
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("passphrase");
    std::fs::write(&secret_file, format!("{PASSPHRASE}\n")).unwrap();
    // The backend holds the configured passphrase (configuration, not a
    // key the guest sent): it lives until after the check.
    let backend = SimulatedWifi::new(vec![SimulatedNetwork {
        ssid,
        bssid: "02:00:00:00:00:31".parse().unwrap(),
        freq_khz: 2_437_000,
        rssi_dbm: -40,
        security: Security::WPA2_PSK_CCMP,
        passphrase: Some(PASSPHRASE.to_string()),
    }]);
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let notification_port = free.local_addr().unwrap().port();
    let service = Service::builder(
        TransportConfig::Tcp {
            address: "127.0.0.1".parse().unwrap(),
            request_port: 0,
            notification_port,
        },
        backend.clone(),
    )
    .build();
    service.start().await.unwrap();
    let request_port = u16::try_from(service.request_port().await.unwrap()).unwrap();
    let client = GuestClient::new(&TransportConfig::Tcp {
        address: "127.0.0.1".parse().unwrap(),
        request_port,
        notification_port,
    })
    .unwrap()
    .timeout(Duration::from_secs(20));

    ARMED.store(true, Ordering::SeqCst);
    {
        let passphrase =
            proxy_wifi::guest::read_secret(std::fs::File::open(&secret_file).unwrap()).unwrap();
        let spec = ConnectSpec::wpa2_passphrase(ssid, &passphrase).unwrap();
        drop(passphrase);
        let reply = client.connect(&spec).await.unwrap();
        assert_eq!(reply.result_code, 0, "the right key is accepted");
        // A wrong key is refused, and its buffers are wiped too.
        let wrong = ConnectSpec::wpa2_passphrase(ssid, "not the passphrase").unwrap();
        assert_eq!(client.connect(&wrong).await.unwrap().result_code, 15);
        client.disconnect(reply.session_id + 1).await.unwrap();
    }
    service.stop().await;
    drop(service);
    drop(client);
    ARMED.store(false, Ordering::SeqCst);
    drop(backend);
    drop(free);

    let found = FOUND.load(Ordering::SeqCst);
    let sizes: Vec<usize> = FOUND_SIZES
        .iter()
        .map(|s| s.load(Ordering::SeqCst))
        .filter(|s| *s > 0)
        .collect();
    println!("FIGURES secrets in memory: {found} freed block(s) still held the PMK or passphrase (sizes {sizes:?})");
    assert_eq!(
        found, 0,
        "freed blocks still holding the PMK or the passphrase, sizes {sizes:?}"
    );
    // The check itself works: a plain copy of the PMK is caught.
    ARMED.store(true, Ordering::SeqCst);
    let copy: Vec<u8> = PMK.iter().map(|a| a.load(Ordering::SeqCst)).collect();
    drop(std::hint::black_box(copy));
    ARMED.store(false, Ordering::SeqCst);
    assert_eq!(FOUND.load(Ordering::SeqCst), 1, "the checker missed a copy");
}
