//! [`RunFailure`]: why a run stops with `stopRunByError`, as one typed value.
//!
//! This module owns every reason a run can stop by error, the wire [`RunError`] each one
//! becomes (`name`, `message`, `statusCode`, `isRetryable`, as Perstack's events and
//! checkpoints carry them), and the policy each one carries: whether it stops every run of the
//! job ([`RunFailure::stops_the_job`]) and whether its terminal event may be shown although its
//! checkpoint could not be stored ([`RunFailure::is_visible_unstored`]). The machine and the
//! actors build failures; nothing builds a [`RunError`] by hand. It never does I/O and never
//! decides retries: a failed generation's retry class comes with it from the provider.

use crate::llm::GenerationError;
use crate::schema::RunError;

/// Why a run stopped by error.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum RunFailure {
    /// The model call failed in a way that is not retried (a 4xx, a cancelled call): the
    /// provider's error as it classified it.
    #[error("{message}")]
    Generation {
        /// The provider's error name (`APICallError`, `TimeoutError`, ...).
        name: String,
        /// Its message.
        message: String,
        /// The HTTP status, when there was one.
        status_code: Option<u16>,
    },
    /// A retryable model failure happened more than `maxRetries` times in a row.
    #[error("Max retries ({max_retries}) exceeded: {message}")]
    RetriesExhausted {
        /// The provider's error name of the last failure.
        name: String,
        /// Its message.
        message: String,
        /// Its HTTP status, when there was one.
        status_code: Option<u16>,
        /// The run's `maxRetries`.
        max_retries: u32,
    },
    /// The model gave no usable answer (nothing, or a cut-off tool call) more than
    /// `maxRetries` times in a row.
    #[error("Max retries ({max_retries}) exceeded: {what}")]
    MaxRetriesExceeded {
        /// What was missing, e.g. "No tool call or text generated".
        what: String,
        /// The run's `maxRetries`.
        max_retries: u32,
    },
    /// The model stopped for a reason the loop cannot continue from.
    #[error("The model stopped with finish reason {reason:?}")]
    UnexpectedFinishReason {
        /// The provider's finish reason.
        reason: String,
    },
    /// The Expert's tools cannot be set up (a skill that does not start, a name claimed twice,
    /// a missing delegate).
    #[error("{0}")]
    Configuration(String),
    /// A skill failed in a way the model cannot fix (its connection was already closed).
    #[error("{0}")]
    Skill(String),
    /// The job was cancelled (SIGINT, SIGTERM, the embedding API).
    #[error("The job was cancelled before this run finished.")]
    Cancelled,
    /// The reader of the event output went away (`perstack run ... | head`): the job is
    /// cancelled, and its runs end with their checkpoints stored.
    #[error("The job was cancelled because the event output was closed: {0}")]
    OutputClosed(String),
    /// The store refused a write (a full disk): nothing more of the job can be made durable.
    /// `--continue-job` goes on from the last stored step once the store works again.
    #[error(
        "{0}; this stop could not be stored either, continue the job with --continue-job once storage works again"
    )]
    Storage(String),
    /// This engine lost its claim on the job (a lease that expired while it was paused or cut
    /// off): another writer holds the job and carries it on. Every run stops without writing
    /// anything more; the stop is shown here only.
    #[error("{0}; the job goes on wherever its new claim is held, nothing more is written here")]
    ClaimLost(String),
    /// The job is handed back to the cluster's queue (its worker is shutting down): every run
    /// stops at a step boundary without showing or storing anything more, and another worker
    /// carries the job on from its stored checkpoints.
    #[error("the job was handed back to be carried on by another worker")]
    HandedBack,
    /// A bug in the engine: an input the state cannot take, a run actor that panicked, a
    /// coordinator that stopped without reporting, an event bus that is gone.
    #[error("{0}")]
    Engine(String),
}

impl RunFailure {
    /// A failed generation that stops the run, as the provider classified it.
    pub fn generation(e: GenerationError) -> Self {
        RunFailure::Generation {
            name: e.name,
            message: e.message,
            status_code: e.status_code,
        }
    }

