//! Cutting a syslog TCP stream into messages (RFC 6587).
//!
//! Each frame decides its own framing from its first byte: a digit 1–9 starts
//! octet counting (`LEN SP MSG`), anything else a line ended by LF (CRLF and
//! NUL are tolerated). Deciding per frame rather than once per connection
//! costs nothing and survives senders that mix the two.

/// An octet count above this is not believed: the digits are read as the
/// start of a newline-delimited line instead. Counts between the line limit
/// and this cap are honoured (the frame is truncated and the rest skipped)
/// without allocating the count.
pub const OCTET_COUNT_HARD_CAP: usize = 64 * 1024 * 1024;

use super::parse::{parse_with, ParseOptions};
use super::record::LogRecord;

/// Longest octet count accepted, in digits (the cap has 8).
const MAX_COUNT_DIGITS: usize = 9;

/// One message cut from the stream, without its framing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub bytes: Vec<u8>,
    /// The message was longer than the limit (only its start is here), or
    /// the stream ended inside it.
    pub truncated: bool,
}

impl Frame {
    /// The frame as a log record: [`parse_with`] of its bytes, marked
    /// truncated when the frame itself was cut.
    pub fn to_record(&self, opts: &ParseOptions<'_>) -> LogRecord {
        let mut record = parse_with(&self.bytes, opts);
        record.truncated |= self.truncated;
        record
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Between frames, skipping stray LF, CR and NUL.
    Idle,
    /// Reading an octet count; its digits are in the buffer, in case they
    /// turn out to start a line.
    Count { value: usize },
    /// Inside an octet-counted message, `remaining` bytes to go.
    Counted { remaining: usize, truncated: bool },
    /// Inside a line; `discarding` once its start was already yielded as a
    /// truncated frame.
    Line { discarding: bool },
}

/// Per-connection incremental decoder: [`Framer::feed`] the bytes as they
/// arrive, [`Framer::finish`] at end of stream. The result does not depend
/// on how the bytes were split into reads. Memory stays below
/// `max_frame_bytes` plus a few bytes whatever the peer sends.
#[derive(Debug)]
pub struct Framer {
    max: usize,
    state: State,
    buf: Vec<u8>,
}

impl Framer {
    /// Frames longer than `max_frame_bytes` are cut to that size and marked.
    pub fn new(max_frame_bytes: usize) -> Framer {
        Framer {
            max: max_frame_bytes,
            state: State::Idle,
            buf: Vec::new(),
        }
    }

    /// Consume `data` and return the frames it completed, in order.
    pub fn feed(&mut self, data: &[u8]) -> Vec<Frame> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < data.len() {
            i += self.step(&data[i..], &mut out);
        }
        out
    }

    /// The stream ended: the message in progress, if any, as a frame. A
    /// line without its final LF is complete; an octet-counted message cut
    /// short is marked truncated.
    pub fn finish(&mut self) -> Option<Frame> {
        let state = std::mem::replace(&mut self.state, State::Idle);
        let bytes = std::mem::take(&mut self.buf);
        match state {
            State::Idle | State::Line { discarding: true } => None,
            State::Count { .. } | State::Line { discarding: false } => Some(self.line_frame(bytes)),
            State::Counted { .. } => Some(Frame {
                bytes,
                truncated: true,
            }),
        }
    }

