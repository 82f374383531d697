//! The host's request decoder fed arbitrary bytes: it must never panic, and
//! whatever it accepts must re-encode to a message that decodes to the same
//! request (bytes past ssid_len and unused suite slots are padding, which the
//! encoder zeroes).
#![no_main]

use libfuzzer_sys::fuzz_target;
use proxy_wifi::protocol::{Header, Message, Request, ScanLayout, HEADER_LEN};

fuzz_target!(|data: &[u8]| {
    if let Some(head) = data.get(..HEADER_LEN).and_then(|h| <&[u8; HEADER_LEN]>::try_from(h).ok()) {
        let _ = Header::decode_request(head);
        let _ = Header::decode_host(head);
    }
    if let Ok(req) = Request::decode(data) {
        let again = req.encode().expect("a decoded request re-encodes");
        assert_eq!(again.len(), data.len(), "re-encoding changed the size");
        assert_eq!(Request::decode(&again).as_ref(), Ok(&req));
    }
    // The guest client's strict decoder, both layouts.
    for layout in [ScanLayout::Current, ScanLayout::Legacy] {
        if let Ok(msg) = Message::decode(data, layout) {
            let again = msg.encode(layout).expect("a decoded message re-encodes");
            let reparsed = Message::decode(&again, layout).expect("re-encoded message decodes");
            assert_eq!(reparsed, msg);
        }
    }
});
