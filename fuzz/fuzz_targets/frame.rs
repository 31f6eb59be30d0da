//! Client frames → `chat_node::protocol::parse` (the property: `checks::frame`).

#![no_main]

#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    checks::frame(data);
});
