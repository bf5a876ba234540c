//! `perstack install`: start every Expert's MCP skills once, collect their tool definitions
//! and write `perstack.lock` next to `perstack.toml`. With the lockfile, `perstack run` offers
//! tools to the model without starting any skill first; each skill starts on its first call.
//! Registry Experts reachable from the file's are resolved too, and pinned (version and
//! definition digest) in the lockfile's `registryPins`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use clap::Args;

use crate::agent::catalog::select;
use crate::config::lockfile::{LOCKFILE_NAME, Lockfile};
use crate::config::{self, DEFAULT_ENV_PATHS};
use crate::schema::Skill;
use crate::skill::base::{connect_in_process, is_pinned};
use crate::skill::mcp::{ConnectOptions, connect_http, connect_stdio};
use crate::skill::{BaseSkill, ToolDefinition};

/// Options of `perstack install`.
#[derive(Debug, Args)]
pub(crate) struct InstallArgs {
    /// Path to perstack.toml (default: the nearest one walking up from the current directory).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// dotenv files to load (repeatable; default .env and .env.local).
    #[arg(long = "env-path")]
    pub env_path: Vec<String>,
}

/// Write the lockfile; returns the exit code.
pub(super) async fn execute(args: InstallArgs) -> u8 {
    match install(args).await {
        Ok(path) => {
            println!("Generated {}", path.display());
            0
        }
        Err((code, message)) => {
            eprintln!("perstack: {message}");
            code
        }
    }
}

async fn install(args: InstallArgs) -> Result<PathBuf, (u8, String)> {
    let usage = |e: &dyn std::fmt::Display| (2u8, e.to_string());
    let cwd = std::env::current_dir().map_err(|e| usage(&e))?;
    let path = config::discover(args.config.as_deref(), &cwd).map_err(|e| usage(&e))?;
    let mut cfg = config::load(&path).map_err(|e| usage(&e))?;
    println!(
        "Resolving experts: {}",
        cfg.experts.keys().cloned().collect::<Vec<_>>().join(", ")
    );
    let env_paths: Vec<String> = if args.env_path.is_empty() {
        cfg.env_path
            .clone()
            .unwrap_or_else(|| DEFAULT_ENV_PATHS.iter().map(|s| (*s).to_string()).collect())
    } else {
        args.env_path
    };
    let env = config::load_env(&cwd, &env_paths, std::env::vars()).map_err(|e| usage(&e))?;
    // Every registry Expert reachable from the file's, re-resolved (tags included) and pinned.
    let roots: Vec<String> = cfg.experts.keys().cloned().collect();
    let pinned = crate::registry::resolve_into(&mut cfg, &env, &roots, None, false)
        .await
        .map_err(|e| (e.exit_code(), e.to_string()))?;
    for r in &pinned {
        println!("  {} -> {} ({})", r.requested, r.pin.key, r.pin.digest);
    }
    cfg.check_all().map_err(|e| usage(&e))?;
    // Skills start as `perstack run` would start them: confined unless `runtime = "local"`.
    let isolation = crate::sandbox::Isolation::for_runtime(cfg.runtime);
    if isolation == crate::sandbox::Isolation::Sandboxed {
        crate::sandbox::check_available().map_err(|e| (e.exit_code(), e.to_string()))?;
    }
    let opts = ConnectOptions {
        sandbox: isolation.scope(&cwd, path.parent()),
        workspace: Some(cwd.clone()),
        allow_private_endpoints: ConnectOptions::private_endpoints_allowed(&env),
        ..ConnectOptions::default()
    };
    println!("Collecting tool definitions");
    let mut tools: BTreeMap<String, Vec<ToolDefinition>> = BTreeMap::new();
    for (key, expert) in &cfg.experts {
        let mut defs = Vec::new();
        for (name, skill) in &expert.skills {
            let found = match skill {
                Skill::McpStdioSkill(s) if name == crate::schema::BASE_SKILL && !is_pinned(s) => {
                    let c = connect_in_process(BaseSkill::new(cwd.clone()))
                        .await
                        .map_err(|e| (1, format!("{key}/{name}: {e}")))?;
                    let t = c.tools().to_vec();
                    c.close().await;
                    t
                }
                Skill::McpStdioSkill(s) => {
                    // Confined, the server reaches its allowed domains (and the registries
                    // `npx`/`uvx` fetch it from) through its own proxy; refusals go to the log.
                    let mut opts = opts.clone();
                    let _egress = match &mut opts.sandbox {
                        Some(scope) => {
                            let (proxy, events) = crate::sandbox::egress::start_proxy(
                                scope,
                                s.allowed_domains.iter().flatten(),
                            )
                            .map_err(|e| (1, format!("{key}/{name}: egress proxy: {e}")))?;
                            log_proxy_access(name.clone(), events);
                            Some(proxy)
                        }
                        None => None,
                    };
                    let (c, _stderr) = connect_stdio(s, &env, &opts)
                        .await
                        .map_err(|e| (1, format!("{key}/{name}: {e}")))?;
                    let t = select(c.tools(), &s.pick, &s.omit);
                    c.close().await;
                    t
                }
                Skill::McpSseSkill(s) => {
                    let c = connect_http(s, &opts)
                        .await
                        .map_err(|e| (1, format!("{key}/{name}: {e}")))?;
                    let t = select(c.tools(), &s.pick, &s.omit);
                    c.close().await;
                    t
                }
                Skill::InteractiveSkill(_) => continue,
            };
            println!("  {key} / {name}: {} tools", found.len());
            defs.extend(found.into_iter().map(|mut t| {
                t.skill_name = name.clone();
                t
            }));
        }
        tools.insert(key.clone(), defs);
    }
    let now = crate::actor::context::now_ms();
    let mut lock = Lockfile::new(&path, &cfg.experts, tools, now);
    lock.registry_pins = pinned.into_iter().map(|r| (r.requested, r.pin)).collect();
    let out = path.parent().unwrap_or(&cwd).join(LOCKFILE_NAME);
    lock.write(&out).map_err(|e| (1, e.to_string()))?;
    Ok(out)
}

/// Blocked egress of a skill started by `install` is logged (there is no event stream here).
fn log_proxy_access(skill: String, mut events: crate::sandbox::egress::proxy::ProxyEvents) {
    tokio::spawn(async move {
        while let Some(access) = events.recv().await {
            if let Some(reason) = access.reason {
                tracing::warn!(
                    skill,
                    domain = access.domain,
                    port = access.port,
                    reason,
                    "egress blocked"
                );
            }
        }
    });
}
