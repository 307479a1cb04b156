//! The library side of the `nanoclaw` package: only what must be reachable from outside
//! the binary (the fuzz targets). Everything else is the binary's own (`main.rs`).

pub mod args;
