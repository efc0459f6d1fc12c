//! MIME splitting is exact: the pieces of any input put back together are the input, and every part stored decoded
//! re-encodes to exactly the bytes it replaced (what restore relies on), with the default thresholds and with
//! every base64 and quoted-printable body decoded from one byte on.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mover_core::mime::{self, Piece};

fuzz_target!(|data: &[u8]| {
    for opts in [mime::Options::default(), mime::Options::all_from(1)] {
        let (pieces, _) = mime::split_with(data, &opts);
        assert_eq!(mime::reassemble(&pieces), data);
        let mut at = 0;
        for piece in &pieces {
            let len = piece.original_len();
            if let Piece::Encoded { decoded, recipe, .. } = piece {
                assert_eq!(mime::encode(decoded, recipe), &data[at..at + len]);
            }
            at += len;
        }
        assert_eq!(at, data.len());
    }
});
