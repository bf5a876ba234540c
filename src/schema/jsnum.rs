//! Numbers as JavaScript writes them: a float with no fractional part is printed as an integer
//! (`JSON.stringify(0)` is `0`, not `0.0`), so re-serialised checkpoints compare equal to
//! Perstack's.

use serde::Serializer;

/// Serialise an `Option<f64>` the way `JSON.stringify` does.
pub(crate) fn opt_f64<S: Serializer>(v: &Option<f64>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(x) => f64(x, s),
        None => s.serialize_none(),
    }
}

/// Serialise an `f64` the way `JSON.stringify` does.
pub(crate) fn f64<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
    if v.fract() == 0.0 && v.abs() < 9_007_199_254_740_992.0 {
        #[allow(clippy::cast_possible_truncation)]
        s.serialize_i64(*v as i64)
    } else {
        s.serialize_f64(*v)
    }
}
