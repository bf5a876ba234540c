//! The registry management commands: `perstack publish [name] [--dry-run]`,
//! `unpublish <key@version> --force`, `tag <key@version> <tags...>` and
//! `status <key@version> <available|deprecated|disabled>`, with Perstack's payloads and
//! messages (the payloads and rules live in [`crate::registry::publish`]).
//!
//! The API key comes from `PERSTACK_API_KEY` in the environment or the `.env` files, and is
//! never printed. Perstack's interactive pickers (no arguments) are not offered: `publish`
//! without a name takes the file's only Expert, the others need their key.

use std::collections::BTreeMap;
use std::path::PathBuf;

use clap::Args;
use serde_json::{Value, json};

use crate::config::{self, DEFAULT_ENV_PATHS, PerstackConfig};
use crate::registry::key::{RegistryKey, Selector};
use crate::registry::publish::{CreatePayload, check_status, check_tags};
use crate::registry::{Registry, RegistryError};

/// Options every registry command takes.
#[derive(Debug, Args)]
pub(crate) struct RegistryOptions {
    /// Path to perstack.toml (default: the nearest one walking up from the current directory).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// dotenv files to load for PERSTACK_API_KEY (repeatable; default .env and .env.local).
    #[arg(long = "env-path")]
    pub env_path: Vec<String>,
}

/// `perstack publish`.
#[derive(Debug, Args)]
pub(crate) struct PublishArgs {
    /// The Expert of perstack.toml to publish (default: the file's only Expert).
    #[arg(value_name = "expertName")]
    pub expert_name: Option<String>,
    /// Print the JSON payload and stop.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub options: RegistryOptions,
}

/// `perstack unpublish`.
#[derive(Debug, Args)]
pub(crate) struct UnpublishArgs {
    /// The version to remove, `@org/name@1.0.0`.
    #[arg(value_name = "expertKey")]
    pub expert_key: String,
    /// Confirm the removal (required).
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub options: RegistryOptions,
}

/// `perstack tag`.
#[derive(Debug, Args)]
pub(crate) struct TagArgs {
    /// The version to tag, `@org/name@1.0.0`.
    #[arg(value_name = "expertKey")]
    pub expert_key: String,
    /// The tags to set (at most 8; `latest` moves by itself).
    #[arg(value_name = "tags")]
    pub tags: Vec<String>,
    #[command(flatten)]
    pub options: RegistryOptions,
}

/// `perstack status`.
#[derive(Debug, Args)]
pub(crate) struct StatusArgs {
    /// The version, `@org/name@1.0.0`.
    #[arg(value_name = "expertKey")]
    pub expert_key: String,
    /// available, deprecated or disabled.
    #[arg(value_name = "status")]
    pub status: String,
    #[command(flatten)]
    pub options: RegistryOptions,
}

/// `perstack publish`; the exit code.
pub(super) async fn publish(args: PublishArgs) -> u8 {
    report(publish_inner(args).await)
}

/// `perstack unpublish`; the exit code.
pub(super) async fn unpublish(args: UnpublishArgs) -> u8 {
    report(unpublish_inner(args).await)
}

/// `perstack tag`; the exit code.
pub(super) async fn tag(args: TagArgs) -> u8 {
    report(tag_inner(args).await)
}

/// `perstack status`; the exit code.
pub(super) async fn status(args: StatusArgs) -> u8 {
    report(status_inner(args).await)
}

fn report(result: Result<(), RegistryError>) -> u8 {
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("perstack: {e}");
            e.exit_code()
        }
    }
}

async fn publish_inner(args: PublishArgs) -> Result<(), RegistryError> {
    let (cfg, env) = load(&args.options, true)?;
    let cfg = cfg.ok_or_else(|| RegistryError::Usage("perstack.toml not found".into()))?;
    if cfg.experts.is_empty() {
        return Err(RegistryError::Usage(
            "No experts defined in perstack.toml".into(),
        ));
    }
    let name = match args.expert_name {
        Some(name) if cfg.experts.contains_key(&name) => name,
        Some(name) => {
            return Err(RegistryError::Usage(format!(
                "Expert \"{name}\" not found in perstack.toml; available experts: {}",
                cfg.experts.keys().cloned().collect::<Vec<_>>().join(", ")
            )));
        }
        None if cfg.experts.len() == 1 => cfg.experts.keys().next().cloned().unwrap_or_default(),
        None => {
            return Err(RegistryError::Usage(format!(
                "name the expert to publish: {}",
                cfg.experts.keys().cloned().collect::<Vec<_>>().join(", ")
            )));
        }
    };
    let expert = &cfg.experts[&name];
    let payload = CreatePayload::of(&name, expert)?;
    if args.dry_run {
        println!("Dry run - would publish:");
        println!("{}", payload.to_pretty());
        return Ok(());
    }
    let registry = registry(Some(&cfg), &env)?;
    let answer = registry.client().create(&payload.to_value(), &name).await?;
    println!("Published {}", answer_key(&answer, &name));
    Ok(())
}

