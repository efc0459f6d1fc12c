//! Identities: content addresses of blobs and names of packs.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, Result};

/// The BLAKE3 hash of a blob's raw (uncompressed, decoded) bytes: its name in every store.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContentId([u8; 32]);

impl ContentId {
    /// Length of the binary form.
    pub const LEN: usize = 32;

    /// Hash `data`.
    pub fn of(data: &[u8]) -> Self {
        ContentId(*blake3::hash(data).as_bytes())
    }

    /// From a finished BLAKE3 hash.
    pub fn from_hash(hash: blake3::Hash) -> Self {
        ContentId(*hash.as_bytes())
    }

    /// From the 32 raw bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        ContentId(bytes)
    }

    /// The 32 raw bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Lower-case hex, 64 characters.
    pub fn to_hex(&self) -> String {
        hex_encode(&self.0)
    }
}

impl fmt::Display for ContentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for ContentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ContentId({})", &self.to_hex()[..16])
    }
}

impl FromStr for ContentId {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Ok(ContentId(hex_decode_array(s, "content id")?))
    }
}

/// The name of a pack object: 128 bits, random for packs of small blobs and derived from the content for a large
/// blob stored alone (so two hosts storing the same large blob write the same object).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PackId([u8; 16]);

impl PackId {
    /// A fresh id, unique with overwhelming probability (hash of time, process, host and a counter).
    pub fn fresh() -> Self {
        use std::sync::atomic::{AtomicU64, Ordering};
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let mut h = blake3::Hasher::new();
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        h.update(&now.as_nanos().to_le_bytes());
        h.update(&std::process::id().to_le_bytes());
        h.update(&COUNTER.fetch_add(1, Ordering::Relaxed).to_le_bytes());
        if let Ok(name) = std::fs::read("/proc/sys/kernel/hostname") {
            h.update(&name);
        }
        let addr = &COUNTER as *const AtomicU64 as usize;
        h.update(&addr.to_le_bytes());
        let mut id = [0u8; 16];
        id.copy_from_slice(&h.finalize().as_bytes()[..16]);
        PackId(id)
    }

    /// The pack id of a large blob stored alone: derived from its content id and from the stored bytes (and their
    /// codec), so the same pack object always holds the same bytes: two hosts, or a run resumed after a crash, that
    /// store the same blob the same way write the same object (and resume its multipart upload), while a blob stored
    /// differently (another zstd level or build) gets another object instead of an index that does not match it.
    pub fn for_large_blob(id: &ContentId, stored: &[u8], codec: u8) -> Self {
        let mut h = blake3::Hasher::new_derive_key("mover large blob pack v2");
        h.update(id.as_bytes());
        h.update(&[codec]);
        h.update(blake3::hash(stored).as_bytes());
        let mut out = [0u8; 16];
        out.copy_from_slice(&h.finalize().as_bytes()[..16]);
        PackId(out)
    }

    /// From the 16 raw bytes.
    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        PackId(bytes)
    }

    /// The 16 raw bytes.
    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }

    /// Lower-case hex, 32 characters.
    pub fn to_hex(&self) -> String {
        hex_encode(&self.0)
    }
}

impl fmt::Display for PackId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for PackId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PackId({})", self.to_hex())
    }
}

impl FromStr for PackId {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Ok(PackId(hex_decode_array(s, "pack id")?))
    }
}

macro_rules! hex_serde {
    ($t:ty) => {
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
                s.serialize_str(&self.to_hex())
            }
        }
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}
hex_serde!(ContentId);
hex_serde!(PackId);

/// Lower-case hex of `bytes`.
pub fn hex_encode(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

fn hex_decode_array<const N: usize>(s: &str, what: &str) -> Result<[u8; N]> {
    let b = s.as_bytes();
    if b.len() != N * 2 {
        return Err(Error::corrupt(format!("{what} {s:?} is not {} hex digits", N * 2)));
    }
    let nib = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    let mut out = [0u8; N];
    for (i, o) in out.iter_mut().enumerate() {
        match (nib(b[2 * i]), nib(b[2 * i + 1])) {
            (Some(h), Some(l)) => *o = (h << 4) | l,
            _ => return Err(Error::corrupt(format!("{what} {s:?} is not hex"))),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip() {
        let id = ContentId::of(b"hello");
        assert_eq!(id.to_hex(), blake3::hash(b"hello").to_hex().as_str());
        assert_eq!(id.to_hex().parse::<ContentId>().unwrap(), id);
        let p = PackId::fresh();
        assert_eq!(p.to_hex().parse::<PackId>().unwrap(), p);
        assert_ne!(PackId::fresh(), PackId::fresh());
        assert!("zz".parse::<PackId>().is_err());
    }
}
