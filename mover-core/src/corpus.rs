//! Deterministic synthetic mail corpora, for tests and benchmarks.
//!
//! Real corpora cannot be shipped with every checkout, and a benchmark needs data whose shape is known: so this
//! module writes mail stores that look like the real ones in the ways that matter to the pipeline, and are the same
//! bytes for the same [`CorpusSpec`] on every machine.
//!
//! What is modelled (each point is something a real estate has and the pipeline must cope with):
//! - **Sizes**: median a few KiB with a long tail to tens of MiB (a split log-normal: σ≈0.55 below the median,
//!   σ≈1.9 above it), capped by [`CorpusSpec::max_message`].
//! - **Headers**: Received chains, DKIM/ARC signatures folded over many lines, now and then one very long unfolded
//!   line, To/Cc lists of up to dozens of addresses, Message-ID, In-Reply-To/References.
//! - **Deliveries**: the same message delivered to several mailboxes (or filed in two folders of one) has the same
//!   body under different headers (`Delivered-To`, the last `Received`, `X-Folder`).
//! - **Re-sent attachments**: a reply re-attaches an earlier attachment: the same decoded bytes, base64-wrapped at
//!   72 instead of 76 columns, under another boundary and other part headers.
//! - **Already-compressed data**: `image/jpeg` and `application/zip` attachments are random bytes.
//! - **Stores**: Maildir++ (`cur/new/tmp`, `:2,FLAGS` names with `S=` sizes, a `.Sent` and `.Archive` folder,
//!   `dovecot-uidlist`, `subscriptions`) and mboxo (From_ lines with asctime dates, `>From ` escaping, a blank
//!   line between messages, `Status:` headers), with LF or CRLF line endings.
//!
//! Randomness is a [splitmix64](https://prng.di.unimi.it/splitmix64.c) generator of our own, so the output does not
//! change when a dependency does.
//!
//! ```
//! use mover_core::corpus::{CorpusFormat, CorpusSpec, generate};
//! let dir = tempfile::tempdir().unwrap();
//! let mut spec = CorpusSpec::new(7);
//! spec.mailboxes = 2;
//! spec.messages_per_mailbox = 20;
//! spec.format = CorpusFormat::Mbox;
//! spec.max_message = 256 << 10;
//! spec.refile_fraction = 0.0; // no copies re-filed into a second folder: exactly 20 messages per mailbox
//! let stats = generate(&spec, dir.path()).unwrap();
//! assert_eq!(stats.messages, 40);
//! assert_eq!(stats.mailboxes.len(), 2);
//! ```

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde::{Deserialize, Serialize};

/// Which store formats to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CorpusFormat {
    /// Maildir++ trees under `maildir/<mailbox>/`.
    Maildir,
    /// Directories of mbox folder files under `mbox/<mailbox>/`.
    Mbox,
    /// Both, with the same messages.
    Both,
}

impl std::str::FromStr for CorpusFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "maildir" => Ok(CorpusFormat::Maildir),
            "mbox" => Ok(CorpusFormat::Mbox),
            "both" => Ok(CorpusFormat::Both),
            _ => Err(format!("unknown corpus format {s:?} (maildir, mbox or both)")),
        }
    }
}

/// What to generate. [`CorpusSpec::new`] gives realistic defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CorpusSpec {
    /// Seed: the same spec writes the same bytes.
    pub seed: u64,
    /// Number of mailboxes.
    pub mailboxes: usize,
    /// Messages delivered to each mailbox (copies filed in a second folder come on top).
    pub messages_per_mailbox: usize,
    /// Store formats.
    pub format: CorpusFormat,
    /// CRLF line endings instead of LF.
    pub crlf: bool,
    /// Median message size in bytes (before CRLF conversion).
    pub median_message: usize,
    /// No message is larger than this (roughly: headers may add a few KiB to a capped body).
    pub max_message: usize,
    /// Fraction of deliveries that are copies of a message other mailboxes also received.
    pub shared_fraction: f64,
    /// Fraction of messages that are replies re-sending an earlier attachment.
    pub resend_fraction: f64,
    /// Fraction of messages also filed into the `Archive` folder with a different `X-Folder` header.
    pub refile_fraction: f64,
}

impl CorpusSpec {
    /// Defaults: 4 mailboxes of 250 messages, Maildir, LF, median 4 KiB, at most 16 MiB per message.
    pub fn new(seed: u64) -> Self {
        CorpusSpec {
            seed,
            mailboxes: 4,
            messages_per_mailbox: 250,
            format: CorpusFormat::Maildir,
            crlf: false,
            median_message: 4 << 10,
            max_message: 16 << 20,
            shared_fraction: 0.3,
            resend_fraction: 0.08,
            refile_fraction: 0.03,
        }
    }
}

/// One mailbox written by [`generate`]: migrate `path` as mailbox `name`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CorpusMailbox {
    /// A mailbox id, unique within the corpus (`user003`, or `user003-mbox` when both formats are written).
    pub name: String,
    /// The mailbox's root: a Maildir++ root or a directory of mbox files.
    pub path: PathBuf,
    /// `Maildir` or `Mbox`.
    pub format: CorpusFormat,
    /// Messages in the mailbox.
    pub messages: u64,
    /// Bytes of all its files.
    pub bytes: u64,
}

/// What [`generate`] wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CorpusStats {
    /// The mailboxes, in order.
    pub mailboxes: Vec<CorpusMailbox>,
    /// Messages over all mailboxes and formats.
    pub messages: u64,
    /// Regular files written.
    pub files: u64,
    /// Bytes of all files written.
    pub bytes: u64,
    /// Median size of the messages (as written, in the first format).
    pub median_message: u64,
    /// 99th percentile message size.
    pub p99_message: u64,
    /// Largest message.
    pub largest_message: u64,
}

// ---------------------------------------------------------------------------------------------------------------
// Randomness.

