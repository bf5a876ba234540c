//! Storage of checkpoints, events, jobs and run settings.
