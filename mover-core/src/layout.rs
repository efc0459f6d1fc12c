//! Where each kind of object lives in a destination. `docs/FORMAT.md` is the normative description; this module is
//! the one place in the code that spells the keys.
//!
//! ```text
//! mover.json                                  format marker: {"format":"mover","version":1}
//! packs/<pp>/<pack-id>.pack                   blobs, compressed, with a copy of their index at the end
//! index/<pack-id>.idx                         the pack's index: where each blob is inside the pack
//! mailboxes/<mailbox>/pass-<n>.manifest       one manifest per migration pass of a mailbox
//! ```

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::id::PackId;

/// Key of the format marker.
pub const FORMAT_KEY: &str = "mover.json";
/// Name of the format in the marker.
pub const FORMAT_NAME: &str = "mover";
/// Version of the destination layout this build writes and reads.
pub const FORMAT_VERSION: u32 = 2;
/// Prefix of all pack indexes.
pub const INDEX_PREFIX: &str = "index/";
/// Prefix of all mailbox manifests.
pub const MAILBOX_PREFIX: &str = "mailboxes/";

/// The content of `mover.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct FormatMarker {
    /// Always `"mover"`.
    pub format: String,
    /// Layout version.
    pub version: u32,
}

impl FormatMarker {
    /// The marker this build writes.
    pub fn current() -> Self {
        FormatMarker { format: FORMAT_NAME.to_string(), version: FORMAT_VERSION }
    }

    /// Check that a marker read from a destination can be read by this build.
    pub fn check(&self) -> Result<()> {
        if self.format != FORMAT_NAME {
            return Err(Error::corrupt(format!("{FORMAT_KEY} names format {:?}, not {FORMAT_NAME:?}", self.format)));
        }
        if self.version > FORMAT_VERSION {
            return Err(Error::config(format!(
                "destination has layout version {}, this build reads up to {FORMAT_VERSION}: upgrade mover",
                self.version
            )));
        }
        if self.version < FORMAT_VERSION {
            // Version 1 (packs of one zstd frame per blob, blob ids in manifests) was never released.
            return Err(Error::config(format!(
                "destination has layout version {}, written by a pre-release build; this build reads version \
                 {FORMAT_VERSION} only: migrate into a new destination",
                self.version
            )));
        }
        Ok(())
    }
}

/// Key of a pack object.
pub fn pack_key(id: &PackId) -> String {
    let hex = id.to_hex();
    format!("packs/{}/{hex}.pack", &hex[..2])
}

/// Key of a pack's index object.
pub fn index_key(id: &PackId) -> String {
    format!("{INDEX_PREFIX}{}.idx", id.to_hex())
}

/// The pack id named by an index key, if it is one.
pub fn pack_id_from_index_key(key: &str) -> Option<PackId> {
    key.strip_prefix(INDEX_PREFIX)?.strip_suffix(".idx")?.parse().ok()
}

/// Prefix under which a mailbox's manifests live.
pub fn mailbox_prefix(mailbox: &str) -> String {
    format!("{MAILBOX_PREFIX}{}/", escape_mailbox(mailbox))
}

/// Key of a mailbox manifest for one pass.
pub fn manifest_key(mailbox: &str, pass: u32) -> String {
    format!("{}pass-{pass:08}.manifest", mailbox_prefix(mailbox))
}

/// Split a manifest key into (mailbox, pass).
pub fn parse_manifest_key(key: &str) -> Option<(String, u32)> {
    let rest = key.strip_prefix(MAILBOX_PREFIX)?;
    let (mailbox, file) = rest.rsplit_once('/')?;
    let pass = file.strip_prefix("pass-")?.strip_suffix(".manifest")?.parse().ok()?;
    Some((unescape_mailbox(mailbox)?, pass))
}

/// Escape a mailbox id into one key component: ASCII letters, digits and `._-+=@` stay (except a leading `.`);
/// every other byte becomes `%XX`.
pub fn escape_mailbox(mailbox: &str) -> String {
    let mut out = String::with_capacity(mailbox.len());
    for (i, b) in mailbox.bytes().enumerate() {
        let keep = b.is_ascii_alphanumeric() || (b"_-+=".contains(&b)) || (b == b'.' && i > 0);
        if keep {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Reverse of [`escape_mailbox`].
pub fn unescape_mailbox(escaped: &str) -> Option<String> {
    let b = escaped.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let h = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(h, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Check a mailbox id given by a user or caller.
pub fn validate_mailbox(mailbox: &str) -> Result<()> {
    if mailbox.is_empty() || mailbox.len() > 512 || mailbox.chars().any(|c| c.is_control()) {
        return Err(Error::config(format!(
            "invalid mailbox id {mailbox:?}: 1 to 512 characters, no control characters"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::validate_key;

    #[test]
    fn mailbox_keys_round_trip() {
        for m in ["alice", "a b/c", ".hidden", "ünïcode", "x%y", "..", "user@example.org"] {
            let key = manifest_key(m, 7);
            validate_key(&key).unwrap();
            assert_eq!(parse_manifest_key(&key), Some((m.to_string(), 7)), "{m}");
        }
        let p = PackId::fresh();
        validate_key(&pack_key(&p)).unwrap();
        assert_eq!(pack_id_from_index_key(&index_key(&p)), Some(p));
    }
}