/// splitmix64: tiny, fast, and good enough for test data (not for anything secret).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// An independent generator derived from this seed and a tag (so adding draws in one place does not shift the
    /// sequence elsewhere).
    pub fn derive(seed: u64, tag: u64) -> Self {
        let mut r = Rng(seed ^ tag.wrapping_mul(0xD1B5_4A32_D192_ED03));
        r.next_u64();
        r
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        ((self.next_u64() as u128 * n as u128) >> 64) as usize
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(hi - lo + 1)
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    /// A standard normal draw (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = self.unit().max(1e-300);
        let u2 = self.unit();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    /// One element of a non-empty slice.
    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }

    /// Append `n` random bytes.
    pub fn fill(&mut self, out: &mut Vec<u8>, n: usize) {
        out.reserve(n);
        let mut left = n;
        while left >= 8 {
            out.extend_from_slice(&self.next_u64().to_le_bytes());
            left -= 8;
        }
        out.extend_from_slice(&self.next_u64().to_le_bytes()[..left]);
    }

    /// `n` lowercase hex digits.
    fn hex(&mut self, n: usize) -> String {
        const H: &[u8; 16] = b"0123456789abcdef";
        (0..n).map(|_| H[self.below(16)] as char).collect()
    }

    /// `n` base64 alphabet characters (for signatures and ids).
    fn b64(&mut self, n: usize) -> String {
        const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        (0..n).map(|_| A[self.below(64)] as char).collect()
    }
}

/// Messages are dated from here on (2019-01-01), over about five years.
const CORPUS_EPOCH: i64 = 1_546_300_800;

/// A size drawn from the split log-normal: `median · e^(σ·z)`, σ 0.55 below the median and 1.9 above it.
pub fn draw_size(rng: &mut Rng, median: usize, max: usize) -> usize {
    let z = rng.normal();
    let sigma = if z < 0.0 { 0.55 } else { 1.9 };
    let s = median as f64 * (sigma * z).exp();
    (s as usize).clamp(256, max.max(256))
}

// ---------------------------------------------------------------------------------------------------------------
// Dates.

/// Days since 1970-01-01 → (year, month, day) (H. Hinnant's civil_from_days).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

struct Civil {
    wday: &'static str,
    mon: &'static str,
    year: i64,
    day: u32,
    h: i64,
    m: i64,
    s: i64,
}

fn civil_time(t: i64) -> Civil {
    let days = t.div_euclid(86_400);
    let secs = t.rem_euclid(86_400);
    let (year, month, day) = civil(days);
    Civil {
        wday: DAYS[days.rem_euclid(7) as usize],
        mon: MONTHS[month as usize - 1],
        year,
        day,
        h: secs / 3600,
        m: secs / 60 % 60,
        s: secs % 60,
    }
}

/// RFC 5322 date: `Tue, 05 Mar 2024 12:34:56 +0000`.
pub fn rfc5322_date(t: i64) -> String {
    let c = civil_time(t);
    format!("{}, {:02} {} {} {:02}:{:02}:{:02} +0000", c.wday, c.day, c.mon, c.year, c.h, c.m, c.s)
}

/// asctime date as in mbox From_ lines: `Tue Mar  5 12:34:56 2024`.
pub fn asctime(t: i64) -> String {
    let c = civil_time(t);
    format!("{} {} {:>2} {:02}:{:02}:{:02} {}", c.wday, c.mon, c.day, c.h, c.m, c.s, c.year)
}

// ---------------------------------------------------------------------------------------------------------------
// The messages.

#[rustfmt::skip]
const WORDS: &[&str] = &[
    "the", "of", "and", "to", "a", "in", "is", "that", "for", "it", "with", "as", "was", "on", "be", "at", "by",
    "this", "we", "you", "not", "are", "or", "from", "have", "but", "which", "one", "they", "all", "would", "there",
    "their", "will", "when", "can", "if", "about", "so", "no", "time", "could", "them", "some", "than", "then",
    "meeting", "report", "schedule", "patient", "clinic", "ward", "rota", "budget", "quarter", "contract", "review",
    "attached", "please", "thanks", "regards", "update", "server", "firmware", "driver", "sample", "rate", "buffer",
    "overflow", "stream", "device", "antenna", "board", "version", "release", "issue", "fix", "build", "kernel",
    "gas", "pipeline", "trading", "desk", "deal", "price", "capacity", "forecast", "storage", "transfer", "migration",
    "Monday", "Tuesday", "Friday", "tomorrow", "agenda", "minutes", "draft", "final", "comments", "approval",
];
const UTF8_WORDS: &[&str] = &["café", "Grüße", "naïve", "São", "Zürich", "résumé", "Ångström", "€100"];
#[rustfmt::skip]
const FIRST: &[&str] = &[
    "Alice", "Bob", "Carol", "Dave", "Erin", "Frank", "Grace", "Heidi", "Ivan", "Judy", "Mallory", "Niaj", "Olivia",
    "Peggy", "Rupert", "Sybil", "Trent", "Uma", "Victor", "Walter", "Xavier", "Yara", "Zoë", "Siobhán",
];
#[rustfmt::skip]
const LAST: &[&str] = &[
    "Smith", "Jones", "Taylor", "Brown", "Williams", "Wilson", "Johnson", "Davies", "Patel", "Wright", "Walker",
    "O'Brien", "Nakamura", "García", "Kowalski", "Nguyen", "Okafor", "Müller",
];
const DOMAINS: &[&str] =
    &["corp.example", "nhs.example", "lists.example.org", "partner.example.net", "mail.example.com"];
const MAILERS: &[&str] = &[
    "Microsoft Outlook 16.0",
    "Mozilla Thunderbird 115.3.1",
    "Apple Mail (2.3731.700.6)",
    "Mutt/2.2.9 (2022-11-12)",
    "Roundcube Webmail/1.6.5",
];

#[derive(Debug, Clone)]
struct Person {
    name: String,
    addr: String,
}

impl Person {
    fn mailbox(&self) -> String {
        if self.name.is_ascii() {
            format!("\"{}\" <{}>", self.name, self.addr)
        } else {
            format!("=?UTF-8?B?{}?= <{}>", base64::engine::general_purpose::STANDARD.encode(&self.name), self.addr)
        }
    }
}

