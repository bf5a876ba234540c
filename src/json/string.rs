//! JSON strings: the escapes `serde_json` writes, found eight bytes at a time.

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
#[inline]
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
