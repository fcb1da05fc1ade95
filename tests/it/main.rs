//! Integration tests: one binary, one module per concern.

mod agents;
mod builtin_rules;
mod cli;
mod config;
mod corpus;
mod crafted;
#[path = "../../benches/crafted.rs"]
#[allow(dead_code)]
mod crafted_cases;
mod daemons;
mod evasion;
mod evtx;
mod filters;
mod framing;
#[path = "../../fuzz/src/checks.rs"]
#[allow(dead_code)]
mod fuzz_checks;
mod fuzz_regressions;
mod generated;
mod hostile;
mod hunt;
mod language;
mod nats;
mod needs;
mod net;
mod progress;
mod properties;
mod reload;
mod serve;
mod sidecar;
mod sigma;
mod sigma_reference;
mod support;
mod tls;