fn person(rng: &mut Rng, user: Option<usize>) -> Person {
    let first = rng.pick(FIRST);
    let last = rng.pick(LAST);
    let local: String =
        format!("{}.{}", first, last).chars().filter(|c| c.is_ascii_alphanumeric() || *c == '.').collect();
    let addr = match user {
        Some(i) => format!("user{i:03}@corp.example"),
        None => format!("{}{}@{}", local.to_ascii_lowercase(), rng.below(100), rng.pick(DOMAINS)),
    };
    Person { name: format!("{first} {last}"), addr }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AttKind {
    /// A text log (compresses well).
    Log,
    /// Random bytes labelled image/jpeg.
    Jpeg,
    /// Random bytes labelled application/zip.
    Zip,
    /// Half text, half random (like a PDF with compressed streams).
    Pdf,
}

#[derive(Debug, Clone)]
struct Attachment {
    seed: u64,
    kind: AttKind,
    size: usize,
    name: String,
}

impl Attachment {
    fn content_type(&self) -> &'static str {
        match self.kind {
            AttKind::Log => "text/plain; charset=us-ascii",
            AttKind::Jpeg => "image/jpeg",
            AttKind::Zip => "application/zip",
            AttKind::Pdf => "application/pdf",
        }
    }

    /// The decoded bytes: a function of the seed, kind and size only, so re-sends are identical.
    fn bytes(&self) -> Vec<u8> {
        let mut rng = Rng::derive(self.seed, 0xA77);
        let mut out = Vec::with_capacity(self.size + 128);
        match self.kind {
            AttKind::Jpeg => {
                out.extend_from_slice(b"\xFF\xD8\xFF\xE0\x00\x10JFIF\x00");
                let n = self.size.saturating_sub(out.len());
                rng.fill(&mut out, n);
            }
            AttKind::Zip => {
                out.extend_from_slice(b"PK\x03\x04");
                let n = self.size.saturating_sub(out.len());
                rng.fill(&mut out, n);
            }
            AttKind::Log => log_text(&mut rng, &mut out, self.size),
            AttKind::Pdf => {
                out.extend_from_slice(b"%PDF-1.7\n");
                while out.len() < self.size {
                    let n = rng.range(200, 2000);
                    out.extend_from_slice(
                        format!("{} 0 obj\n<< /Length {n} /Filter /FlateDecode >>\nstream\n", out.len()).as_bytes(),
                    );
                    rng.fill(&mut out, n);
                    out.extend_from_slice(b"\nendstream\nendobj\n");
                    let n = rng.range(100, 1500);
                    words(&mut rng, &mut out, n, false);
                    out.push(b'\n');
                }
            }
        }
        out.truncate(self.size);
        out
    }
}

fn log_text(rng: &mut Rng, out: &mut Vec<u8>, size: usize) {
    const LEVELS: &[&str] = &["INFO", "INFO", "INFO", "DEBUG", "WARN", "ERROR"];
    const MSGS: &[&str] = &[
        "rx_streamer: overflow detected, dropping samples",
        "tx_streamer: underflow, sent late packet",
        "device: tuned to frequency",
        "link: retrying connection to host",
        "fpga: image loaded, compat number 38.0",
        "dsp: buffer high-water mark reached",
    ];
    let mut t = 1_700_000_000i64 + rng.below(10_000_000) as i64;
    while out.len() < size {
        t += rng.below(3) as i64;
        let c = civil_time(t);
        let line = format!(
            "{}-{:02}-{:02} {:02}:{:02}:{:02}.{:03} [{}] {} count={} chan={}\n",
            c.year,
            MONTHS.iter().position(|m| *m == c.mon).unwrap_or(0) + 1,
            c.day,
            c.h,
            c.m,
            c.s,
            rng.below(1000),
            rng.pick(LEVELS),
            rng.pick(MSGS),
            rng.below(100_000),
            rng.below(4)
        );
        out.extend_from_slice(line.as_bytes());
    }
}

/// Append about `n` bytes of wrapped prose. Paragraphs sometimes start with "From " (which mboxo must escape);
/// `utf8` mixes in non-ASCII words.
fn words(rng: &mut Rng, out: &mut Vec<u8>, n: usize, utf8: bool) {
    let start = out.len();
    let mut col = 0;
    let mut new_para = true;
    while out.len() - start < n {
        let w: &str = if new_para && rng.chance(0.06) {
            "From"
        } else if utf8 && rng.chance(0.03) {
            rng.pick(UTF8_WORDS)
        } else {
            rng.pick(WORDS)
        };
        new_para = false;
        if col > 0 && col + w.len() > 72 {
            out.push(b'\n');
            col = 0;
            if rng.chance(0.12) {
                out.push(b'\n');
                new_para = true;
            }
        } else if col > 0 {
            out.push(b' ');
            col += 1;
        }
        out.extend_from_slice(w.as_bytes());
        col += w.len();
    }
    out.push(b'\n');
}

fn base64_wrapped(data: &[u8], width: usize) -> Vec<u8> {
    let enc = base64::engine::general_purpose::STANDARD.encode(data);
    let mut out = Vec::with_capacity(enc.len() + enc.len() / width + 2);
    for line in enc.as_bytes().chunks(width) {
        out.extend_from_slice(line);
        out.push(b'\n');
    }
    out
}

/// Quoted-printable of LF text (soft line breaks at 76).
fn quoted_printable(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() + text.len() / 8);
    let mut col = 0;
    for &b in text {
        if b == b'\n' {
            out.push(b'\n');
            col = 0;
            continue;
        }
        let enc = !(b == b' ' || b.is_ascii_graphic()) || b == b'=';
        let w = if enc { 3 } else { 1 };
        if col + w > 75 {
            out.extend_from_slice(b"=\n");
            col = 0;
        }
        if enc {
            out.extend_from_slice(format!("={b:02X}").as_bytes());
        } else {
            out.push(b);
        }
        col += w;
    }
    out
}

