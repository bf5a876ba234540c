#![doc = include_str!("../README.md")]
//!
//! # Layout
//!
//! - [`schema`]: wire types (messages, checkpoints, events, jobs, run settings). No I/O.
//! - [`config`]: `perstack.toml` discovery, parsing, validation and `.env` loading.
//! - [`storage`]: the `Storage` trait, the filesystem store (Perstack's layout) and an in-memory one.
//! - [`skill`]: skills as the model sees them: the in-process base skill, delegates, the tool catalog.
//! - [`llm`]: the `LanguageModel` trait, the retry policy and the scripted provider.
//! - [`agent`]: the pure agent-loop state machine and the instruction message.
//! - [`actor`]: the kameo actors: event bus, job, run, skill.
//! - [`engine`]: the embedding API: `Engine` builder and `JobHandle`.
//! - [`cli`]: the `perstack` command line.
//! - `sandbox`: the native Linux sandbox for the processes started for Experts, and its egress.
//! - [`prelude`]: the embedding surface in one import.

pub mod actor;
pub mod agent;
pub mod cli;
pub mod config;
pub mod engine;
pub mod llm;
pub mod prelude;
mod sandbox;
pub mod schema;
pub mod skill;
pub mod storage;
