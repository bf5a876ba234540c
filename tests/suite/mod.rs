//! Integration suites, one file per capability.

mod bus;
mod cli;
mod delegation;
mod fake_server;
mod mcp;
mod provider_anthropic;
mod recovery;
mod schema_roundtrip;
mod traces;