/// A message as sent (everything except the per-delivery headers).
#[derive(Debug, Clone)]
struct Logical {
    seed: u64,
    from: Person,
    to: Vec<Person>,
    cc: Vec<Person>,
    subject: String,
    date: i64,
    message_id: String,
    in_reply_to: Option<String>,
    target: usize,
    attachment: Option<Attachment>,
    /// base64 line width of the attachment: 76 normally, 72 in re-sends.
    wrap: usize,
    dkim: bool,
    mailer: &'static str,
}

/// The upstream part of the header block, identical for every delivery of the message.
fn sent_headers(m: &Logical, rng: &mut Rng) -> Vec<u8> {
    let mut h = String::with_capacity(2048);
    let hops = rng.range(1, 4);
    for i in 0..hops {
        h.push_str(&format!(
            "Received: from mail{}.{} (mail{}.{} [192.0.2.{}])\n\tby relay{}.corp.example (Postfix) with ESMTPS id {}\n\tfor <{}>; {}\n",
            i,
            m.from.addr.rsplit('@').next().unwrap_or("example.com"),
            i,
            m.from.addr.rsplit('@').next().unwrap_or("example.com"),
            rng.below(250) + 1,
            rng.below(9),
            rng.hex(10).to_ascii_uppercase(),
            m.to.first().map(|p| p.addr.as_str()).unwrap_or("undisclosed"),
            rfc5322_date(m.date + (hops - i) as i64)
        ));
    }
    if m.dkim {
        for name in ["ARC-Seal: i=1; a=rsa-sha256; t=", "DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; t="] {
            h.push_str(&format!(
                "{name}{}; d={}; s=sel{};\n\th=From:To:Cc:Subject:Date:Message-ID:In-Reply-To:References:MIME-Version:Content-Type;\n\tbh={}=;\n\tb=",
                m.date,
                m.from.addr.rsplit('@').next().unwrap_or("example.com"),
                rng.below(3),
                rng.b64(43)
            ));
            let sig = rng.b64(344);
            for (i, chunk) in sig.as_bytes().chunks(70).enumerate() {
                if i > 0 {
                    h.push_str("\n\t ");
                }
                h.push_str(std::str::from_utf8(chunk).expect("ascii"));
            }
            h.push('\n');
        }
    }
    if rng.chance(0.15) {
        // One very long unfolded line, as some gateways write.
        h.push_str("X-Forefront-Antispam-Report: CIP:255.255.255.255;CTRY:;LANG:en;SCL:1;SRV:;IPV:NLI;SFV:NSPM;");
        h.push_str(&format!("H:{};PTR:;CAT:NONE;SFS:", rng.pick(DOMAINS)));
        for _ in 0..rng.range(20, 60) {
            h.push_str(&format!("({}{}),", rng.below(10_000_000), rng.hex(4)));
        }
        h.push_str("DIR:INB;\n");
    }
    h.push_str(&format!("From: {}\n", m.from.mailbox()));
    let list = |people: &[Person]| people.iter().map(Person::mailbox).collect::<Vec<_>>().join(",\n\t");
    h.push_str(&format!("To: {}\n", list(&m.to)));
    if !m.cc.is_empty() {
        h.push_str(&format!("Cc: {}\n", list(&m.cc)));
    }
    h.push_str(&format!("Subject: {}\n", m.subject));
    h.push_str(&format!("Date: {}\n", rfc5322_date(m.date)));
    h.push_str(&format!("Message-ID: <{}>\n", m.message_id));
    if let Some(parent) = &m.in_reply_to {
        h.push_str(&format!("In-Reply-To: <{parent}>\nReferences: <{parent}>\n"));
    }
    h.push_str(&format!("X-Mailer: {}\nMIME-Version: 1.0\n", m.mailer));
    h.into_bytes()
}

/// The body (and its Content-Type header lines, which go at the end of the header block).
fn body(m: &Logical, header_len: usize) -> (Vec<u8>, Vec<u8>) {
    let mut rng = Rng::derive(m.seed, 0xB0D7);
    let utf8 = rng.chance(0.2);
    let charset = if utf8 { "utf-8" } else { "us-ascii" };
    let mut ct = Vec::new();
    let mut out = Vec::new();
    let quote = |rng: &mut Rng, out: &mut Vec<u8>| {
        if m.in_reply_to.is_some() {
            out.extend_from_slice(format!("\nOn {} someone wrote:\n", rfc5322_date(m.date - 3600)).as_bytes());
            let mut q = Vec::new();
            let n = rng.range(100, 600);
            words(rng, &mut q, n, false);
            for line in q.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
                out.extend_from_slice(b"> ");
                out.extend_from_slice(line);
                out.push(b'\n');
            }
        }
    };
    match &m.attachment {
        None => {
            let text_len = m.target.saturating_sub(header_len + 80).max(60);
            if rng.chance(0.3) {
                // multipart/alternative: text and a quoted-printable HTML rendering of about the same size.
                let boundary = format!("----=_Part_{}_{}", rng.below(1_000_000), rng.hex(12));
                ct.extend_from_slice(
                    format!("Content-Type: multipart/alternative;\n\tboundary=\"{boundary}\"\n").as_bytes(),
                );
                let mut text = Vec::new();
                words(&mut rng, &mut text, text_len * 2 / 5, utf8);
                quote(&mut rng, &mut text);
                let mut html = b"<html><head><meta charset=\"utf-8\"></head><body><p>".to_vec();
                html.extend(text.iter().flat_map(|&b| if b == b'\n' { b"<br>\n".to_vec() } else { vec![b] }));
                html.extend_from_slice(b"</p></body></html>\n");
                out.extend_from_slice(
                    format!(
                        "This is a multi-part message in MIME format.\n\n--{boundary}\nContent-Type: text/plain; charset={charset}\nContent-Transfer-Encoding: {}\n\n",
                        if utf8 { "8bit" } else { "7bit" }
                    )
                    .as_bytes(),
                );
                out.extend_from_slice(&text);
                out.extend_from_slice(
                    format!("\n--{boundary}\nContent-Type: text/html; charset=utf-8\nContent-Transfer-Encoding: quoted-printable\n\n")
                        .as_bytes(),
                );
                out.extend_from_slice(&quoted_printable(&html));
                out.extend_from_slice(format!("\n--{boundary}--\n").as_bytes());
            } else {
                ct.extend_from_slice(
                    format!(
                        "Content-Type: text/plain; charset={charset}; format=flowed\nContent-Transfer-Encoding: {}\n",
                        if utf8 { "8bit" } else { "7bit" }
                    )
                    .as_bytes(),
                );
                words(&mut rng, &mut out, text_len, utf8);
                quote(&mut rng, &mut out);
            }
        }
        Some(att) => {
            // Re-sends differ in boundary, part headers and wrapping; the decoded bytes are the same.
            let boundary = if m.wrap == 76 {
                format!("_004_{}_", rng.hex(24).to_ascii_uppercase())
            } else {
                format!("Apple-Mail={}", rng.hex(16))
            };
            ct.extend_from_slice(format!("Content-Type: multipart/mixed; boundary=\"{boundary}\"\n").as_bytes());
            out.extend_from_slice(
                format!(
                    "--{boundary}\nContent-Type: text/plain; charset={charset}\nContent-Transfer-Encoding: 8bit\n\n"
                )
                .as_bytes(),
            );
            let n = rng.range(150, 1500);
            words(&mut rng, &mut out, n, utf8);
            quote(&mut rng, &mut out);
            out.extend_from_slice(format!("\n--{boundary}\n").as_bytes());
            let head = if m.wrap == 76 {
                format!(
                    "Content-Type: {}; name=\"{}\"\nContent-Description: {}\nContent-Disposition: attachment; filename=\"{}\"; size={}\nContent-Transfer-Encoding: base64\n\n",
                    att.content_type(),
                    att.name,
                    att.name,
                    att.name,
                    att.size
                )
            } else {
                format!(
                    "Content-Disposition: attachment;\n\tfilename={}\nContent-Type: {};\n\tx-unix-mode=0644;\n\tname=\"{}\"\nContent-Transfer-Encoding: base64\n\n",
                    att.name,
                    att.content_type(),
                    att.name
                )
            };
            out.extend_from_slice(head.as_bytes());
            out.extend_from_slice(&base64_wrapped(&att.bytes(), m.wrap));
            out.extend_from_slice(format!("\n--{boundary}--\n").as_bytes());
        }
    }
    (ct, out)
}

