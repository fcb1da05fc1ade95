//! Throughput benchmarks (written with the benchmark commit).
fn main() {}
