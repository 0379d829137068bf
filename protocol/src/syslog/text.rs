//! Raw bytes to bounded, printable-enough text.

/// What the bytes of one line became.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Decoded {
    pub text: String,
    pub truncated: bool,
    pub invalid_utf8: bool,
}

/// What a NUL byte inside a line is shown as (U+2400 SYMBOL FOR NULL).
/// NULs are not kept: PostgreSQL refuses them in text and SQLite's string
/// functions stop at them, and an invisible NUL hides what a sender did.
pub const NUL_REPLACEMENT: char = '\u{2400}';

/// Decode one line: drop trailing CR, LF and NUL, keep at most `max` bytes,
/// turn invalid UTF-8 into U+FFFD and NULs into [`NUL_REPLACEMENT`]. The
/// result never exceeds `max` bytes and is cut on a character boundary.
pub(crate) fn decode(line: &[u8], max: usize) -> Decoded {
    let end = line
        .iter()
        .rposition(|b| !matches!(b, b'\r' | b'\n' | 0))
        .map_or(0, |i| i + 1);
    let line = &line[..end];
    let mut truncated = line.len() > max;
    // Cut the raw bytes first, so a 1 MiB line never costs 1 MiB.
    let mut bytes = &line[..line.len().min(max)];

    let mut text = String::with_capacity(bytes.len());
    let mut invalid_utf8 = false;
    loop {
        match std::str::from_utf8(bytes) {
            Ok(s) => {
                text.push_str(s);
                break;
            }
            Err(e) => {
                let (good, rest) = bytes.split_at(e.valid_up_to());
                text.push_str(&String::from_utf8_lossy(good));
                match e.error_len() {
                    Some(n) => {
                        text.push(char::REPLACEMENT_CHARACTER);
                        invalid_utf8 = true;
                        bytes = &rest[n..];
                    }
                    None => {
                        // An incomplete sequence at the very end: our own cut
                        // split a character, unless the line really ends so.
                        if !truncated {
                            text.push(char::REPLACEMENT_CHARACTER);
                            invalid_utf8 = true;
                        }
                        break;
                    }
                }
            }
        }
    }

    if text.contains('\0') {
        text = text.replace('\0', NUL_REPLACEMENT.encode_utf8(&mut [0; 4]));
    }
    // Replacements are wider than the bytes they stand for.
    if text.len() > max {
        let mut cut = max;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        truncated = true;
    }
    Decoded {
        text,
        truncated,
        invalid_utf8,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(b: &[u8], max: usize) -> (String, bool, bool) {
        let r = decode(b, max);
        assert!(r.text.len() <= max);
        (r.text, r.truncated, r.invalid_utf8)
    }

    #[test]
    fn strips_line_terminators_and_trailing_nuls() {
        assert_eq!(d(b"abc\r\n", 100), ("abc".into(), false, false));
        assert_eq!(d(b"abc\n\0\0", 100), ("abc".into(), false, false));
        assert_eq!(d(b"\r\n", 100), (String::new(), false, false));
        assert_eq!(d(b"", 100), (String::new(), false, false));
    }

    #[test]
    fn inner_nuls_stay_visible() {
        assert_eq!(d(b"a\0b", 100), ("a\u{2400}b".into(), false, false));
    }

    #[test]
    fn invalid_utf8_is_replaced_and_marked() {
        assert_eq!(d(b"a\xffb", 100), ("a\u{FFFD}b".into(), false, true));
        assert_eq!(d(b"ab\xe2\x82", 100), ("ab\u{FFFD}".into(), false, true));
    }

    #[test]
    fn truncation_respects_char_boundaries() {
        // "é" is two bytes; a cut inside it must not invent a U+FFFD.
        assert_eq!(d("aé".as_bytes(), 2), ("a".into(), true, false));
        assert_eq!(d(b"abcdef", 3), ("abc".into(), true, false));
        // Replacement characters widen the text past the limit.
        assert_eq!(d(b"\xff\xff", 4), ("\u{FFFD}".into(), true, true));
        assert_eq!(d(b"\0\0x", 3), ("\u{2400}".into(), true, false));
        assert_eq!(d(b"abc", 0), (String::new(), true, false));
    }

    #[test]
    fn a_mebibyte_line_is_cut_cheaply() {
        let big = vec![b'x'; 1 << 20];
        let r = decode(&big, 65536);
        assert_eq!(r.text.len(), 65536);
        assert!(r.truncated);
    }
}