/// One delivery of `m` into `owner`'s `folder`: the full message bytes (LF).
fn delivery(m: &Logical, owner: &Person, folder: &str, copy: u64) -> Vec<u8> {
    let mut rng = Rng::derive(m.seed, 0xDE1 ^ copy.wrapping_mul(0x1F3));
    let mut out = Vec::with_capacity(m.target + 4096);
    out.extend_from_slice(format!("Return-Path: <{}>\nDelivered-To: {}\n", m.from.addr, owner.addr).as_bytes());
    out.extend_from_slice(
        format!(
            "Received: from relay{}.corp.example ([10.0.{}.{}])\n\tby imap.corp.example with LMTP\n\tid {}\n\t(envelope-from <{}>)\n\tfor <{}>; {}\n",
            rng.below(9),
            rng.below(255),
            rng.below(255),
            rng.b64(22).replace(['+', '/'], "x"),
            m.from.addr,
            owner.addr,
            rfc5322_date(m.date + 5 + rng.below(60) as i64)
        )
        .as_bytes(),
    );
    if folder != "INBOX" {
        out.extend_from_slice(format!("X-Folder: {folder}\n").as_bytes());
    }
    let mut srng = Rng::derive(m.seed, 0x5E7);
    out.extend_from_slice(&sent_headers(m, &mut srng));
    let (ct, body) = body(m, out.len() + 100);
    out.extend_from_slice(&ct);
    out.push(b'\n');
    out.extend_from_slice(&body);
    out
}

fn to_crlf(lf: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(lf.len() + lf.len() / 30);
    for line in lf.split_inclusive(|&b| b == b'\n') {
        match line.strip_suffix(b"\n") {
            Some(l) => {
                out.extend_from_slice(l);
                out.extend_from_slice(b"\r\n");
            }
            None => out.extend_from_slice(line),
        }
    }
    out
}

/// mboxo escaping: a line starting with `From ` becomes `>From ` (quoted `>From ` lines stay as they are, which
/// is what makes mboxo lossy and why the pipeline never unescapes).
fn mboxo_escape(msg: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(msg.len() + 16);
    for line in msg.split_inclusive(|&b| b == b'\n') {
        if line.starts_with(b"From ") {
            out.push(b'>');
        }
        out.extend_from_slice(line);
    }
    out
}

// ---------------------------------------------------------------------------------------------------------------
// Writing the stores.

struct Filed {
    folder: &'static str,
    msg: Vec<u8>,
    date: i64,
    flags: &'static str,
    from_addr: String,
}

/// The messages of mailbox `i`, in delivery order.
fn mailbox_messages(spec: &CorpusSpec, i: usize, pool: &[Logical], sizes: &mut Vec<u64>) -> Vec<Filed> {
    let mut rng = Rng::derive(spec.seed, 0x3A1B ^ ((i as u64) << 20));
    let owner = Person { name: format!("User {i:03}"), addr: format!("user{i:03}@corp.example") };
    let with_attachments: Vec<usize> = (0..pool.len()).filter(|&k| pool[k].attachment.is_some()).collect();
    let mut out = Vec::with_capacity(spec.messages_per_mailbox);
    for j in 0..spec.messages_per_mailbox {
        let seed = rng.next_u64();
        let m = if !pool.is_empty() && rng.chance(spec.shared_fraction) {
            pool[rng.below(pool.len())].clone()
        } else {
            let mut m = logical(spec, seed, &mut rng, Some(i));
            if !with_attachments.is_empty() && rng.chance(spec.resend_fraction) {
                // A reply re-sending an earlier attachment, wrapped differently.
                let parent = &pool[rng.pick(&with_attachments)];
                m.in_reply_to = Some(parent.message_id.clone());
                m.subject = format!("RE: {}", parent.subject);
                m.attachment = parent.attachment.clone();
                m.wrap = if parent.wrap == 76 { 72 } else { 76 };
            }
            m
        };
        let sent = m.from.addr == owner.addr;
        let folder = if sent { "Sent" } else { "INBOX" };
        let flags: &'static str = rng.pick(&["S", "S", "S", "RS", "FS", "S", "", "ST", "FRS"]);
        let msg = delivery(&m, &owner, folder, ((i as u64) << 32) | j as u64);
        sizes.push(msg.len() as u64);
        if rng.chance(spec.refile_fraction) {
            // The same message filed again into another folder: same body, an extra X-Folder header.
            let copy = delivery(&m, &owner, "Archive", ((i as u64) << 32) | j as u64);
            out.push(Filed { folder: "Archive", msg: copy, date: m.date, flags: "S", from_addr: m.from.addr.clone() });
        }
        out.push(Filed { folder, msg, date: m.date, flags, from_addr: m.from.addr.clone() });
    }
    out
}

