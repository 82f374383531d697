//! Every line a guest causes names the guest and its transport.
//!
//! This is its own test binary with one test because it installs a global
//! subscriber: with a per-thread subscriber (`set_default`), another test
//! thread that logs first can cache a callsite as disabled, and the guest's
//! span then vanishes from this test's lines (seen once in CI).

use std::io;
use std::sync::{Arc, Mutex};

use proxy_wifi::protocol::Request;
use proxy_wifi::service::Service;
use proxy_wifi::test_utils::open_connect;
use proxy_wifi::transport::TransportConfig;
use proxy_wifi::wifi::simulated::SimulatedWifi;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Keeps what the subscriber writes.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn every_line_of_a_guest_names_the_guest_and_its_transport() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_current_span(true)
        .with_max_level(tracing::Level::DEBUG)
        .with_writer(move || writer.clone())
        .finish();
    tracing::subscriber::set_global_default(subscriber).unwrap();
    let config = TransportConfig::Tcp {
        address: "127.0.0.1".parse().unwrap(),
        request_port: 0,
        notification_port: 9,
    };
    let service = Service::builder(config, SimulatedWifi::reference())
        .name("vm1")
        .build();
    service.start().await.unwrap();
    let port = service.request_port().await.unwrap();
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port as u16))
        .await
        .unwrap();
    let connect = Request::Connect(open_connect("FakeOpen")).encode().unwrap();
    s.write_all(&connect).await.unwrap();
    let mut reply = Vec::new();
    s.read_to_end(&mut reply).await.unwrap();
    service.stop().await;
    let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let connect = lines
        .iter()
        .find(|l| l["fields"]["message"] == "guest connect")
        .unwrap_or_else(|| panic!("no guest connect line in {text}"));
    assert_eq!(connect["span"]["guest"], "vm1", "{connect}");
    assert!(connect["span"]["transport"]
        .as_str()
        .unwrap()
        .starts_with("tcp 127.0.0.1"));
    // Plain values, no Rust Debug forms.
    assert_eq!(connect["fields"]["security"], "open", "{connect}");
    for line in &lines {
        assert_eq!(
            line["span"]["guest"], "vm1",
            "a line without the guest: {line}"
        );
    }
}
