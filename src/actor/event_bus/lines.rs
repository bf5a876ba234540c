//! [`Lines`]: the JSON lines of the events of one publish, serialised by the producer.
//!
//! An event's stdout line depends on nothing the bus gives it: neither sequence number is
//! on it (`jobSeq` is only in the stored forms, see [`Event::stored`]), so the producer
//! serialises it on its own task before it asks the bus, and the bus only copies bytes
//! into its buffer. Serialising a line is the largest cost per event; done by the producers,
//! it runs on as many cores as there are producers instead of on the bus's one task.
//! `event_bus::sequence_tests` checks that the lines the sink gets are those of the events
//! as the bus numbered and delivered them.
//!
//! A bus without a sink prints nothing: its producers serialise nothing
//! ([`Lines::none`]).

use crate::schema::Event;

/// The lines of a publish's events, one after the other, each ending in `\n`.
#[derive(Debug, Default)]
pub(crate) struct Lines {
    bytes: Vec<u8>,
    /// Where each event's line ends in `bytes`; empty when the producer serialised nothing.
    ends: Vec<usize>,
}

/// Append `event`'s line ([`Event::write_line`]). An event that cannot be serialised (never
/// for the engine's types: no maps with non-string keys) leaves no half line, only a warning.
pub(super) fn append_line(bytes: &mut Vec<u8>, event: &Event) {
    if let Err(e) = event.write_line(bytes) {
        tracing::warn!(error = %e, kind = event.kind(), "could not serialise event");
    }
}

/// The capacity a line starts with; a `callTools` line of the reference workload is ~1 KB.
const LINE_CAPACITY: usize = 1024;

impl Lines {
    /// No lines: the bus has no sink.
    pub(crate) fn none() -> Self {
        Lines::default()
    }

    /// Every event's line ([`append_line`]); an event that cannot be serialised gets an
    /// empty line, that is none.
    pub(crate) fn of(events: &[Event]) -> Self {
        let mut bytes = Vec::with_capacity(events.len() * LINE_CAPACITY);
        let mut ends = Vec::with_capacity(events.len());
        for event in events {
            append_line(&mut bytes, event);
            ends.push(bytes.len());
        }
        Lines { bytes, ends }
    }

    /// The line of the `i`th event, `\n` included (empty when it could not be serialised);
    /// `None` when the producer serialised nothing.
    pub(super) fn get(&self, i: usize) -> Option<&[u8]> {
        let end = *self.ends.get(i)?;
        let start = match i.checked_sub(1) {
            Some(previous) => *self.ends.get(previous)?,
            None => 0,
        };
        self.bytes.get(start..end)
    }
}
