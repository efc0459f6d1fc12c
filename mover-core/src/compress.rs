//! Compression of pack segments: zstd (with a dictionary for small header blocks and bodies), skipped where it does
//! not pay.
//!
//! A segment ([`crate::pack`]) is compressed as one frame, with zstd's content checksum (4 bytes per frame: a
//! damaged segment fails to decode instead of decoding to wrong bytes). Data that zstd cannot shrink by at least
//! [`MIN_SAVING`] is stored as it is: decompressing it later would cost CPU for nothing.

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
    /// One zstd frame compressed with a dictionary; the frame header names the dictionary's id, which names the
    /// `dicts/<id>.zdict` object of the destination.
    ZstdDict = 2,
}

impl Codec {
    /// From the byte stored in pack indexes and manifests.
    pub fn from_u8(b: u8) -> Result<Self> {
        match b {
            0 => Ok(Codec::None),
            1 => Ok(Codec::Zstd),
            2 => Ok(Codec::ZstdDict),
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
    // The output buffer is recycled (`crate::buffers`): callers done with it may give it back.
    let mut out = crate::buffers::take(zstd::zstd_safe::compress_bound(raw.len()));
    let written = COMPRESSOR.with(|c| -> std::io::Result<usize> {
        let mut c = c.borrow_mut();
        if c.as_ref().map(|(l, _)| *l) != Some(level) {
            let mut z = zstd::bulk::Compressor::new(level)?;
            z.set_parameter(zstd::stream::raw::CParameter::ChecksumFlag(true))?;
            *c = Some((level, z));
        }
        c.as_mut().expect("set above").1.compress_to_buffer(raw, &mut out)
    });
    let written = written.map_err(|e| Error::new(crate::ErrorKind::Other, format!("zstd compression failed: {e}")))?;
    debug_assert_eq!(written, out.len());
    if out.len() + raw.len() / MIN_SAVING >= raw.len() {
        crate::buffers::give(out);
        Ok(None)
    } else {
        Ok(Some(out))
    }
}

/// Decode a stored blob back to its `raw_len` raw bytes. Blobs compressed with a dictionary need
/// [`decompress_with_dict`].
pub fn decompress(codec: Codec, stored: &[u8], raw_len: u64) -> Result<Vec<u8>> {
    match codec {
        Codec::None if stored.len() as u64 == raw_len => Ok(stored.to_vec()),
        Codec::None => Err(Error::corrupt(format!("stored {} bytes, expected {raw_len}", stored.len()))),
        Codec::ZstdDict => Err(Error::corrupt("blob needs a dictionary to decode")),
        Codec::Zstd => {
            check_frame_size(stored, raw_len)?;
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

/// A frame must record its content size, and it must be `raw_len`: checked before `raw_len` bytes are allocated, so
/// a damaged index cannot make a reader allocate what it claims (and indexes bound it by `pack::MAX_SEGMENT`).
fn check_frame_size(stored: &[u8], raw_len: u64) -> Result<()> {
    match zstd::zstd_safe::get_frame_content_size(stored) {
        Ok(Some(n)) if n == raw_len => Ok(()),
        Ok(Some(n)) => Err(Error::corrupt(format!("zstd frame holds {n} bytes, expected {raw_len}"))),
        // mover always records the size; a frame without it was not written by mover.
        Ok(None) => Err(Error::corrupt("zstd frame without its content size")),
        Err(_) => Err(Error::corrupt("not a zstd frame")),
    }
}

/// A zstd dictionary (trained on header blocks): small blobs that share structure compress several times better
/// with it than one by one. Dictionaries live for the whole process once loaded ([`Dictionary::leak`]): they are few
/// (one per destination, usually) and every compressor and decompressor of every worker thread refers to them.
pub struct Dictionary {
    id: u32,
    level: i32,
    bytes: bytes::Bytes,
    enc: zstd::dict::EncoderDictionary<'static>,
    dec: zstd::dict::DecoderDictionary<'static>,
}

impl std::fmt::Debug for Dictionary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Dictionary({:08x}, {} bytes)", self.id, self.bytes.len())
    }
}

/// zstd dictionary magic number (little-endian at the start of a dictionary).
const DICT_MAGIC: u32 = 0xEC30_A437;

impl Dictionary {
    /// Load a dictionary from its bytes, prepared for compression at `level`.
    pub fn from_bytes(bytes: bytes::Bytes, level: i32) -> Result<Self> {
        if bytes.len() < 8 || u32::from_le_bytes(bytes[..4].try_into().expect("4 bytes")) != DICT_MAGIC {
            return Err(Error::corrupt("not a zstd dictionary"));
        }
        let id = u32::from_le_bytes(bytes[4..8].try_into().expect("4 bytes"));
        let enc = zstd::dict::EncoderDictionary::copy(&bytes, level);
        let dec = zstd::dict::DecoderDictionary::copy(&bytes);
        Ok(Dictionary { id, level, bytes, enc, dec })
    }

    /// Train a dictionary of at most `max_size` bytes on `samples`; `None` when zstd finds nothing to learn. Its id
    /// is derived from its content (in zstd's unreserved range 32768..2^31), so the same training gives the same
    /// dictionary object.
    pub fn train(samples: &[&[u8]], max_size: usize, level: i32) -> Result<Option<Self>> {
        let mut dict = match zstd::dict::from_samples(samples, max_size) {
            Ok(d) => d,
            Err(e) => {
                tracing::info!("no header dictionary: zstd training found nothing ({e})");
                return Ok(None);
            }
        };
        if dict.len() < 8 || u32::from_le_bytes(dict[..4].try_into().expect("4 bytes")) != DICT_MAGIC {
            return Ok(None);
        }
        let h = blake3::hash(&dict[8..]);
        let n = u32::from_le_bytes(h.as_bytes()[..4].try_into().expect("4 bytes"));
        let id = 32_768 + n % ((1u32 << 31) - 32_768);
        dict[4..8].copy_from_slice(&id.to_le_bytes());
        Self::from_bytes(bytes::Bytes::from(dict), level).map(Some)
    }

    /// The dictionary id (also in the header of every frame compressed with it).
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The dictionary's bytes, as stored.
    pub fn bytes(&self) -> &bytes::Bytes {
        &self.bytes
    }

    /// Keep the dictionary for the rest of the process (see the type's docs).
    pub fn leak(self) -> &'static Dictionary {
        Box::leak(Box::new(self))
    }
}

thread_local! {
    static DICT_COMPRESSOR: RefCell<Option<(u32, zstd::bulk::Compressor<'static>)>> = const { RefCell::new(None) };
    static DICT_DECOMPRESSOR: RefCell<Option<(u32, zstd::bulk::Decompressor<'static>)>> = const { RefCell::new(None) };
}

/// Compress `raw` with `dict` (at the dictionary's level), or say it is better stored as is.
pub fn compress_with_dict(raw: &[u8], dict: &'static Dictionary) -> Result<Option<Vec<u8>>> {
    if raw.len() < MIN_COMPRESS_LEN / 2 {
        return Ok(None);
    }
    let out = DICT_COMPRESSOR.with(|c| -> std::io::Result<Vec<u8>> {
        let mut c = c.borrow_mut();
        if c.as_ref().map(|(id, _)| *id) != Some(dict.id) {
            let mut z = zstd::bulk::Compressor::with_prepared_dictionary(&dict.enc)?;
            z.set_parameter(zstd::stream::raw::CParameter::ChecksumFlag(true))?;
            *c = Some((dict.id, z));
        }
        c.as_mut().expect("set above").1.compress(raw)
    });
    let out = out.map_err(|e| Error::new(crate::ErrorKind::Other, format!("zstd compression failed: {e}")))?;
    let _ = dict.level;
    if out.len() + raw.len() / MIN_SAVING >= raw.len() { Ok(None) } else { Ok(Some(out)) }
}

/// The dictionary id named in a zstd frame's header, if any.
pub fn frame_dict_id(stored: &[u8]) -> Option<u32> {
    zstd::zstd_safe::get_dict_id_from_frame(stored).map(|n| n.get())
}

/// Decode a blob compressed with `dict`.
pub fn decompress_with_dict(stored: &[u8], raw_len: u64, dict: &'static Dictionary) -> Result<Vec<u8>> {
    if frame_dict_id(stored) != Some(dict.id) {
        return Err(Error::corrupt(format!("frame does not name dictionary {:08x}", dict.id)));
    }
    check_frame_size(stored, raw_len)?;
    let out = DICT_DECOMPRESSOR.with(|d| -> std::io::Result<Vec<u8>> {
        let mut d = d.borrow_mut();
        if d.as_ref().map(|(id, _)| *id) != Some(dict.id) {
            *d = Some((dict.id, zstd::bulk::Decompressor::with_prepared_dictionary(&dict.dec)?));
        }
        d.as_mut().expect("set above").1.decompress(stored, raw_len as usize)
    });
    let out =
        out.map_err(|e| Error::corrupt(format!("zstd frame does not decode with dictionary {:08x}: {e}", dict.id)))?;
    if out.len() as u64 != raw_len {
        return Err(Error::corrupt(format!("decoded {} bytes, expected {raw_len}", out.len())));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dictionary_round_trip() {
        let samples: Vec<Vec<u8>> = (0..400)
            .map(|i| {
                format!(
                    "Return-Path: <user{i}@example.org>\nReceived: from mx{} by mail.example.com with ESMTP id {i:08X}\nFrom: User {i} <user{i}@example.org>\nTo: team@example.com\nSubject: weekly report {i}\nMessage-ID: <{i}.{}@example.org>\nMIME-Version: 1.0\nContent-Type: text/plain; charset=us-ascii\n\n",
                    i % 7,
                    i * 7919
                )
                .into_bytes()
            })
            .collect();
        let refs: Vec<&[u8]> = samples.iter().map(|s| s.as_slice()).collect();
        let dict = Dictionary::train(&refs, 16 * 1024, 3).unwrap().expect("trains").leak();
        assert!(dict.id() >= 32_768);
        let again = Dictionary::from_bytes(dict.bytes().clone(), 3).unwrap();
        assert_eq!(again.id(), dict.id());
        let raw = samples[123].as_slice();
        let with = compress_with_dict(raw, dict).unwrap().expect("compresses");
        let without = compress(raw, 3).unwrap().map(|v| v.len()).unwrap_or(raw.len());
        assert!(with.len() * 2 < without, "dictionary helps: {} vs {without}", with.len());
        assert_eq!(frame_dict_id(&with), Some(dict.id()));
        assert_eq!(decompress_with_dict(&with, raw.len() as u64, dict).unwrap(), raw);
        assert!(decompress(Codec::ZstdDict, &with, raw.len() as u64).is_err());
    }

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
