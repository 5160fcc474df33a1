//! `switchboard-bench`: the benchmark tool (see BENCHMARKS.md).

fn main() {}
