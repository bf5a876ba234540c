//! [`BusError`]: why an event could not be published, and what that means for the run.

use kameo::error::SendError;

use crate::agent::RunFailure;
use crate::storage::StoreError;

/// Why an event could not be published.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BusError {
    /// Storing the checkpoint failed; the event was not made visible.
    #[error("could not store checkpoint {checkpoint_id}: {source}")]
    Checkpoint {
        /// The checkpoint.
        checkpoint_id: String,
        /// Why.
        source: StoreError,
    },
    /// Writing to the sink failed (a closed stdout, for example). The event was stored and
    /// delivered to listeners and subscribers; only the output missed it. Every later event
    /// gets this error too: the sink is never written again.
    #[error("could not write event to the output: {0}")]
    Sink(std::io::Error),
    /// The bus is not running (it was shut down, or it failed).
    #[error("the event bus is unavailable: {0}")]
    Unavailable(String),
}

impl BusError {
    /// What this means for the run that published: a storage failure or a closed output
    /// stops every run of the job; a bus that is gone is an engine fault.
    pub fn run_failure(&self) -> RunFailure {
        match self {
            BusError::Checkpoint { source, .. } if source.is_claim_lost() => {
                RunFailure::ClaimLost(source.to_string())
            }
            BusError::Checkpoint { .. } => RunFailure::storage(self),
            BusError::Sink(e) => RunFailure::OutputClosed(e.to_string()),
            BusError::Unavailable(_) => RunFailure::Engine(self.to_string()),
        }
    }

    /// Whether the event was stored and delivered all the same (only the output missed it),
    /// so the producer may go on publishing; otherwise it was not shown at all.
    pub fn event_was_stored(&self) -> bool {
        matches!(self, BusError::Sink(_))
    }

    /// The bus's own error from an ask's, or [`BusError::Unavailable`].
    pub fn from_send<M, E: Into<BusError>>(e: SendError<M, E>) -> Self {
        match e {
            SendError::HandlerError(e) => e.into(),
            SendError::ActorNotRunning(_) | SendError::ActorStopped => {
                BusError::Unavailable("not running".into())
            }
            SendError::MailboxFull(_) => BusError::Unavailable("mailbox full".into()),
            SendError::Timeout(_) => BusError::Unavailable("timed out".into()),
            SendError::ActorRestarting(_) => BusError::Unavailable("restarting".into()),
        }
    }
}

impl From<kameo::error::Infallible> for BusError {
    fn from(never: kameo::error::Infallible) -> Self {
        match never {}
    }
}
