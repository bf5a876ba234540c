//! JSON strings: the escapes `serde_json` writes, found eight bytes at a time.
//!
//! A key (a field name, a map key: about half of an event's strings, most shorter than eight
//! bytes) is checked in whole words only, with no loop over its last bytes ([`write_key`]):
//! in the engine, where the serialiser shares the branch predictor with the bus and the rest
//! of a run, such a loop's exit was a mispredicted branch per key, and the most expensive
//! instruction of the T4 bench (40 % of the string writer's time).

/// `"` and `\` are escaped as themselves; the other bytes below 0x20 as `\b \t \n \f \r` or
/// `\u00xx`, as `serde_json` does. Most strings need no escape: their bytes go in one copy.
#[inline]
pub(super) fn write_str(out: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    let clean = clean_prefix(bytes);
    let (plain, rest) = bytes.split_at(clean);
    out.extend_from_slice(plain);
    if !rest.is_empty() {
        write_escaped(out, rest);
    }
    out.push(b'"');
}

/// A map key or a field name, quoted, as [`write_str`] writes it: in one copy when it needs
/// no escape (checked by [`is_clean`], without a loop over its last bytes).
#[inline(always)]
pub(super) fn write_key(out: &mut Vec<u8>, key: &str) {
    let bytes = key.as_bytes();
    if is_clean(bytes) {
        out.reserve(bytes.len() + 2);
        out.push(b'"');
        out.extend_from_slice(bytes);
        out.push(b'"');
    } else {
        write_str(out, key);
    }
}

/// Whether no byte of `bytes` needs an escape: eight at a time, the last eight (or fewer)
/// in one more word ([`last_word`]).
#[inline(always)]
fn is_clean(bytes: &[u8]) -> bool {
    let (words, tail) = bytes.as_chunks::<8>();
    if words.iter().any(|w| needs_escape(u64::from_le_bytes(*w))) {
        return false;
    }
    tail.is_empty() || !needs_escape(last_word(bytes))
}

/// The last eight bytes of `bytes` as a word (overlapping the word before them); a string
/// shorter than eight in two overlapping loads, padded with spaces. Overlaps and spaces change
/// nothing for [`needs_escape`]. Loads, not a copy into a padded array: a few bytes stored
/// and read back as one word stall the read.
#[inline(always)]
fn last_word(bytes: &[u8]) -> u64 {
    const SPACES: u64 = ONES * 0x20;
    if let Some(last) = bytes.last_chunk::<8>() {
        return u64::from_le_bytes(*last);
    }
    if let (Some(a), Some(b)) = (bytes.first_chunk::<4>(), bytes.last_chunk::<4>()) {
        return u64::from(u32::from_le_bytes(*a)) | u64::from(u32::from_le_bytes(*b)) << 32;
    }
    if let (Some(a), Some(b)) = (bytes.first_chunk::<2>(), bytes.last_chunk::<2>()) {
        return u64::from(u16::from_le_bytes(*a))
            | u64::from(u16::from_le_bytes(*b)) << 16
            | SPACES << 32;
    }
    bytes
        .first()
        .map_or(SPACES, |&b| u64::from(b) | SPACES << 8)
}

/// How many bytes at the start of `bytes` need no escape: eight at a time, then one by one.
#[inline]
fn clean_prefix(bytes: &[u8]) -> usize {
    let mut clean = 0;
    for chunk in bytes.chunks_exact(8) {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        if needs_escape(u64::from_le_bytes(word)) {
            break;
        }
        clean += 8;
    }
    clean
        + bytes[clean..]
            .iter()
            .take_while(|&&b| !ESCAPED[usize::from(b)])
            .count()
}

/// Writes `bytes` (the first needing an escape), escaping each byte that needs it.
fn write_escaped(out: &mut Vec<u8>, bytes: &[u8]) {
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if let Some(escape) = escape(b) {
            out.extend_from_slice(&bytes[start..i]);
            out.extend_from_slice(&escape);
            start = i + 1;
        }
    }
    out.extend_from_slice(&bytes[start..]);
}

/// Which bytes need an escape: those below 0x20, `"` and `\`.
const ESCAPED: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 0x20 {
        table[b] = true;
        b += 1;
    }
    table[b'"' as usize] = true;
    table[b'\\' as usize] = true;
    table
};

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// Whether any of the eight bytes of `w` is below 0x20, `"` or `\`.
#[inline(always)]
fn needs_escape(w: u64) -> bool {
    // A byte is zero in `x` where `(x - 0x01..) & !x & 0x80..` has its high bit; below 0x20
    // likewise with 0x20 for 0x01 (exact for "any byte", which is all that is asked).
    let zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGHS;
    let control = w.wrapping_sub(ONES * 0x20) & !w & HIGHS;
    control | zero(w ^ (ONES * u64::from(b'"'))) | zero(w ^ (ONES * u64::from(b'\\'))) != 0
}

/// The escape sequence of byte `b`; `None` when `b` is written as it is.
fn escape(b: u8) -> Option<Escape> {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    Some(match b {
        b'"' => Escape::Short(*b"\\\""),
        b'\\' => Escape::Short(*b"\\\\"),
        0x08 => Escape::Short(*b"\\b"),
        0x09 => Escape::Short(*b"\\t"),
        0x0a => Escape::Short(*b"\\n"),
        0x0c => Escape::Short(*b"\\f"),
        0x0d => Escape::Short(*b"\\r"),
        0x00..=0x1f => Escape::Unicode([
            b'\\',
            b'u',
            b'0',
            b'0',
            HEX[usize::from(b >> 4)],
            HEX[usize::from(b & 0xf)],
        ]),
        _ => return None,
    })
}

/// A byte's escape sequence.
enum Escape {
    Short([u8; 2]),
    Unicode([u8; 6]),
}

impl std::ops::Deref for Escape {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Escape::Short(s) => s,
            Escape::Unicode(u) => u,
        }
    }
}
