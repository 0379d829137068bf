//! Byte-level pieces of the archive's two binary formats (journal rows in
//! `journal.rs`, archive chunks in `chunk.rs`): LEB128 varints, zigzag and a
//! bounds-checked reader. The reader's errors are a static reason, which each
//! format wraps in its own error type (`From<&'static str>`).

pub(super) fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

/// Bytes [`put_varint`] writes for `v`.
pub(super) fn varint_len(v: u64) -> usize {
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

pub(super) fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

pub(super) fn unzigzag(z: u64) -> i64 {
    ((z >> 1) as i64) ^ -((z & 1) as i64)
}

/// Reads `b` front to back; every read checks the bounds.
pub(super) struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    /// A reader of `b` starting at offset `at`.
    pub(super) fn new(b: &'a [u8], at: usize) -> Self {
        Self { b, at }
    }

    /// Whether every byte was read.
    pub(super) fn is_done(&self) -> bool {
        self.at == self.b.len()
    }

    pub(super) fn byte(&mut self) -> Result<u8, &'static str> {
        let v = *self.b.get(self.at).ok_or("truncated")?;
        self.at += 1;
        Ok(v)
    }

    /// The next `n` bytes.
    pub(super) fn take(&mut self, n: usize) -> Result<&'a [u8], &'static str> {
        let s = self.b.get(self.at..self.at + n).ok_or("truncated value")?;
        self.at += n;
        Ok(s)
    }

    /// A little-endian f64, bit for bit.
    pub(super) fn f64(&mut self) -> Result<f64, &'static str> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(f64::from_le_bytes(a))
    }

    pub(super) fn varint(&mut self) -> Result<u64, &'static str> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte().map_err(|_| "truncated varint")?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("varint too long")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_and_zigzag_round_trip_and_bad_input_is_an_error() {
        let values = [0u64, 1, 127, 128, 300, u64::from(u32::MAX), u64::MAX];
        let mut out = Vec::new();
        for v in values {
            let before = out.len();
            put_varint(&mut out, v);
            assert_eq!(out.len() - before, varint_len(v));
        }
        let mut r = Reader::new(&out, 0);
        for v in values {
            assert_eq!(r.varint(), Ok(v));
        }
        assert!(r.is_done());
        assert_eq!(r.varint(), Err("truncated varint"));
        for v in [0i64, -1, 1, i64::MIN, i64::MAX] {
            assert_eq!(unzigzag(zigzag(v)), v);
        }
        assert_eq!(Reader::new(&[0x80; 11], 0).varint(), Err("varint too long"));
        assert_eq!(Reader::new(&[0; 7], 0).f64(), Err("truncated value"));
    }
}
