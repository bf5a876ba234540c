//! The one integration-test binary: end-to-end suites live in `tests/suite/`.

mod suite;
