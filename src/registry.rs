//! Registry Experts: `@org/name`, `@org/name@1.2.3` and `@org/name@tag` keys resolved through
//! Perstack's registry API v1, cached on disk, pinned by digest in `perstack.lock`.
//!
//! Resolution plugs into configuration loading: [`Registry::resolve`] takes a loaded
//! [`PerstackConfig`] and adds every registry Expert reachable from the given roots as an
//! ordinary [`Expert`](crate::schema::Expert) definition (keyed as the configuration or the
//! command line wrote it), so the engine never knows where an Expert came from. Its skills
//! start through the skill launcher like any other, and the engine's preflight checks their
//! `requiredEnv`. Local keys come first; only scoped keys (`@org/...`) go to the registry.
//!
//! | module | owns |
//! | --- | --- |
//! | `key` | the one name check every key passes before it reaches a URL or a file name |
//! | `client` | the HTTP API: paths, bearer auth, error shapes, body limits |
//! | `definition` | the checks that refuse hostile definitions; conversion to [`Expert`](crate::schema::Expert) |
//! | `digest` | RFC 8785 canonical JSON and the SHA-256 a pin records |
//! | `cache` | write-once versions and expiring tags on disk |
//! | `resolve` | pins, tags, fallbacks, transitive delegates, cycles |
//! | `publish` | the payloads and rules of `perstack publish`, `tag`, `status`, `unpublish` |
//!
//! Every failure is a [`RegistryError`] and stops before anything runs (exit 2).

pub(crate) mod cache;
pub(crate) mod client;
pub(crate) mod definition;
pub(crate) mod digest;
pub(crate) mod key;
pub(crate) mod publish;
mod resolve;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

pub use cache::CACHE_DIR_ENV;
pub use resolve::Resolved;

use crate::config::PerstackConfig;
use crate::config::lockfile::Lockfile;

/// The registry API's base URL, when `perstackApiBaseUrl` is not in perstack.toml.
pub const BASE_URL_ENV: &str = "PERSTACK_API_BASE_URL";
/// The registry API key (`Authorization: Bearer`), from the environment or `.env`.
pub const API_KEY_ENV: &str = "PERSTACK_API_KEY";
/// How long a resolved tag is trusted before it is asked again, in seconds.
pub const TAG_TTL_ENV: &str = "PERSTACK_REGISTRY_TAG_TTL_SECONDS";
/// [`TAG_TTL_ENV`]'s default: tags move rarely, and a run resolves each at most once.
pub const DEFAULT_TAG_TTL: Duration = Duration::from_secs(60);

/// A registry to resolve Experts from: its client, cache and tag expiry.
#[derive(Debug, Clone)]
pub struct Registry {
    client: client::RegistryClient,
    /// `None` when there is no cache directory (no HOME): every key is fetched.
    cache: Option<cache::Cache>,
    /// A tag resolved more recently than this is not asked again; past it the registry is
    /// asked, and its cached answer used (with a warning) only when the registry is down.
    tag_ttl: Duration,
}

impl Registry {
    /// The registry at `configured` (`perstackApiBaseUrl` of perstack.toml), else at
    /// [`BASE_URL_ENV`] of `env`, else Perstack's; the key from [`API_KEY_ENV`]; the cache
    /// and tag expiry from [`CACHE_DIR_ENV`] and [`TAG_TTL_ENV`].
    pub fn from_env(
        configured: Option<&str>,
        env: &BTreeMap<String, String>,
    ) -> Result<Registry, RegistryError> {
        let (base, origin) = match (configured, env.get(BASE_URL_ENV)) {
            (Some(url), _) => (url.to_owned(), "perstackApiBaseUrl in perstack.toml"),
            (None, Some(url)) if !url.is_empty() => (url.clone(), BASE_URL_ENV),
            _ => (client::DEFAULT_BASE_URL.to_owned(), "the default"),
        };
        let client = client::RegistryClient::new(&base, origin, env.get(API_KEY_ENV).cloned())?;
        let tag_ttl = match env.get(TAG_TTL_ENV) {
            Some(v) => v.parse::<u64>().map(Duration::from_secs).map_err(|_| {
                RegistryError::Usage(format!(
                    "{TAG_TTL_ENV} must be a number of seconds, not {v:?}"
                ))
            })?,
            None => DEFAULT_TAG_TTL,
        };
        Ok(Registry {
            cache: cache::Cache::for_registry(client.base(), env),
            client,
            tag_ttl,
        })
    }

    /// The API client.
    pub(crate) fn client(&self) -> &client::RegistryClient {
        &self.client
    }
}

/// Resolves into `config` the registry Experts reachable from `roots` (see
/// [`Registry::resolve`]), pinned by `lockfile` when given. A configuration whose reachable
/// Experts are all local is returned untouched without building a client or reading the
/// cache.
pub async fn resolve_into(
    config: &mut PerstackConfig,
    env: &BTreeMap<String, String>,
    roots: &[String],
    lockfile: Option<&Lockfile>,
    locked: bool,
) -> Result<Vec<Resolved>, RegistryError> {
    if !reaches_registry(config, roots) {
        return Ok(Vec::new());
    }
    let registry = Registry::from_env(config.perstack_api_base_url.as_deref(), env)?;
    let empty = BTreeMap::new();
    let pins = lockfile.map_or(&empty, |l| &l.registry_pins);
    registry.resolve(config, roots, pins, locked).await
}

