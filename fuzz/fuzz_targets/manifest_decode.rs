//! Decoding manifests and pack indexes from arbitrary bytes never panics; whatever decodes re-encodes to records
//! that decode to the same values.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use mover_core::id::PackId;
use mover_core::manifest::{Manifest, Record};

fuzz_target!(|data: &[u8]| {
    let _ = mover_core::pack::decode_index(PackId::from_bytes([7; 16]), data);
    let no_dict = |id: u32| Err(mover_core::Error::corrupt(format!("no dictionary {id}")));
    let _ = mover_core::pack::index_from_pack(PackId::from_bytes([7; 16]), data, &no_dict);
    let _ = mover_core::manifest::parse_header(data, "fuzz");
    if let Ok(m) = Manifest::parse(Bytes::copy_from_slice(data), "fuzz") {
        if let Ok(records) = m.records() {
            for r in records.take(10_000) {
                let Ok((rec, _)) = r else { break };
                let line = serde_json::to_vec(&rec).unwrap();
                let back: Record = serde_json::from_slice(&line).unwrap();
                assert_eq!(back, rec);
            }
        }
    }
    // Any single JSON line that decodes as a record round-trips.
    if let Ok(rec) = serde_json::from_slice::<Record>(data) {
        let back: Record = serde_json::from_slice(&serde_json::to_vec(&rec).unwrap()).unwrap();
        assert_eq!(back, rec);
    }
});