    /// Process the start of `data`; returns how many bytes were used (≥ 1).
    fn step(&mut self, data: &[u8], out: &mut Vec<Frame>) -> usize {
        match self.state {
            State::Idle => {
                let b = data[0];
                match b {
                    b'\n' | b'\r' | 0 => {}
                    b'1'..=b'9' => {
                        self.buf.push(b);
                        self.state = State::Count {
                            value: usize::from(b - b'0'),
                        };
                    }
                    _ => {
                        self.state = State::Line { discarding: false };
                        return self.line(data, out);
                    }
                }
                1
            }
            State::Count { value } => {
                let b = data[0];
                if b == b' ' {
                    self.buf.clear();
                    self.buf.reserve(value.min(self.max));
                    self.state = State::Counted {
                        remaining: value,
                        truncated: value > self.max,
                    };
                    return 1;
                }
                let next = if b.is_ascii_digit() && self.buf.len() < MAX_COUNT_DIGITS {
                    Some(value * 10 + usize::from(b - b'0'))
                } else {
                    None
                };
                match next {
                    Some(v) if v <= OCTET_COUNT_HARD_CAP => {
                        self.buf.push(b);
                        self.state = State::Count { value: v };
                        1
                    }
                    // Not a count after all: the digits start a line.
                    _ => {
                        self.state = State::Line { discarding: false };
                        self.line(data, out)
                    }
                }
            }
            State::Counted {
                remaining,
                truncated,
            } => {
                let take = remaining.min(data.len());
                let room = self.max.saturating_sub(self.buf.len());
                self.buf.extend_from_slice(&data[..take.min(room)]);
                let remaining = remaining - take;
                if remaining == 0 {
                    out.push(Frame {
                        bytes: std::mem::take(&mut self.buf),
                        truncated,
                    });
                    self.state = State::Idle;
                } else {
                    self.state = State::Counted {
                        remaining,
                        truncated,
                    };
                }
                take
            }
            State::Line { .. } => self.line(data, out),
        }
    }

    /// Line mode: up to and including the next terminator, or all of `data`.
    fn line(&mut self, data: &[u8], out: &mut Vec<Frame>) -> usize {
        let State::Line { mut discarding } = self.state else {
            return 0;
        };
        let end = data.iter().position(|&b| b == b'\n' || b == 0);
        let segment = &data[..end.unwrap_or(data.len())];
        if !discarding {
            // One byte beyond the limit is kept, for a CR before the LF.
            let room = (self.max + 1).saturating_sub(self.buf.len());
            if segment.len() > room {
                self.buf.extend_from_slice(&segment[..room]);
                self.buf.truncate(self.max);
                out.push(Frame {
                    bytes: std::mem::take(&mut self.buf),
                    truncated: true,
                });
                discarding = true;
            } else {
                self.buf.extend_from_slice(segment);
            }
        }
        match end {
            Some(_) => {
                if !discarding {
                    let bytes = std::mem::take(&mut self.buf);
                    out.push(self.line_frame(bytes));
                }
                self.state = State::Idle;
                segment.len() + 1
            }
            None => {
                self.state = State::Line { discarding };
                segment.len()
            }
        }
    }

