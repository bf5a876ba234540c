//! Integration suites, one file per capability.

mod cli;
mod delegation;
mod fake_server;
mod provider_anthropic;
mod recovery;
mod schema_roundtrip;
mod traces;
