//! The command-line front end: argument parsing, the stdin/stdout/file loop, signals.
//! It only wires the library's pieces to the operating system.

pub mod args;
pub mod output;
pub mod parallel;
pub mod rules_cmd;
pub mod run;
pub mod signal;
