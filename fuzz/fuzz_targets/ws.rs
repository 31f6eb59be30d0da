//! Bytes on an upgraded socket → `chat_node::ws::WsReader` (the property: `checks::ws`).

#![no_main]

#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    checks::ws(data);
});
