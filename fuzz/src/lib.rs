//! The checks behind the fuzz targets. They live in `checks.rs`, which the main crate's
//! test suite also includes, so that every seed and every input that once failed is
//! re-checked by `cargo test` (tests/it/fuzz_regressions.rs).

pub mod checks;
