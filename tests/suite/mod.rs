//! Integration suites, one file per capability.

mod cli;
mod delegation;
mod schema_roundtrip;
mod traces;
