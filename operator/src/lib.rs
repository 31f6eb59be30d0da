//! Switchboard Kubernetes operator (see issue: ChatCluster resource). Not yet built.