fn logical(spec: &CorpusSpec, seed: u64, rng: &mut Rng, sender: Option<usize>) -> Logical {
    let mut r = Rng::derive(seed, 0x10C);
    let user = |r: &mut Rng| r.below(spec.mailboxes.max(1));
    // A fifth of each mailbox's new mail is its owner's own (filed in Sent).
    let from = match sender {
        Some(s) if r.chance(0.2) => person(&mut r, Some(s)),
        _ if r.chance(0.4) => {
            let u = user(&mut r);
            person(&mut r, Some(u))
        }
        _ => person(&mut r, None),
    };
    let n_to = if r.chance(0.8) { r.range(1, 3) } else { r.range(4, 40) };
    let mut to: Vec<Person> = (0..n_to)
        .map(|_| {
            let u = r.chance(0.5).then(|| user(&mut r));
            person(&mut r, u)
        })
        .collect();
    if let Some(s) = sender {
        to.insert(0, person(&mut r, Some(s)));
    }
    let cc = if r.chance(0.3) { (0..r.range(1, 25)).map(|_| person(&mut r, None)).collect() } else { Vec::new() };
    let target = draw_size(&mut r, spec.median_message, spec.max_message);
    let attachment = (target > 24 << 10).then(|| {
        let kind = r.pick(&[AttKind::Log, AttKind::Jpeg, AttKind::Zip, AttKind::Pdf, AttKind::Jpeg]);
        let ext = match kind {
            AttKind::Log => "log",
            AttKind::Jpeg => "jpg",
            AttKind::Zip => "zip",
            AttKind::Pdf => "pdf",
        };
        Attachment {
            seed: r.next_u64(),
            kind,
            // base64 and 76-column lines: 4/3 · 77/76 of the decoded size.
            size: (target.saturating_sub(3000) as f64 * 0.74) as usize,
            name: format!("{}-{}.{ext}", rng.pick(WORDS), r.below(10_000)),
        }
    });
    let mut subject = String::new();
    for k in 0..r.range(2, 8) {
        if k > 0 {
            subject.push(' ');
        }
        subject.push_str(r.pick(WORDS));
    }
    Logical {
        seed,
        from,
        to,
        cc,
        subject,
        date: CORPUS_EPOCH + (seed % 160_000_000) as i64,
        message_id: format!("{}.{}@{}", r.hex(16), r.below(1_000_000), r.pick(DOMAINS)),
        in_reply_to: None,
        target,
        attachment,
        wrap: 76,
        dkim: r.chance(0.6),
        mailer: r.pick(MAILERS),
    }
}

/// Write a file and set its modification time to `mtime` (seconds since the epoch): mail stores are mostly old
/// files, and the pipeline treats a file that changed in the last seconds differently from a quiet one.
fn write_file(path: &Path, data: &[u8], mtime: i64, stats: &mut CorpusStats, mb: &mut CorpusMailbox) -> io::Result<()> {
    let f = fs::File::create(path)?;
    io::Write::write_all(&mut &f, data)?;
    f.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(mtime.max(0) as u64))?;
    stats.files += 1;
    stats.bytes += data.len() as u64;
    mb.bytes += data.len() as u64;
    Ok(())
}

fn write_maildir(
    spec: &CorpusSpec,
    root: &Path,
    msgs: &[Filed],
    stats: &mut CorpusStats,
    mb: &mut CorpusMailbox,
) -> io::Result<()> {
    let name_hash =
        mb.name.bytes().fold(0xCBF2_9CE4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01B3));
    let mut rng = Rng::derive(spec.seed, name_hash);
    for folder in ["INBOX", "Sent", "Archive"] {
        let dir = if folder == "INBOX" { root.to_path_buf() } else { root.join(format!(".{folder}")) };
        for sub in ["cur", "new", "tmp"] {
            fs::create_dir_all(dir.join(sub))?;
        }
        let mut uidlist = String::new();
        let mut uid = 0;
        let mut latest = CORPUS_EPOCH;
        for (q, f) in msgs.iter().enumerate().filter(|(_, f)| f.folder == folder) {
            let data = if spec.crlf { to_crlf(&f.msg) } else { f.msg.clone() };
            let base = format!(
                "{}.M{}P{}Q{}.imap.corp.example,S={}",
                f.date,
                rng.below(1_000_000),
                rng.range(1000, 60_000),
                q,
                data.len()
            );
            let unseen = folder == "INBOX" && f.flags.is_empty() && rng.chance(0.5);
            let name = if unseen { base.clone() } else { format!("{base}:2,{}", f.flags) };
            let path = dir.join(if unseen { "new" } else { "cur" }).join(&name);
            write_file(&path, &data, f.date + 30, stats, mb)?;
            latest = latest.max(f.date + 30);
            uid += 1;
            uidlist.push_str(&format!("{uid} :{base}\n"));
            mb.messages += 1;
            stats.messages += 1;
        }
        let head = format!("3 V{} N{} G{}\n", 1_600_000_000 + rng.below(1000), uid + 1, rng.hex(32));
        write_file(&dir.join("dovecot-uidlist"), format!("{head}{uidlist}").as_bytes(), latest, stats, mb)?;
    }
    write_file(&root.join("subscriptions"), b"Sent\nArchive\n", CORPUS_EPOCH, stats, mb)?;
    Ok(())
}

