//! Attachments are stored decoded when they re-encode exactly: the same attachment wrapped differently in two
//! messages (line length, boundary, headers) is stored once; a non-canonical one is kept raw; both restore exactly.

use base64::Engine as _;

use crate::common::*;

fn b64_lines(data: &[u8], width: usize, eol: &str) -> String {
    let s = base64::engine::general_purpose::STANDARD.encode(data);
    s.as_bytes().chunks(width).map(|c| format!("{}{eol}", std::str::from_utf8(c).unwrap())).collect()
}

fn with_attachment(subject: &str, boundary: &str, body_b64: &str, eol: &str) -> Vec<u8> {
    format!(
        "From: a@example.org{eol}Subject: {subject}{eol}MIME-Version: 1.0{eol}Content-Type: multipart/mixed; boundary=\"{boundary}\"{eol}{eol}\
         preamble{eol}--{boundary}{eol}Content-Type: text/plain{eol}{eol}See attached.{eol}{eol}--{boundary}{eol}\
         Content-Type: application/pdf; name=\"report.pdf\"{eol}Content-Transfer-Encoding: base64{eol}{eol}{body_b64}--{boundary}--{eol}"
    )
    .into_bytes()
}

#[test]
fn same_attachment_wrapped_differently_is_stored_once() {
    let work = tempfile::tempdir().unwrap();
    let pdf = noise(99, 60_000); // incompressible: only deduplication can save it
    let src = work.path().join("m");
    // Two copies wrapped differently, and one with non-canonical base64 (a short line in the middle).
    let a = with_attachment("original", "AAA", &b64_lines(&pdf, 76, "\n"), "\n");
    let b = with_attachment("Fwd: original", "=_Part_42_xyz", &b64_lines(&pdf, 72, "\r\n"), "\r\n");
    let mut odd = b64_lines(&pdf, 76, "\n");
    odd.insert(152, '\n'); // breaks the third line early: re-encoding would differ
    let c = with_attachment("odd", "CCC", &odd, "\n");
    write_file(&src.join("cur/1.a:2,S"), &a, 1_600_000_000);
    write_file(&src.join("cur/2.b:2,S"), &b, 1_600_000_001);
    write_file(&src.join("cur/3.c:2,S"), &c, 1_600_000_002);
    std::fs::create_dir_all(src.join("new")).unwrap();
    let s = round_trip(&src, work.path(), "m", EXIT_OK);
    let st = &s["stats"];
    assert_eq!(st["mime"]["encoded_parts"], 2, "{st:#}");
    assert_eq!(st["attachments_deduplicated"], 1, "the forwarded copy found the first one: {st:#}");
    assert_eq!(st["mime"]["raw"]["b64_line_layout"], 1, "the odd one is kept raw: {st:#}");
    // One decoded copy stored (plus the raw odd one): well under three copies of the attachment.
    let stored = s["new_stored_bytes"].as_u64().unwrap();
    assert!(stored < 2 * 60_000 + 40_000, "stored {stored}");
    assert!(stored > 60_000 + 80_000 - 20_000, "the raw copy is still there: {stored}");
    let a_b = st["breakdown"]["attachments"].clone();
    assert_eq!(a_b["deduplicated_bytes"], 60_000, "{a_b}");
}

#[test]
fn tricky_corpus_messages_round_trip_with_mime_splitting() {
    let Some(root) = shared_corpora() else {
        eprintln!("SKIPPED tricky_corpus_messages_round_trip_with_mime_splitting: no ../shared/corpora");
        return;
    };
    // Every tricky message as a Maildir message, so the MIME walk runs on all of them.
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("tricky-maildir");
    let mut n = 0;
    let mut stack = vec![root.join("tricky")];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.is_file() {
                write_file(&src.join(format!("cur/{n}.tricky:2,S")), &std::fs::read(&p).unwrap(), 1_600_000_000 + n);
                n += 1;
            }
        }
    }
    std::fs::create_dir_all(src.join("new")).unwrap();
    let s = round_trip(&src, work.path(), "tricky", EXIT_OK);
    assert_eq!(s["messages"], n);
    eprintln!("tricky as Maildir: {n} messages, mime {}", s["stats"]["mime"]);
    assert!(s["stats"]["mime"]["encoded_parts"].as_u64().unwrap() > 50);
}