    /// A storage failure, naming its whole cause chain (the OS error included).
    pub fn storage(e: &(dyn std::error::Error + 'static)) -> Self {
        RunFailure::Storage(error_chain(e))
    }

    /// The wire form, carried by `stopRunByError` and the stopped checkpoint.
    pub fn to_run_error(&self) -> RunError {
        let (name, status_code) = match self {
            RunFailure::Generation {
                name, status_code, ..
            }
            | RunFailure::RetriesExhausted {
                name, status_code, ..
            } => (name.as_str(), *status_code),
            RunFailure::MaxRetriesExceeded { .. } => ("MaxRetriesExceeded", None),
            RunFailure::UnexpectedFinishReason { .. } => ("UnexpectedFinishReason", None),
            RunFailure::Configuration(_) => ("ConfigurationError", None),
            RunFailure::Skill(_) => ("SkillError", None),
            RunFailure::Cancelled => ("Cancelled", None),
            RunFailure::OutputClosed(_) => ("OutputClosed", None),
            RunFailure::Storage(_) => ("StorageError", None),
            RunFailure::ClaimLost(_) => ("ClaimLost", None),
            RunFailure::HandedBack => ("HandedBack", None),
            RunFailure::Engine(_) => ("EngineError", None),
        };
        RunError {
            name: name.to_owned(),
            message: self.to_string(),
            status_code,
            // A stopped run is never retried by the engine; a failure worth retrying was
            // retried before it became a stop.
            is_retryable: false,
        }
    }

    /// Whether every other run of the job must stop too: the job was cancelled, or it can no
    /// longer store or show what it does. A failure of one run alone (its model, its tools)
    /// only stops that run; its parent gets it as a tool result.
    pub fn stops_the_job(&self) -> bool {
        matches!(
            self,
            RunFailure::Cancelled
                | RunFailure::OutputClosed(_)
                | RunFailure::Storage(_)
                | RunFailure::ClaimLost(_)
                | RunFailure::HandedBack
        )
    }

    /// Whether the run ends without any event or write at all: the job was handed back, and
    /// its new holder carries the run on from its last stored step.
    pub fn is_silent(&self) -> bool {
        matches!(self, RunFailure::HandedBack)
    }

    /// Whether the terminal event reporting this failure is shown even though its checkpoint
    /// could not be stored. Only a storage failure or a lost claim (whose store refuses every
    /// write): every other terminal event is visible only once its checkpoint is durable
    /// (DECISIONS, "Disk full versus durable before visible").
    pub fn is_visible_unstored(&self) -> bool {
        matches!(self, RunFailure::Storage(_) | RunFailure::ClaimLost(_))
    }
}

/// `e` and its sources, joined by `": "`.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_failure_keeps_its_wire_name_message_and_status() {
        let cases = [
            (
                RunFailure::Generation {
                    name: "APICallError".into(),
                    message: "bad".into(),
                    status_code: Some(400),
                },
                "APICallError",
                "bad",
                Some(400),
            ),
            (
                RunFailure::RetriesExhausted {
                    name: "APICallError".into(),
                    message: "overloaded".into(),
                    status_code: Some(529),
                    max_retries: 2,
                },
                "APICallError",
                "Max retries (2) exceeded: overloaded",
                Some(529),
            ),
            (
                RunFailure::MaxRetriesExceeded {
                    what: "No tool call or text generated".into(),
                    max_retries: 5,
                },
                "MaxRetriesExceeded",
                "Max retries (5) exceeded: No tool call or text generated",
                None,
            ),
            (
                RunFailure::UnexpectedFinishReason {
                    reason: "content-filter".into(),
                },
                "UnexpectedFinishReason",
                "The model stopped with finish reason \"content-filter\"",
                None,
            ),
            (
                RunFailure::Cancelled,
                "Cancelled",
                "The job was cancelled before this run finished.",
                None,
            ),
            (
                RunFailure::Configuration("x".into()),
                "ConfigurationError",
                "x",
                None,
            ),
            (RunFailure::Engine("y".into()), "EngineError", "y", None),
        ];
        for (failure, name, message, status) in cases {
            let e = failure.to_run_error();
            assert_eq!(
                (e.name.as_str(), e.message.as_str(), e.status_code),
                (name, message, status)
            );
            assert!(!e.is_retryable);
        }
    }

    #[test]
    fn a_storage_failure_names_its_os_cause_and_says_it_was_not_stored() {
        let io = std::io::Error::from_raw_os_error(28);
        let store = crate::storage::StoreError::Io {
            path: "/w/perstack/jobs/j/checkpoints/c.json".into(),
            source: io,
        };
        let f = RunFailure::storage(&store);
        let e = f.to_run_error();
        assert_eq!(e.name, "StorageError");
        assert!(
            e.message.contains("/w/perstack/jobs/j/checkpoints/c.json"),
            "{}",
            e.message
        );
        assert!(e.message.contains("os error 28"), "{}", e.message);
        assert!(e.message.contains("could not be stored"), "{}", e.message);
        assert!(f.stops_the_job() && f.is_visible_unstored());
    }

    #[test]
    fn only_job_wide_failures_stop_the_other_runs() {
        assert!(RunFailure::Cancelled.stops_the_job());
        assert!(RunFailure::OutputClosed("EPIPE".into()).stops_the_job());
        assert!(!RunFailure::Configuration("x".into()).stops_the_job());
        assert!(!RunFailure::Engine("x".into()).stops_the_job());
        assert!(!RunFailure::Cancelled.is_visible_unstored());
        assert!(!RunFailure::OutputClosed("EPIPE".into()).is_visible_unstored());
        let lost = RunFailure::ClaimLost("the claim on job \"j\" was lost".into());
        assert!(lost.stops_the_job() && lost.is_visible_unstored());
        assert_eq!(lost.to_run_error().name, "ClaimLost");
    }
}
