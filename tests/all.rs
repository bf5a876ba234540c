//! The one integration-test binary: end-to-end suites live in `tests/suite/`.

// Tests may panic on unexpected errors; the no-unwrap rule is for the engine's own code.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod suite;
