//! The `perstack` binary: the library's command line ([`perstack::run_cli`]) with the allocator.

use std::process::ExitCode;

/// mimalloc: glibc's malloc serialises the runtime's worker threads on its arena locks, which
/// doubled the CPU time of a busy engine (see `benches/fanout.rs`).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    perstack::run_cli()
}
