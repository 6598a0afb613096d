//! The network-namespace test bed lives in the `testbed` crate, shared with the benchmark.
pub use testbed::*;