/// Whether a scoped key that is not an Expert of `config` is reachable from `roots`.
fn reaches_registry(config: &PerstackConfig, roots: &[String]) -> bool {
    let mut seen = std::collections::BTreeSet::new();
    let mut queue: Vec<&str> = roots.iter().map(String::as_str).collect();
    while let Some(key) = queue.pop() {
        if !seen.insert(key) {
            continue;
        }
        match config.experts.get(key) {
            Some(e) => queue.extend(e.delegates.iter().map(String::as_str)),
            None if key::RegistryKey::is_registry_key(key) => return true,
            None => {}
        }
    }
    false
}

/// Why a registry Expert could not be resolved, published or changed. Nothing has run when
/// one is returned.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// A key failed the name check.
    #[error("invalid registry key \"{key}\": {reason}")]
    InvalidKey {
        /// The key (at most 80 characters of it).
        key: String,
        /// Why.
        reason: String,
    },
    /// The registry's base URL is not acceptable.
    #[error("invalid registry URL \"{url}\" (from {origin}): {problem}")]
    InvalidBaseUrl {
        /// The URL.
        url: String,
        /// Where it came from.
        origin: String,
        /// What is wrong.
        problem: String,
    },
    /// `PERSTACK_API_KEY` cannot be sent in a header.
    #[error("{API_KEY_ENV} holds characters an HTTP header cannot carry")]
    InvalidApiKey,
    /// The registry could not be reached.
    #[error("cannot reach the registry at {url}: {message}")]
    Unreachable {
        /// The base URL.
        url: String,
        /// The transport error.
        message: String,
    },
    /// The registry answered with an error status.
    #[error("the registry answered {status} for \"{key}\": {error}{}; {}",
        reason.as_ref().map(|r| format!(" ({r})")).unwrap_or_default(),
        http_hint(*status))]
    Http {
        /// The key asked for.
        key: String,
        /// HTTP status.
        status: u16,
        /// The `error` of Perstack's error shape, or the status text.
        error: String,
        /// Its `reason`.
        reason: Option<String>,
    },
    /// The answer is not what the API sends.
    #[error("the registry's answer for \"{key}\" is malformed: {message}")]
    Malformed {
        /// The key asked for.
        key: String,
        /// What is wrong.
        message: String,
    },
    /// A definition breaks the registry's rules (or is hostile).
    #[error("refusing registry expert \"{key}\": {reason}")]
    Refused {
        /// The key asked for.
        key: String,
        /// Why.
        reason: String,
    },
    /// A cache file cannot be read as what it should hold.
    #[error("registry cache file {path} is corrupt ({message}); delete it and run again")]
    CorruptCache {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// Reading or writing the cache failed.
    #[error("registry cache {path}: {source}")]
    Cache {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A pinned definition's digest differs from the lockfile's.
    #[error(
        "registry expert \"{expert}\" ({key}) does not match perstack.lock: the definition from the {origin} has digest {actual}, the lockfile pins {expected}; a published version never changes, so this is tampering or a registry fault. Nothing was run"
    )]
    DigestMismatch {
        /// The key as the configuration wrote it.
        expert: String,
        /// The pinned key.
        key: String,
        /// `cache` or `registry`.
        origin: &'static str,
        /// The pinned digest.
        expected: String,
        /// The digest found.
        actual: String,
    },
    /// The registry sent a different definition for a version already cached.
    #[error(
        "the registry now sends a different definition for \"{key}\" than the one cached; a published version never changes, so this is tampering or a registry fault"
    )]
    ImmutableChanged {
        /// The version key.
        key: String,
    },
    /// `--locked` and the Expert is not pinned.
    #[error(
        "registry expert \"{key}\" is not pinned in perstack.lock; run `perstack install` (--locked runs only pinned versions)"
    )]
    NotPinned {
        /// The key.
        key: String,
    },
    /// Registry Experts delegate to each other in a circle.
    #[error("registry experts delegate in a cycle: {}", chain.join(" -> "))]
    Cycle {
        /// The keys around the cycle, first repeated at the end.
        chain: Vec<String>,
    },
    /// A delegate could not be resolved.
    #[error("failed to resolve expert \"{delegate}\" (a delegate of \"{expert}\"): {source}")]
    Delegate {
        /// The delegating Expert.
        expert: String,
        /// The delegate.
        delegate: String,
        /// Why.
        source: Box<RegistryError>,
    },
    /// A command was used wrongly (publish rules, arguments).
    #[error("{0}")]
    Usage(String),
}

impl RegistryError {
    /// Process exit code: always 2, a configuration or usage problem found before anything
    /// ran.
    pub fn exit_code(&self) -> u8 {
        2
    }

    /// Whether the registry is down rather than saying no (a transport failure or a 5xx):
    /// a tag then falls back to its cached resolution.
    pub(crate) fn is_outage(&self) -> bool {
        match self {
            RegistryError::Unreachable { .. } => true,
            RegistryError::Http { status, .. } => *status >= 500,
            _ => false,
        }
    }
}

fn http_hint(status: u16) -> &'static str {
    match status {
        401 => "set PERSTACK_API_KEY (environment or .env) to a valid registry API key",
        403 => "the API key may not do this; check the organisation it belongs to",
        404 => "no such expert, version or tag in the registry; check the key",
        400 | 409 | 422 => "the registry refused the request as given",
        s if s >= 500 => "the registry failed; try again later",
        _ => "the request failed",
    }
}
