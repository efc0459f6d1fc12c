//! Compression of blobs: zstd, skipped where it does not pay.
//!
//! Each blob is compressed on its own so that any one blob can be read back with a single range read. Data that
//! zstd cannot shrink by at least [`MIN_SAVING`] is stored as it is: decompressing it later would cost CPU for
//! nothing. (Dictionaries for small header blocks are a later format addition: the codec byte leaves room.)

use std::cell::RefCell;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// How a blob's bytes are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[repr(u8)]
pub enum Codec {
    /// Stored as is.
    None = 0,
    /// One zstd frame.
    Zstd = 1,
}

impl Codec {
    /// From the byte stored in pack indexes and manifests.
    pub fn from_u8(b: u8) -> Result<Self> {
        match b {
            0 => Ok(Codec::None),
            1 => Ok(Codec::Zstd),
            _ => Err(Error::corrupt(format!("unknown codec {b}"))),
        }
    }
}

/// Blobs smaller than this are stored uncompressed: a zstd frame header would eat the saving.
pub const MIN_COMPRESS_LEN: usize = 64;
/// Keep the compressed form only when it saves at least 1/32 of the raw size.
pub const MIN_SAVING: usize = 32;

/// Blobs at least this large are probed before being compressed whole.
pub const PROBE_MIN: usize = 64 * 1024;
const PROBE_WINDOW: usize = 8 * 1024;

/// Whether `raw` looks compressible: three windows (start, middle, end) compressed at level 1 must save at least
/// 1/32. JPEG, PNG, ZIP, gzip and already-compressed PDF streams fail fast here instead of costing a full zstd pass.
fn worth_compressing(raw: &[u8]) -> Result<bool> {
    let mid = raw.len() / 2 - PROBE_WINDOW / 2;
    let windows = [&raw[..PROBE_WINDOW], &raw[mid..mid + PROBE_WINDOW], &raw[raw.len() - PROBE_WINDOW..]];
    let mut compressed = 0;
    for w in windows {
        compressed += PROBE
            .with(|c| -> std::io::Result<usize> {
                let mut c = c.borrow_mut();
                if c.is_none() {
                    *c = Some(zstd::bulk::Compressor::new(1)?);
                }
                Ok(c.as_mut().expect("set above").compress(w)?.len())
            })
            .map_err(|e| Error::new(crate::ErrorKind::Other, format!("zstd probe failed: {e}")))?;
    }
    let sampled = 3 * PROBE_WINDOW;
    Ok(compressed + sampled / MIN_SAVING < sampled)
}

thread_local! {
    static PROBE: RefCell<Option<zstd::bulk::Compressor<'static>>> = const { RefCell::new(None) };
    static COMPRESSOR: RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> = const { RefCell::new(None) };
    static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { RefCell::new(None) };
}

/// Compress `raw` at `level`, or say it is better stored as is (`None`).
pub fn compress(raw: &[u8], level: i32) -> Result<Option<Vec<u8>>> {
    if raw.len() < MIN_COMPRESS_LEN {
        return Ok(None);
    }
    if raw.len() >= PROBE_MIN && !worth_compressing(raw)? {
        return Ok(None);
    }
    let out = COMPRESSOR.with(|c| -> std::io::Result<Vec<u8>> {
        let mut c = c.borrow_mut();
        if c.as_ref().map(|(l, _)| *l) != Some(level) {
            *c = Some((level, zstd::bulk::Compressor::new(level)?));
        }
        c.as_mut().expect("set above").1.compress(raw)
    });
    let out = out.map_err(|e| Error::new(crate::ErrorKind::Other, format!("zstd compression failed: {e}")))?;
    if out.len() + raw.len() / MIN_SAVING >= raw.len() { Ok(None) } else { Ok(Some(out)) }
}

/// Decode a stored blob back to its `raw_len` raw bytes.
pub fn decompress(codec: Codec, stored: &[u8], raw_len: u64) -> Result<Vec<u8>> {
    match codec {
        Codec::None => Ok(stored.to_vec()),
        Codec::Zstd => {
            let out = DECOMPRESSOR.with(|d| -> std::io::Result<Vec<u8>> {
                let mut d = d.borrow_mut();
                if d.is_none() {
                    *d = Some(zstd::bulk::Decompressor::new()?);
                }
                d.as_mut().expect("set above").decompress(stored, raw_len as usize)
            });
            let out = out.map_err(|e| Error::corrupt(format!("zstd frame does not decode: {e}")))?;
            if out.len() as u64 != raw_len {
                return Err(Error::corrupt(format!("decoded {} bytes, expected {raw_len}", out.len())));
            }
            Ok(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_skip() {
        let text = b"Received: from mail.example.org by mx.example.com; ".repeat(40);
        let c = compress(&text, 3).unwrap().expect("text compresses");
        assert!(c.len() < text.len() / 4);
        assert_eq!(decompress(Codec::Zstd, &c, text.len() as u64).unwrap(), text);
        // Pseudo-random bytes do not compress: stored raw.
        let mut x = 0x9E3779B97F4A7C15u64;
        let noise: Vec<u8> = (0..10_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        assert!(compress(&noise, 3).unwrap().is_none());
        assert!(compress(b"tiny", 3).unwrap().is_none());
        // Large incompressible data is detected by the probe; large text still compresses.
        let big_noise: Vec<u8> = (0..200_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 11) as u8
            })
            .collect();
        assert!(!worth_compressing(&big_noise).unwrap());
        assert!(compress(&big_noise, 3).unwrap().is_none());
        let big_text = b"Subject: quarterly report for the ward, see attached\n".repeat(4000);
        assert!(compress(&big_text, 3).unwrap().is_some());
        assert!(decompress(Codec::Zstd, b"garbage!", 5).is_err());
    }
}
