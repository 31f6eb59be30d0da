//! End-to-end support for Switchboard: test client, local topologies, test bed, load tools.
pub mod bench;
pub mod client;
pub mod fault;
pub mod ha;
pub mod promql;
pub mod testbed;
pub mod topology;
