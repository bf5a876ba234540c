//! Ids: 24 lowercase alphanumerics starting with a letter, the shape of Perstack's cuid2 ids.
//!
//! Perstack spends about 30 % of its CPU generating cuid2 ids; these come from a fast
//! thread-local generator instead. They are unique enough for jobs, runs, checkpoints, events,
//! messages and parts; they are not secrets.

use rand::Rng;

const ALPHABET: &[u8; 36] = b"abcdefghijklmnopqrstuvwxyz0123456789";

/// A fresh 24-character id.
pub(crate) fn new_id() -> String {
    let mut rng = rand::rng();
    let mut s = String::with_capacity(24);
    s.push(char::from(ALPHABET[rng.random_range(0..26)]));
    for _ in 0..23 {
        s.push(char::from(ALPHABET[rng.random_range(0..36)]));
    }
    s
}

/// Whether `id` may safely become one path segment: 1..=255 characters of
/// `[A-Za-z0-9_.@-]`, not `.` or `..`. Used before any id turns into a file name.
pub(crate) fn is_safe_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 255
        && id != "."
        && id != ".."
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_ids_have_perstacks_shape() {
        let id = new_id();
        assert_eq!(id.len(), 24);
        assert!(id.chars().next().is_some_and(|c| c.is_ascii_lowercase()));
        assert!(
            id.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        );
        assert_ne!(new_id(), new_id());
    }

    #[test]
    fn hostile_ids_are_not_safe_path_segments() {
        for bad in ["", ".", "..", "../x", "a/b", "a\\b", "a\0b", "x y"] {
            assert!(!is_safe_id(bad), "{bad:?}");
        }
        assert!(is_safe_id("job-s05-parallel-delegation"));
    }
}
