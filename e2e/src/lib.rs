//! End-to-end support for Switchboard: test client, local topologies, test bed, load tools.
pub mod testbed;
