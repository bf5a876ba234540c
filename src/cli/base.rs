//! `perstack base`: serve the built-in `@perstack/base` skill as a standalone MCP server over
//! stdio, so `perstackBaseSkillCommand` can point at it and any MCP client can use it. The
//! workspace is the current directory; the environment given to `exec` is the filtered one.

use clap::Args;
use rmcp::ServiceExt;

use crate::skill::BaseSkill;

/// Options of `perstack base`.
#[derive(Debug, Args)]
pub(crate) struct BaseArgs {
    /// Workspace directory (default: the current directory).
    #[arg(long)]
    pub workspace: Option<std::path::PathBuf>,
}

/// Serve until the client closes stdin; returns the exit code.
pub(super) async fn execute(args: BaseArgs) -> u8 {
    let workspace = match args.workspace.map_or_else(std::env::current_dir, Ok) {
        Ok(w) => w,
        Err(e) => {
            eprintln!("perstack: cannot read the current directory: {e}");
            return 2;
        }
    };
    // `new` takes the safe subset of this process's environment (and, unlike
    // `std::env::vars`, does not panic on a variable that is not UTF-8).
    let skill = BaseSkill::new(workspace);
    let service = match skill.serve(rmcp::transport::stdio()).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("perstack: base skill could not start: {e}");
            return 1;
        }
    };
    match service.waiting().await {
        Ok(_) => 0,
        Err(e) => {
            eprintln!("perstack: base skill stopped: {e}");
            1
        }
    }
}
