//! A minimal PNG encoder for 8-bit RGB frames: signature, IHDR, one zlib IDAT,
//! IEND. Graphs are flat colours, so the "up" filter and fast deflate give
//! small files quickly, without the `image` crate's tree of codecs.

use flate2::write::ZlibEncoder;
use flate2::Compression;
use std::io::Write;

/// Encodes `rgb` (`width × height × 3` bytes, rows top to bottom).
pub fn encode_rgb(rgb: &[u8], width: u32, height: u32) -> Vec<u8> {
    let stride = width as usize * 3;
    assert_eq!(rgb.len(), stride * height as usize, "frame size");
    let mut raw = Vec::with_capacity((stride + 1) * height as usize);
    let mut prev: &[u8] = &[];
    for row in rgb.chunks_exact(stride) {
        if prev.is_empty() {
            raw.push(0); // None
            raw.extend_from_slice(row);
        } else {
            raw.push(2); // Up: repeated rows become runs of zeros
            raw.extend(row.iter().zip(prev).map(|(a, b)| a.wrapping_sub(*b)));
        }
        prev = row;
    }
    let mut z = ZlibEncoder::new(Vec::with_capacity(raw.len() / 8), Compression::fast());
    z.write_all(&raw).expect("writing to memory");
    let idat = z.finish().expect("writing to memory");

    let mut out = Vec::with_capacity(idat.len() + 64);
    out.extend_from_slice(b"\x89PNG\r\n\x1a\n");
    let mut ihdr = Vec::with_capacity(13);
    ihdr.extend_from_slice(&width.to_be_bytes());
    ihdr.extend_from_slice(&height.to_be_bytes());
    // 8-bit depth, colour type 2 (RGB), deflate, adaptive filtering, no interlace.
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    chunk(&mut out, b"IHDR", &ihdr);
    chunk(&mut out, b"IDAT", &idat);
    chunk(&mut out, b"IEND", &[]);
    out
}

fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    let mut crc = crc32fast::Hasher::new();
    crc.update(kind);
    crc.update(data);
    out.extend_from_slice(&crc.finalize().to_be_bytes());
}

/// Width and height from a PNG's IHDR (for tests and callers that check).
pub fn dimensions(png: &[u8]) -> Option<(u32, u32)> {
    if png.len() < 24 || &png[..8] != b"\x89PNG\r\n\x1a\n" || &png[12..16] != b"IHDR" {
        return None;
    }
    let w = u32::from_be_bytes(png[16..20].try_into().ok()?);
    let h = u32::from_be_bytes(png[20..24].try_into().ok()?);
    Some((w, h))
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::read::ZlibDecoder;
    use std::io::Read;

    #[test]
    fn round_trips_through_zlib_and_the_up_filter() {
        let (w, h) = (3u32, 2u32);
        let rgb: Vec<u8> = (0..18).collect();
        let png = encode_rgb(&rgb, w, h);
        assert_eq!(dimensions(&png), Some((3, 2)));
        // IDAT starts after signature (8) + IHDR chunk (12 + 13).
        let at = 8 + 25;
        let len = u32::from_be_bytes(png[at..at + 4].try_into().unwrap()) as usize;
        assert_eq!(&png[at + 4..at + 8], b"IDAT");
        let mut raw = Vec::new();
        ZlibDecoder::new(&png[at + 8..at + 8 + len])
            .read_to_end(&mut raw)
            .unwrap();
        assert_eq!(raw.len(), 2 * 10);
        assert_eq!(&raw[1..10], &rgb[..9]);
        assert_eq!(raw[10], 2);
        let row2: Vec<u8> = raw[11..]
            .iter()
            .zip(&rgb[..9])
            .map(|(d, p)| d.wrapping_add(*p))
            .collect();
        assert_eq!(row2, &rgb[9..]);
        assert!(png.ends_with(&[0xae, 0x42, 0x60, 0x82]), "IEND CRC");
    }
}
