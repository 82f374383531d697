//! Codec benchmarks: encoding scan responses of realistic size and decoding
//! the largest request a guest sends. `cargo bench --profile profiling --bench codec`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use proxy_wifi::guest::ConnectSpec;
use proxy_wifi::protocol::{
    ssid_element, wpa2_psk_ccmp_rsn_element, Key, MacAddr, Message, Request, ScanBss, ScanLayout,
    ScanResponse, Ssid, CAPABILITY_ESS, CAPABILITY_PRIVACY,
};

/// About 300 bytes of IEs, like a real beacon: SSID, rates, DS, RSN, HT
/// capabilities/operation, extended capabilities, VHT, a vendor element.
fn realistic_ies(i: usize) -> Vec<u8> {
    let ssid = Ssid::new(format!("network-{i:05}").as_bytes()).unwrap_or_default();
    let mut ies = ssid_element(&ssid);
    ies.extend_from_slice(&[1, 8, 0x82, 0x84, 0x8b, 0x96, 0x0c, 0x12, 0x18, 0x24]);
    ies.extend_from_slice(&[3, 1, 6]);
    ies.extend_from_slice(&wpa2_psk_ccmp_rsn_element());
    for (id, len) in [
        (45u8, 26usize),
        (61, 22),
        (127, 8),
        (191, 12),
        (192, 5),
        (221, 24),
        (221, 60),
        (221, 90),
    ] {
        ies.push(id);
        ies.push(len as u8);
        ies.extend((0..len).map(|k| (k * 7 + i) as u8));
    }
    ies
}

fn scan_response(n: usize) -> ScanResponse {
    let freqs = [
        2_412_000, 2_437_000, 2_462_000, 5_180_000, 5_240_000, 5_745_000, 6_115_000,
    ];
    ScanResponse {
        scan_complete: true,
        bss: (0..n)
            .map(|i| ScanBss {
                bssid: MacAddr([0x02, 0, 0, (i >> 16) as u8, (i >> 8) as u8, i as u8]),
                capabilities: CAPABILITY_ESS | CAPABILITY_PRIVACY,
                rssi_dbm: -40 - (i % 50) as i32,
                beacon_interval: 100,
                freq_khz: freqs[i % freqs.len()],
                ies: realistic_ies(i),
            })
            .collect(),
    }
}

fn encode_scan(c: &mut Criterion) {
    let mut group = c.benchmark_group("encode_scan_response");
    for n in [1usize, 100, 1000] {
        let msg = Message::ScanResponse(scan_response(n));
        let bytes = msg
            .encode(ScanLayout::Current)
            .map(|b| b.len())
            .unwrap_or(0);
        group.throughput(Throughput::Bytes(bytes as u64));
        group.bench_with_input(BenchmarkId::from_parameter(n), &msg, |b, msg| {
            b.iter(|| black_box(msg).encode(ScanLayout::Current))
        });
    }
    group.finish();
}

fn decode_connect(c: &mut Criterion) {
    let spec = ConnectSpec::wpa2_psk(
        Ssid::new(b"FakeWpa2Psk").unwrap_or_default(),
        Key::new(vec![0x5a; 32]),
    )
    .bssid(MacAddr([2, 0, 0, 0, 0, 1]));
    let bytes = Request::Connect(spec.to_request())
        .encode()
        .unwrap_or_default();
    c.bench_function("decode_connect_request", |b| {
        b.iter(|| Request::decode(black_box(&bytes)))
    });
}

criterion_group!(benches, encode_scan, decode_connect);
criterion_main!(benches);
