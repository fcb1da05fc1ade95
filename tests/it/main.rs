//! Integration tests: one binary, one module per concern.

mod builtin_rules;
mod cli;
mod corpus;
mod evasion;
mod generated;
mod hostile;
mod language;
mod properties;
mod support;
