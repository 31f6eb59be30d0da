//! The handshake: `hello` frames and HS256 tokens → `switchboard_wire::identity::identify_hello` (the
//! properties and the input layout: `checks::hello`).

#![no_main]

// Each target runs one of the checks; the others are unused here.
#[allow(dead_code)]
#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    checks::hello(data);
});
