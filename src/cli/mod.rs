//! The command-line front end: argument parsing, the stdin/stdout/file loop, signals,
//! following a file, the TCP sidecar and rsyslog's external-plugin protocol.
//! It only wires the library's pieces to the operating system.

pub mod args;
pub mod command;
pub mod common;
pub mod config;
pub mod consume;
pub mod follow;
pub mod hangup;
pub mod live;
pub mod mmexternal;
pub mod notes;
pub mod output;
pub mod parallel;
pub mod progress;
pub mod rlimit;
pub mod rules_cmd;
pub mod run;
pub mod serve;
pub mod signal;
