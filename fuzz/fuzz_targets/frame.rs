//! Client frames → `switchboard_wire::protocol::parse` (the property: `checks::frame`).

#![no_main]

// Each target runs one of the checks; the others are unused here.
#[allow(dead_code)]
#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    checks::frame(data);
});