fn write_mbox(
    spec: &CorpusSpec,
    root: &Path,
    msgs: &[Filed],
    stats: &mut CorpusStats,
    mb: &mut CorpusMailbox,
) -> io::Result<()> {
    fs::create_dir_all(root)?;
    for folder in ["INBOX", "Sent", "Archive"] {
        let mut file = Vec::new();
        let mut latest = CORPUS_EPOCH;
        for f in msgs.iter().filter(|f| f.folder == folder) {
            let mut msg = mboxo_escape(&f.msg);
            // Mail readers record flags in Status/X-Status at the end of the header block.
            if !f.flags.is_empty() {
                let he = crate::split::header_len(&msg);
                let status = if f.flags.contains('S') { "Status: RO\n" } else { "Status: O\n" };
                let mut extra = status.to_string();
                if f.flags.contains('R') {
                    extra.push_str("X-Status: A\n");
                }
                msg.splice(he - 1..he - 1, extra.into_bytes());
            }
            file.extend_from_slice(format!("From {} {}\n", f.from_addr, asctime(f.date)).as_bytes());
            latest = latest.max(f.date + 30);
            file.extend_from_slice(&msg);
            if !msg.ends_with(b"\n") {
                file.push(b'\n');
            }
            file.push(b'\n');
            mb.messages += 1;
            stats.messages += 1;
        }
        if spec.crlf {
            file = to_crlf(&file);
        }
        write_file(&root.join(folder), &file, latest, stats, mb)?;
    }
    Ok(())
}

