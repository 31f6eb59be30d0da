//! The handshake: `hello` frames and HS256 tokens → `chat_node::identity::identify_hello` (the
//! properties and the input layout: `checks::hello`).

#![no_main]

#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    checks::hello(data);
});
