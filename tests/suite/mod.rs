//! Integration suites, one file per capability.

mod schema_roundtrip;
mod cli;
