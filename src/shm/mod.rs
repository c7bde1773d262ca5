//! Shared-memory per-CPU ring buffers: the data plane between apps and the daemon.
