//! What a run tells its operator: counts, bytes, and every quarantined item with its reason.

use serde::{Deserialize, Serialize};

/// Counters of one migration pass of one mailbox. Stored in the manifest header and returned to the caller.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PassStats {
    /// Regular files in the mailbox (messages, mbox folders, other files).
    pub files: u64,
    /// Messages (Maildir message files plus messages found in mbox files).
    pub messages: u64,
    /// Bytes of all regular files in the source.
    pub source_bytes: u64,
    /// Files unchanged since the previous pass, carried over without being read.
    pub unchanged_files: u64,
    /// Files read again although their stamps were as the previous pass recorded them, because they changed at
    /// about the time that pass started (a second change in the same tick of the clock would not show). A pass that
    /// read any is committed even when it found nothing different, so that later passes can trust their stamps.
    #[serde(default)]
    pub racy_files: u64,
    /// Bytes read from the source in this pass.
    pub read_bytes: u64,
    /// Raw bytes of header blocks read.
    pub header_bytes: u64,
    /// Raw bytes of message bodies read.
    pub body_bytes: u64,
    /// Raw bytes of non-message data read (opaque files, mbox preambles, separators are not counted).
    pub other_bytes: u64,
    /// Blobs this pass added to the destination.
    pub new_blobs: u64,
    /// Raw bytes of those blobs.
    pub new_raw_bytes: u64,
    /// Stored (compressed) bytes this pass added to the destination: pack data, indexes and the manifest.
    pub new_stored_bytes: u64,
    /// Blob references satisfied by a blob the destination already had (or that this pass stored earlier).
    pub deduplicated_blobs: u64,
    /// Raw bytes of those references.
    pub deduplicated_bytes: u64,
    /// Packs written.
    pub packs: u64,
    /// Items quarantined (see the manifest's quarantine records or the run summary).
    pub quarantined: u64,
    /// Stored bytes attributed to this mailbox over all its passes (first writer of a blob pays for it).
    pub stored_bytes_total: u64,
    /// MIME parts stored decoded (`encoded_parts`, `encoded_bytes`, `decoded_bytes`) and parts kept raw, counted by
    /// reason (`raw`).
    pub mime: crate::mime::SplitStats,
    /// Attachment parts whose decoded content the destination already had (every blob of the part deduplicated).
    pub attachments_deduplicated: u64,
    /// Bytes by kind of content: read, unique (new), stored (new, compressed), deduplicated.
    pub breakdown: Breakdown,
}

/// [`PassStats`] broken down by kind of content.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Breakdown {
    /// Header blocks.
    pub headers: KindStats,
    /// Raw body bytes (text bodies, MIME structure, parts kept raw).
    pub bodies: KindStats,
    /// Decoded attachments.
    pub attachments: KindStats,
    /// Everything else (non-message files, mbox preambles).
    pub other: KindStats,
}

/// Byte counts of one kind of content.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct KindStats {
    /// Bytes read from the source (for attachments: decoded bytes).
    pub source_bytes: u64,
    /// Raw bytes of blobs new to the destination (unique bytes after dedupe).
    pub unique_bytes: u64,
    /// Stored (compressed) bytes of those blobs.
    pub stored_bytes: u64,
    /// Raw bytes satisfied by blobs already in the destination.
    pub deduplicated_bytes: u64,
}

/// One item that could not be migrated as a normal message, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuarantineItem {
    /// Path relative to the source root (lossy UTF-8 for display).
    pub path: String,
    /// Byte offset in the file where the problem is, where one applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    /// What is wrong, for people.
    pub reason: String,
    /// Whether the bytes were still stored (opaque) and will be restored.
    pub stored: bool,
}

/// The result of migrating one mailbox.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MigrationSummary {
    /// Mailbox id.
    pub mailbox: String,
    /// Pass number written (1 for the first migration).
    pub pass: u32,
    /// The source, as given.
    pub source: String,
    /// The destination, as the store describes itself.
    pub destination: String,
    /// Regular files.
    pub files: u64,
    /// Messages.
    pub messages: u64,
    /// Bytes of all regular files.
    pub source_bytes: u64,
    /// Bytes stored in the destination by this pass.
    pub new_stored_bytes: u64,
    /// Number of quarantined items.
    pub quarantined: u64,
    /// Wall-clock seconds.
    pub seconds: f64,
    /// True when the pass found nothing new to store (every blob already present).
    pub nothing_new: bool,
    /// True when this pass wrote a manifest (pass [`MigrationSummary::pass`] is new); false when nothing had
    /// changed since the previous pass, which stays the mailbox's current one.
    #[serde(default)]
    pub committed: bool,
    /// All counters.
    pub stats: PassStats,
    /// The quarantined items.
    pub quarantine: Vec<QuarantineItem>,
    /// Store requests this pass made (counted at the store interface: one per put, get, head, list or delete).
    pub requests: crate::store::RequestCounts,
}