async fn unpublish_inner(args: UnpublishArgs) -> Result<(), RegistryError> {
    let key = versioned(&args.expert_key)?;
    if !args.force {
        return Err(RegistryError::Usage(format!(
            "This will permanently remove {key} from the registry. Use --force to confirm."
        )));
    }
    let (cfg, env) = load(&args.options, false)?;
    registry(cfg.as_ref(), &env)?.client().delete(&key).await?;
    println!("Unpublished {key}");
    Ok(())
}

async fn tag_inner(args: TagArgs) -> Result<(), RegistryError> {
    let key = versioned(&args.expert_key)?;
    check_tags(&args.tags)?;
    let (cfg, env) = load(&args.options, false)?;
    let answer = registry(cfg.as_ref(), &env)?
        .client()
        .update(&key, &json!({ "tags": args.tags }))
        .await?;
    let tags: Vec<&str> = answer_expert(&answer)
        .and_then(|e| e.get("tags"))
        .and_then(Value::as_array)
        .map(|t| t.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    println!("Updated {}", answer_key(&answer, &key.to_string()));
    println!(
        "  Tags: {}",
        if tags.is_empty() {
            "(none)".to_owned()
        } else {
            tags.join(", ")
        }
    );
    Ok(())
}

async fn status_inner(args: StatusArgs) -> Result<(), RegistryError> {
    let key = versioned(&args.expert_key)?;
    check_status(&args.status)?;
    let (cfg, env) = load(&args.options, false)?;
    let answer = registry(cfg.as_ref(), &env)?
        .client()
        .update(&key, &json!({ "status": args.status }))
        .await?;
    let status = answer_expert(&answer)
        .and_then(|e| e.get("status"))
        .and_then(Value::as_str)
        .unwrap_or(&args.status)
        .to_owned();
    println!("Updated {}", answer_key(&answer, &key.to_string()));
    println!("  Status: {status}");
    Ok(())
}

/// `key` when it names a version.
fn versioned(key: &str) -> Result<RegistryKey, RegistryError> {
    let parsed = RegistryKey::parse(key)?;
    match parsed.selector() {
        Selector::Version(_) if key.matches('@').count() == 2 => Ok(parsed),
        _ => Err(RegistryError::Usage(
            "Expert key must include version (e.g., @org/my-expert@1.0.0)".into(),
        )),
    }
}

/// The configuration (required or not) and the environment with its `.env` files.
fn load(
    options: &RegistryOptions,
    required: bool,
) -> Result<(Option<PerstackConfig>, BTreeMap<String, String>), RegistryError> {
    let usage = |e: &dyn std::fmt::Display| RegistryError::Usage(e.to_string());
    let cwd = std::env::current_dir().map_err(|e| usage(&e))?;
    let cfg = match config::discover(options.config.as_deref(), &cwd) {
        Ok(path) => Some(config::load(&path).map_err(|e| usage(&e))?),
        Err(e) if required || options.config.is_some() => return Err(usage(&e)),
        Err(_) => None,
    };
    let env_paths: Vec<String> = if !options.env_path.is_empty() {
        options.env_path.clone()
    } else {
        cfg.as_ref()
            .and_then(|c| c.env_path.clone())
            .unwrap_or_else(|| DEFAULT_ENV_PATHS.iter().map(|s| (*s).to_string()).collect())
    };
    let env = config::load_env(&cwd, &env_paths, std::env::vars()).map_err(|e| usage(&e))?;
    Ok((cfg, env))
}

fn registry(
    cfg: Option<&PerstackConfig>,
    env: &BTreeMap<String, String>,
) -> Result<Registry, RegistryError> {
    Registry::from_env(cfg.and_then(|c| c.perstack_api_base_url.as_deref()), env)
}

fn answer_expert(answer: &Value) -> Option<&serde_json::Map<String, Value>> {
    crate::registry::definition::expert_of(answer)
}

fn answer_key(answer: &Value, fallback: &str) -> String {
    answer_expert(answer)
        .and_then(|e| e.get("key"))
        .and_then(Value::as_str)
        .unwrap_or(fallback)
        .to_owned()
}
