//! `perstack start [expertKey] [query]`: the interactive workbench (see [`crate::tui`]).
//!
//! Takes `run`'s options (the same flag list) and its preparation ([`super::run::prepare`]):
//! same configuration, provider, storage and settings. Differences from `run`: the engine has
//! no stdout sink (stdout is the screen), diagnostics go to `perstack/start.log`, and missing
//! positionals open the selection screen. With both positionals the job starts at once.

use std::io::IsTerminal;

use super::run::{RunArgs, launch, prepare, wait_for_signal};
use crate::engine::EngineError;
use crate::tui::session::{self, FirstJob};

/// Where `start` writes its diagnostics, under the current directory.
pub(super) const LOG_FILE: &str = "perstack/start.log";

/// Run the workbench and return the exit code.
pub(super) async fn execute(args: RunArgs) -> u8 {
    match start(args).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("perstack: {e}");
            e.exit_code()
        }
    }
}

async fn start(args: RunArgs) -> Result<u8, EngineError> {
    if args.nats.is_set() {
        return Err(EngineError::Usage(
            "perstack start runs jobs locally; submit to the cluster with perstack run --nats"
                .into(),
        ));
    }
    if !std::io::stdout().is_terminal() || !std::io::stdin().is_terminal() {
        return Err(EngineError::Usage(
            "perstack start needs a terminal; use perstack run for headless runs".into(),
        ));
    }
    let prepared = prepare(&args).await?;
    let provider = prepared.provider.to_string();
    let config_path = args
        .config
        .as_ref()
        .map_or_else(|| "perstack.toml".to_owned(), |p| p.display().to_string());
    let engine = prepared.builder.build();
    let catalog = session::catalog(&engine, &prepared.config, config_path).await;
    let first = if args.expert_key.is_empty() || args.query.is_empty() {
        None
    } else {
        let expert = args.expert_key.clone();
        let handle = launch(&engine, args, Some(4096)).await?;
        Some(FirstJob { handle, expert })
    };
    let color = std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let result = session::run(&engine, catalog, &provider, color, first, wait_for_signal()).await;
    engine.shutdown().await;
    result.map_err(|e| EngineError::Usage(format!("terminal: {e}")))
}

/// Open [`LOG_FILE`] for appending (creating `perstack/`).
pub(super) fn log_file() -> std::io::Result<std::fs::File> {
    let path = std::path::Path::new(LOG_FILE);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
}
