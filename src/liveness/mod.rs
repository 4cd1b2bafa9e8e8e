//! Liveness: noticing that a process is alive but stuck. The progress
//! watchdog ([`progress`]) judges processes by their CPU and I/O counters.

pub mod progress;
