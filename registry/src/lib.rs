//! Switchboard registry.
