//! `perstack-sandbox`: the sandbox trampoline alone ([`perstack::sandbox::trampoline_main`]).
//!
//! The engine starts every confined process through it (`perstack-sandbox sandbox-exec
//! <policy>`, the same arguments as the `perstack` binary's hidden subcommand). It links only
//! the trampoline's stages, so executing it costs a fraction of executing the whole CLI; the
//! system allocator is enough for its few allocations.

use std::process::ExitCode;

fn main() -> ExitCode {
    perstack::sandbox::trampoline_main()
}
