//! [`EngineError`]: why a job could not start or finish, and the exit code each reason gives.

/// Why a job could not start or finish.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The script file of the scripted provider is invalid.
    #[error(transparent)]
    Script(#[from] crate::llm::scripted::ScriptError),
    /// The provider could not be built (missing key, bad URL, unsupported provider).
    #[error(transparent)]
    Provider(#[from] crate::llm::select::SelectError),
    /// No Expert has this key.
    #[error("expert \"{key}\" is not defined in the configuration{hint}")]
    UnknownExpert {
        /// The key asked for.
        key: String,
        /// A "did you mean" hint, possibly empty.
        hint: String,
    },
    /// The job id cannot be used.
    #[error("invalid job id {0:?}: use 1-255 characters of letters, digits, '_', '-' or '.'")]
    InvalidJobId(String),
    /// Storage failed before the job started.
    #[error(transparent)]
    Storage(#[from] crate::storage::StoreError),
    /// The event bus could not take the job (it is not running).
    #[error(transparent)]
    Bus(#[from] crate::actor::event_bus::BusError),
    /// The job's actor stopped without reporting an outcome (an engine bug).
    #[error("the job ended without an outcome")]
    Lost,
    /// Anything else about usage (unsupported provider, bad option).
    #[error("{0}")]
    Usage(String),
    /// The run asks for the sandbox and this machine cannot provide it.
    #[error(transparent)]
    Sandbox(#[from] crate::sandbox::SandboxUnavailable),
    /// A registry Expert could not be resolved (before anything ran).
    #[error(transparent)]
    Registry(#[from] crate::registry::RegistryError),
}

impl EngineError {
    /// Process exit code: 2 for usage and configuration errors, 1 for engine faults (a failed
    /// store or event bus, a lost job).
    pub fn exit_code(&self) -> u8 {
        match self {
            EngineError::Config(e) => e.exit_code(),
            EngineError::Script(_)
            | EngineError::Provider(_)
            | EngineError::UnknownExpert { .. }
            | EngineError::InvalidJobId(_)
            | EngineError::Usage(_) => 2,
            EngineError::Storage(e) => e.exit_code(),
            EngineError::Sandbox(e) => e.exit_code(),
            EngineError::Registry(e) => e.exit_code(),
            EngineError::Bus(_) | EngineError::Lost => 1,
        }
    }
}
