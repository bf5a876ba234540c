//! Integration suites, one file per capability.

mod bus;
mod cli;
mod cli_providers;
mod common;
mod continue_job;
mod delegation;
mod fake_server;
mod hooked;
mod lifecycle;
mod lockfile;
mod log;
mod provider_anthropic;
mod provider_corpus;
mod provider_examples;
mod provider_google;
mod provider_ollama;
mod provider_openai;
mod recovery;
mod retry_policy;
mod schema_roundtrip;
mod skills_e2e;
mod storage_failure;
mod telemetry;
mod traces;
mod wire;
mod writer;
