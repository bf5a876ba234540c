//! How a delivery of a job message goes about its job, decided from what the store and the
//! invocation's own output subject hold (one pure function, unit-tested).

use crate::schema::JobStatus;

/// How a delivery goes about its job, from what the store and the invocation's output hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum How {
    /// A new job: start it.
    Start,
    /// A continuation not run yet: continue the stored job with its input (under the job's
    /// claim: while another invocation of the job runs, it waits).
    Continue,
    /// Its worker died mid-run (the job is stored running, and this invocation had printed
    /// something): write the takeover record and resume it from its checkpoints.
    TakeOver,
    /// It ran to its end before (the ack, maybe the end record, was lost): publish the end
    /// record only; it never runs twice.
    Ended,
}

impl How {
    /// From whether the message is a continuation, the stored job's status and whether the
    /// invocation's own output subject holds anything; `None`: a continuation of a job not
    /// stored. A continuation is told from a redelivery by its own output, not by the job's:
    /// continuations submitted at once each find the job changed by the others, yet each
    /// runs once.
    pub(super) fn decide(
        continuation: bool,
        stored: Option<JobStatus>,
        printed: bool,
    ) -> Option<How> {
        let running = stored == Some(JobStatus::Running);
        Some(match (continuation, stored) {
            (false, None) => How::Start,
            (false, Some(_)) if running => How::TakeOver,
            (false, Some(_)) => How::Ended,
            (true, None) => return None,
            (true, Some(_)) => match (printed, running) {
                (false, _) => How::Continue,
                (true, true) => How::TakeOver,
                (true, false) => How::Ended,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_continuation_is_told_from_a_redelivery_by_its_own_output() {
        let done = Some(JobStatus::Completed);
        let running = Some(JobStatus::Running);
        // Plain jobs: as before continuations.
        assert_eq!(How::decide(false, None, false), Some(How::Start));
        assert_eq!(How::decide(false, running, true), Some(How::TakeOver));
        assert_eq!(How::decide(false, done, true), Some(How::Ended));
        // A continuation that printed nothing has not run: it continues the job, finished or
        // running (another continuation holds it: the claim makes this one wait)...
        assert_eq!(How::decide(true, done, false), Some(How::Continue));
        assert_eq!(How::decide(true, running, false), Some(How::Continue));
        // ...one that printed and ended only finds its end; one whose worker died is taken over.
        assert_eq!(How::decide(true, done, true), Some(How::Ended));
        assert_eq!(How::decide(true, running, true), Some(How::TakeOver));
        assert_eq!(How::decide(true, None, false), None);
    }
}
