//! The whole request path (framing, decoding, the handler, encoding) fed
//! arbitrary sequences of guest request connections and simulated host
//! events, in virtual time. The interpretation of the input and the
//! invariants checked live in `fuzz/model/handler.rs`, shared with the
//! bounded property test in `tests/faults.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../model/handler.rs"]
mod model;

fuzz_target!(|data: &[u8]| {
    model::run(data);
});
