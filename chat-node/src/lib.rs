//! Switchboard chat-node.