/// Write the corpus described by `spec` under `dir` (created if missing): `maildir/<mailbox>/` and/or
/// `mbox/<mailbox>/`. The same spec always writes the same bytes.
pub fn generate(spec: &CorpusSpec, dir: &Path) -> io::Result<CorpusStats> {
    if spec.mailboxes == 0 || spec.median_message == 0 {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "a corpus needs at least one mailbox"));
    }
    // The shared pool: messages delivered to several mailboxes (and the attachments replies re-send).
    let total = spec.mailboxes * spec.messages_per_mailbox;
    let pool_len = ((total as f64 * spec.shared_fraction) / 3.0).ceil() as usize;
    let mut prng = Rng::derive(spec.seed, 0x9001);
    let pool: Vec<Logical> = (0..pool_len)
        .map(|_| {
            let seed = prng.next_u64();
            logical(spec, seed, &mut prng, None)
        })
        .collect();

    let mut stats = CorpusStats::default();
    let mut sizes = Vec::with_capacity(total);
    for i in 0..spec.mailboxes {
        let name = format!("user{i:03}");
        let msgs = mailbox_messages(spec, i, &pool, &mut sizes);
        if matches!(spec.format, CorpusFormat::Maildir | CorpusFormat::Both) {
            let mut mb = CorpusMailbox {
                name: name.clone(),
                path: dir.join("maildir").join(&name),
                format: CorpusFormat::Maildir,
                messages: 0,
                bytes: 0,
            };
            write_maildir(spec, &mb.path.clone(), &msgs, &mut stats, &mut mb)?;
            stats.mailboxes.push(mb);
        }
        if matches!(spec.format, CorpusFormat::Mbox | CorpusFormat::Both) {
            let mut mb = CorpusMailbox {
                name: if spec.format == CorpusFormat::Both { format!("{name}-mbox") } else { name.clone() },
                path: dir.join("mbox").join(&name),
                format: CorpusFormat::Mbox,
                messages: 0,
                bytes: 0,
            };
            write_mbox(spec, &mb.path.clone(), &msgs, &mut stats, &mut mb)?;
            stats.mailboxes.push(mb);
        }
    }
    sizes.sort_unstable();
    if !sizes.is_empty() {
        stats.median_message = sizes[sizes.len() / 2];
        stats.p99_message = sizes[(sizes.len() * 99 / 100).min(sizes.len() - 1)];
        stats.largest_message = *sizes.last().expect("not empty");
    }
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
        let mut out = Vec::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    stack.push(p);
                } else {
                    out.push((p.strip_prefix(dir).unwrap().to_path_buf(), fs::read(&p).unwrap()));
                }
            }
        }
        out.sort();
        out
    }

    fn small(seed: u64, format: CorpusFormat) -> CorpusSpec {
        let mut s = CorpusSpec::new(seed);
        s.mailboxes = 3;
        s.messages_per_mailbox = 40;
        s.format = format;
        s.max_message = 512 << 10;
        s
    }

    #[test]
    fn same_seed_same_bytes_other_seed_other_bytes() {
        let (a, b, c) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let sa = generate(&small(1, CorpusFormat::Both), a.path()).unwrap();
        let sb = generate(&small(1, CorpusFormat::Both), b.path()).unwrap();
        generate(&small(2, CorpusFormat::Both), c.path()).unwrap();
        assert_eq!(sa.bytes, sb.bytes);
        let ta = tree(a.path());
        assert!(ta.len() > 100, "{} files", ta.len());
        assert_eq!(ta, tree(b.path()));
        let tc = tree(c.path());
        // Only fixed files (subscriptions, empty folders) may coincide.
        let same = ta.iter().filter(|f| !f.1.is_empty() && !f.0.ends_with("subscriptions") && tc.contains(f)).count();
        assert_eq!(same, 0, "identical files across seeds");
    }

    #[test]
    fn median_and_tail() {
        let dir = tempfile::tempdir().unwrap();
        let mut spec = small(3, CorpusFormat::Mbox);
        spec.mailboxes = 4;
        spec.messages_per_mailbox = 500;
        spec.max_message = 2 << 20;
        let stats = generate(&spec, dir.path()).unwrap();
        let m = stats.median_message as f64 / spec.median_message as f64;
        assert!((0.8..1.25).contains(&m), "median {} for {}", stats.median_message, spec.median_message);
        assert!(stats.p99_message > 20 * stats.median_message, "p99 {}", stats.p99_message);
        assert!(stats.largest_message <= spec.max_message as u64 + (16 << 10), "largest {}", stats.largest_message);
        // Draws themselves: the split log-normal has the intended median.
        let mut rng = Rng::new(9);
        let mut d: Vec<usize> = (0..20_001).map(|_| draw_size(&mut rng, 4096, 64 << 20)).collect();
        d.sort_unstable();
        assert!((3900..4300).contains(&d[10_000]), "{}", d[10_000]);
        assert!(d[20_000] > 4 << 20, "tail reaches {}", d[20_000]);
    }

    #[test]
    fn stores_are_well_formed() {
        let dir = tempfile::tempdir().unwrap();
        let mut spec = small(4, CorpusFormat::Both);
        spec.crlf = true;
        let stats = generate(&spec, dir.path()).unwrap();
        let maildir = &stats.mailboxes[0];
        assert_eq!(maildir.format, CorpusFormat::Maildir);
        for p in ["cur", "new", "tmp", "dovecot-uidlist", ".Sent/cur", ".Sent/dovecot-uidlist", "subscriptions"] {
            assert!(maildir.path.join(p).exists(), "{p}");
        }
        let mut maildir_msgs = 0;
        for (path, data) in tree(&maildir.path) {
            let name = path.to_string_lossy();
            if name.contains("/cur/") || name.starts_with("cur/") {
                assert!(name.contains(":2,"), "{name}");
            }
            if name.contains(",S=") {
                maildir_msgs += 1;
                let size: usize = name.split(",S=").nth(1).unwrap().split(':').next().unwrap().parse().unwrap();
                assert_eq!(size, data.len(), "{name}");
                assert!(data.windows(2).all(|w| w[1] != b'\n' || w[0] == b'\r'), "bare LF in {name}");
                assert!(crate::split::header_len(&data) < data.len());
            }
        }
        assert_eq!(maildir_msgs, maildir.messages);
        let mbox = &stats.mailboxes[1];
        assert_eq!(mbox.format, CorpusFormat::Mbox);
        let (mut mbox_msgs, mut escaped) = (0, 0);
        for (_, data) in tree(&mbox.path) {
            for seg in crate::source::mbox::split_all(&data) {
                match seg {
                    crate::source::mbox::Seg::Message { trail_len, .. } => {
                        assert_eq!(trail_len, 2);
                        mbox_msgs += 1;
                    }
                    other => panic!("unexpected {other:?}"),
                }
            }
            escaped += data.windows(7).filter(|w| w == b"\n>From ").count();
        }
        assert_eq!(mbox_msgs, mbox.messages);
        assert!(escaped > 0, "no body line needed mboxo escaping");
        assert_eq!(maildir.messages, mbox.messages);
    }

    #[test]
    fn deliveries_share_bodies_and_resends_rewrap() {
        let dir = tempfile::tempdir().unwrap();
        let mut spec = small(5, CorpusFormat::Maildir);
        spec.messages_per_mailbox = 150;
        spec.resend_fraction = 0.3;
        let stats = generate(&spec, dir.path()).unwrap();
        let mut bodies = std::collections::HashMap::new();
        let mut wraps = [0usize; 2];
        for mb in &stats.mailboxes {
            for (_, data) in tree(&mb.path) {
                let he = crate::split::header_len(&data);
                if he < data.len() {
                    *bodies.entry(data[he..].to_vec()).or_insert(0usize) += 1;
                }
                let b64_line = |w: usize| {
                    data.split(|&b| b == b'\n')
                        .any(|l| l.len() == w && l.iter().all(|b| b.is_ascii_alphanumeric() || b"+/".contains(b)))
                };
                wraps[0] += usize::from(b64_line(76));
                wraps[1] += usize::from(b64_line(72));
            }
        }
        let repeated = bodies.values().filter(|&&n| n > 1).count();
        assert!(repeated > 10, "{repeated} bodies repeat");
        assert!(wraps[0] > 0 && wraps[1] > 0, "{wraps:?}");
    }

    #[test]
    fn migrates_and_restores_byte_for_byte() {
        let src = tempfile::tempdir().unwrap();
        let mut spec = small(6, CorpusFormat::Both);
        spec.messages_per_mailbox = 30;
        spec.mailboxes = 2;
        spec.crlf = true;
        let stats = generate(&spec, src.path()).unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(async {
            let store: crate::store::DynStore = std::sync::Arc::new(crate::store::MemoryStore::new());
            let mut stored = 0;
            for mb in &stats.mailboxes {
                let s =
                    crate::pipeline::migrate(&mb.path, store.clone(), crate::pipeline::MigrateOptions::new(&mb.name))
                        .await
                        .unwrap();
                assert_eq!(s.messages, mb.messages, "{}", mb.name);
                assert_eq!(s.quarantined, 0, "{:?}", s.quarantine);
                stored += s.new_stored_bytes;
            }
            // Shared deliveries and the second format dedupe: far less is stored than was read.
            assert!(stored < stats.bytes / 2, "stored {stored} of {}", stats.bytes);
            for mb in &stats.mailboxes {
                let out = tempfile::tempdir().unwrap();
                let to = out.path().join("r");
                let r = crate::restore::restore(store.clone(), &mb.name, &to, &Default::default()).await.unwrap();
                assert!(r.errors.is_empty(), "{:?}", r.errors);
                assert_eq!(tree(&to), tree(&mb.path), "{}", mb.name);
            }
        });
    }

    #[test]
    fn dates() {
        assert_eq!(rfc5322_date(0), "Thu, 01 Jan 1970 00:00:00 +0000");
        assert_eq!(asctime(1_650_291_803), "Mon Apr 18 14:23:23 2022");
        assert_eq!(asctime(1_709_600_000), "Tue Mar  5 00:53:20 2024");
        assert!(crate::source::mbox::is_from_line(format!("From a@b {}", asctime(1_709_600_000)).as_bytes(), true));
    }
}