    fn line_frame(&self, mut bytes: Vec<u8>) -> Frame {
        if bytes.last() == Some(&b'\r') {
            bytes.pop();
        }
        let truncated = bytes.len() > self.max;
        bytes.truncate(self.max);
        Frame { bytes, truncated }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(max: usize, data: &[u8]) -> Vec<Frame> {
        let mut f = Framer::new(max);
        let mut out = f.feed(data);
        out.extend(f.finish());
        out
    }

    fn texts(fs: &[Frame]) -> Vec<(String, bool)> {
        fs.iter()
            .map(|f| (String::from_utf8_lossy(&f.bytes).into_owned(), f.truncated))
            .collect()
    }

    fn ok(s: &str) -> (String, bool) {
        (s.to_owned(), false)
    }

    const MIXED: &[u8] = b"<13>Nov 23 04:05:06 host user: one\n\
        28 <13>Nov 23 04:05:06 h a: two\
        <14>three\r\n\
        \n\r\n\
        13 <15>four\nfive\
        <16>six\0\
        2026-01-01 seven\n\
        6 <1>8\n\n\
        <17>last without LF";

    fn mixed_expected() -> Vec<(String, bool)> {
        vec![
            ok("<13>Nov 23 04:05:06 host user: one"),
            ok("<13>Nov 23 04:05:06 h a: two"),
            ok("<14>three"),
            ok("<15>four\nfive"),
            ok("<16>six"),
            ok("2026-01-01 seven"),
            ok("<1>8\n\n"),
            ok("<17>last without LF"),
        ]
    }

    #[test]
    fn mixed_framings_in_one_stream() {
        assert_eq!(texts(&frames(1024, MIXED)), mixed_expected());
    }

    #[test]
    fn every_split_gives_the_same_frames() {
        let whole = frames(16, MIXED);
        for cut in 0..=MIXED.len() {
            let mut f = Framer::new(16);
            let mut out = f.feed(&MIXED[..cut]);
            out.extend(f.feed(&MIXED[cut..]));
            out.extend(f.finish());
            assert_eq!(out, whole, "split at {cut}");
        }
        let mut f = Framer::new(16);
        let mut out: Vec<Frame> = MIXED.iter().flat_map(|b| f.feed(&[*b])).collect();
        out.extend(f.finish());
        assert_eq!(out, whole, "one byte at a time");
    }

    #[test]
    fn long_lines_are_cut_and_the_rest_skipped() {
        let mut data = vec![b'x'; 1 << 20];
        data.extend_from_slice(b"\n<13>next\n");
        let out = frames(65536, &data);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].bytes.len(), 65536);
        assert!(out[0].truncated);
        assert_eq!(texts(&out[1..]), vec![ok("<13>next")]);
    }

    #[test]
    fn a_line_of_exactly_the_limit_is_whole_even_with_crlf() {
        assert_eq!(
            texts(&frames(4, b"abcd\r\nabcde\n")),
            vec![ok("abcd"), ("abcd".into(), true)]
        );
    }

    #[test]
    fn counted_frames_over_the_limit_are_cut_without_allocating() {
        let mut data = b"10 0123456789".to_vec();
        data.extend_from_slice(b"3 abc");
        assert_eq!(
            texts(&frames(4, &data)),
            vec![("0123".into(), true), ok("abc")]
        );
        // A large but believable count: allocation stays at the limit.
        let mut f = Framer::new(8);
        assert!(f.feed(b"50000000 ").is_empty());
        assert!(f.buf.capacity() <= 64);
        assert!(f.feed(&vec![b'y'; 1000]).is_empty());
        assert!(f.buf.len() <= 8);
    }

    #[test]
    fn an_unbelievable_count_is_a_line() {
        assert_eq!(
            texts(&frames(100, b"99999999999999 hello\n")),
            vec![ok("99999999999999 hello")]
        );
    }

    #[test]
    fn end_of_stream_inside_a_counted_frame_is_marked() {
        assert_eq!(texts(&frames(100, b"10 abc")), vec![("abc".into(), true)]);
        assert_eq!(texts(&frames(100, b"42")), vec![ok("42")]);
        assert!(frames(100, b"\n\r\n\0").is_empty());
    }

    #[test]
    fn a_cut_frame_makes_a_truncated_record() {
        let out = frames(32, b"40 <13>Nov 23 04:05:06 host app: a long message");
        let opts = ParseOptions::new(chrono::Utc::now());
        let r = out[0].to_record(&opts);
        assert!(r.truncated);
        assert_eq!(r.hostname.as_deref(), Some("host"));
        let r = frames(100, b"<13>x\n")[0].to_record(&opts);
        assert!(!r.truncated);
    }

    #[test]
    fn random_bytes_never_panic_and_stay_bounded() {
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..300 {
            let len = (next() % 4096) as usize;
            let data: Vec<u8> = (0..len)
                .map(|_| match next() % 8 {
                    0 => b'\n',
                    1 => b' ',
                    2 => b'0' + (next() % 10) as u8,
                    _ => next() as u8,
                })
                .collect();
            let max = 1 + (next() % 300) as usize;
            let mut f = Framer::new(max);
            let mut chunks = data.as_slice();
            let mut out = Vec::new();
            while !chunks.is_empty() {
                let n = 1 + (next() as usize % chunks.len());
                out.extend(f.feed(&chunks[..n]));
                chunks = &chunks[n..];
                assert!(f.buf.len() <= max + MAX_COUNT_DIGITS + 1);
            }
            out.extend(f.finish());
            assert_eq!(out, frames(max, &data));
            assert!(out.iter().all(|fr| fr.bytes.len() <= max));
        }
    }
}
