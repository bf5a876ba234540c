//! Where each record lives in JetStream: bucket, stream and subject names, the key of every
//! record, and the headers this store reads and writes. The one place that turns ids into
//! subject tokens, so readers and writers can never disagree.
//!
//! Ids are already checked ([`super::super::check_id`]): `[A-Za-z0-9_.-]`. A `.` separates
//! subject tokens, so it is written as `=` (which no id contains; key-value keys allow it):
//! the mapping is one to one.

/// The key-value bucket holding jobs, run settings, checkpoints and fence records, one subject
/// tree per job (`<job>.job`, `<job>.run.<run>`, `<job>.cp.<checkpoint>`, `<job>.fence`), so
/// that one expected-sequence check over `<job>.>` fences every key-value write of a job.
pub(crate) const DATA_BUCKET: &str = "perstack";
/// The leases of [`super::JetStreamStorage::claim`], one key per job, expiring by the
/// server's per-message TTL.
pub(crate) const LEASE_BUCKET: &str = "perstack_leases";
/// The object store holding checkpoints too large for one message.
pub(crate) const OBJECT_BUCKET: &str = "perstack_checkpoints";
/// The stream of stored events.
pub(crate) const EVENT_STREAM: &str = "PERSTACK_EVENTS";
/// Subjects of [`EVENT_STREAM`]: `perstack.events.<job>`.
pub(crate) const EVENT_SUBJECTS: &str = "perstack.events.*";

/// The per-job sequence number of an event or checkpoint, so readers need not parse the body.
pub(crate) const JOB_SEQ: &str = "Perstack-Job-Seq";
/// On a message of the event stream that is not an event: what it is (`claim`: the record a
/// new holder writes first, see [`super::lease`]).
pub(crate) const RECORD: &str = "Perstack-Record";
/// On a checkpoint entry whose body lives in the object store: the object's name.
pub(crate) const OBJECT: &str = "Perstack-Object";
/// Limits the expected-last-subject-sequence check to a subject filter (nats-server 2.11+), so
/// one check covers all keys of one job.
pub(crate) const EXPECTED_LAST_SUBJECT_SEQUENCE_SUBJECT: &str =
    "Nats-Expected-Last-Subject-Sequence-Subject";
/// The key-value operation header (`DEL`, `PURGE`) that key-value clients write for deletions.
pub(crate) const KV_OPERATION: &str = "KV-Operation";
/// Set by the server on the marker it leaves when a key's TTL expired.
pub(crate) const MARKER_REASON: &str = "Nats-Marker-Reason";

/// An id as one subject token.
pub(crate) fn token(id: &str) -> String {
    id.replace('.', "=")
}

/// The subject of a key in a key-value bucket.
pub(crate) fn kv_subject(bucket: &str, key: &str) -> String {
    format!("$KV.{bucket}.{key}")
}

/// The subject tree of every key-value record of one job (the fence filter).
pub(crate) fn job_filter(job_id: &str) -> String {
    kv_subject(DATA_BUCKET, &format!("{}.>", token(job_id)))
}

/// The job record's subject.
pub(crate) fn job_subject(job_id: &str) -> String {
    kv_subject(DATA_BUCKET, &format!("{}.job", token(job_id)))
}

/// The subject of the fence record a new holder of the job writes first.
pub(crate) fn fence_subject(job_id: &str) -> String {
    kv_subject(DATA_BUCKET, &format!("{}.fence", token(job_id)))
}

/// A checkpoint's subject.
pub(crate) fn checkpoint_subject(job_id: &str, checkpoint_id: &str) -> String {
    kv_subject(
        DATA_BUCKET,
        &format!("{}.cp.{}", token(job_id), token(checkpoint_id)),
    )
}

/// Every checkpoint of a job.
pub(crate) fn checkpoints_filter(job_id: &str) -> String {
    kv_subject(DATA_BUCKET, &format!("{}.cp.*", token(job_id)))
}

/// A run setting's subject.
pub(crate) fn run_setting_subject(job_id: &str, run_id: &str) -> String {
    kv_subject(
        DATA_BUCKET,
        &format!("{}.run.{}", token(job_id), token(run_id)),
    )
}

/// Every run setting of every job.
pub(crate) fn all_run_settings_filter() -> String {
    kv_subject(DATA_BUCKET, "*.run.*")
}

/// Every job record.
pub(crate) fn all_jobs_filter() -> String {
    kv_subject(DATA_BUCKET, "*.job")
}

/// A job's lease.
pub(crate) fn lease_subject(job_id: &str) -> String {
    kv_subject(LEASE_BUCKET, &token(job_id))
}

/// The subject a job's events are stored on: `perstack.events.<jobId>` (a `.` in the id
/// written as `=`). Followers of a job subscribe to it; messages with a `Perstack-Record`
/// header are the store's own records, not events.
pub fn events_subject(job_id: &str) -> String {
    format!("perstack.events.{}", token(job_id))
}

/// The object store name of a large checkpoint written under fencing token `token`: a stale
/// holder never overwrites the object the current holder's entry points to.
pub(crate) fn object_name(job_id: &str, checkpoint_id: &str, writer: u64) -> String {
    format!("{}.{}.{writer}", token(job_id), token(checkpoint_id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dotted_ids_become_one_token_and_back() {
        assert_eq!(token("a.b-c_d"), "a=b-c_d");
        assert_eq!(events_subject("job.1"), "perstack.events.job=1");
        assert_eq!(checkpoint_subject("j.1", "c.2"), "$KV.perstack.j=1.cp.c=2");
        assert_eq!(job_filter("j"), "$KV.perstack.j.>");
    }
}
