//! Maildir file names: `UNIQ[,S=size][,W=vsize]<sep>2,FLAGS`, where `<sep>` is `:` or, on file systems that forbid
//! colons, `!` (mutt, Windows tools) or `;` (some IMAP servers). The name is always kept verbatim; this is only read
//! into the manifest so tools can see flags without parsing names again.

use crate::manifest::MaildirInfo;

/// The subdirectories that hold messages.
pub const SUBDIRS: [&str; 3] = ["cur", "new", "tmp"];

/// Parse a Maildir message file name found in subdirectory `sub`.
pub fn parse_name(name: &[u8], sub: &str) -> MaildirInfo {
    let name = String::from_utf8_lossy(name);
    let mut info = MaildirInfo { sub: sub.to_string(), ..Default::default() };
    // The info suffix starts at the last separator followed by "2," (or the experimental "1,").
    let mut base: &str = &name;
    if let Some((i, sep)) = name.char_indices().rfind(|&(i, c)| {
        matches!(c, ':' | '!' | ';') && (name[i + 1..].starts_with("2,") || name[i + 1..].starts_with("1,"))
    }) {
        info.sep = Some(sep);
        info.flags = name[i + 3..].to_string();
        base = &name[..i];
    }
    let mut fields = base.split(',');
    info.uniq = fields.next().unwrap_or_default().to_string();
    for f in fields {
        if let Some(v) = f.strip_prefix("S=") {
            info.size = v.parse().ok();
        } else if let Some(v) = f.strip_prefix("W=") {
            info.vsize = v.parse().ok();
        }
    }
    info
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        let i = parse_name(b"1639054935.U006009.2767b5e1ee58:2,S", "cur");
        assert_eq!((i.uniq.as_str(), i.flags.as_str(), i.sep), ("1639054935.U006009.2767b5e1ee58", "S", Some(':')));
        let i = parse_name(b"1234567890.M20046P2137.mailserver,S=4542,W=4642;2,Sb", "new");
        assert_eq!((i.size, i.vsize, i.flags.as_str(), i.sep), (Some(4542), Some(4642), "Sb", Some(';')));
        let i = parse_name(b"1220863087.12663_15.mindcrime!2,PS", "cur");
        assert_eq!((i.uniq.as_str(), i.flags.as_str(), i.sep), ("1220863087.12663_15.mindcrime", "PS", Some('!')));
        let i = parse_name(b"1035478339.27041_118.foo.org,S=1000,W=1030;2,RDF,", "new");
        assert_eq!((i.flags.as_str(), i.size), ("RDF,", Some(1000)));
        let i = parse_name(b"1276528487.M364837P9451.kurkku,S=1355,W=1394;2,", "new");
        assert_eq!((i.flags.as_str(), i.size, i.vsize), ("", Some(1355), Some(1394)));
        let i = parse_name(b"plainname", "new");
        assert_eq!((i.uniq.as_str(), i.flags.as_str(), i.sep), ("plainname", "", None));
        let i = parse_name(b"a:b:2,ST", "cur");
        assert_eq!((i.uniq.as_str(), i.flags.as_str()), ("a:b", "ST"));
    }
}
