//! An in-memory store: for tests, examples and embedding tools that want to look before they write.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Mutex;

use async_trait::async_trait;
use bytes::Bytes;

use super::{ObjectMeta, PutMode, PutOutcome, Store, validate_key};
use crate::error::{Error, ErrorKind, Result};

/// Objects held in a map in memory; nothing is durable.
#[derive(Debug, Default)]
pub struct MemoryStore {
    objects: Mutex<BTreeMap<String, Bytes>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

pub(super) fn slice_range(key: &str, data: &Bytes, range: Range<u64>) -> Result<Bytes> {
    let len = data.len() as u64;
    if range.start >= len || range.start > range.end {
        return Err(Error::new(
            ErrorKind::Corrupt,
            format!("range {}..{} is outside object {key} of {len} bytes", range.start, range.end),
        ));
    }
    Ok(data.slice(range.start as usize..range.end.min(len) as usize))
}

#[async_trait]
impl Store for MemoryStore {
    fn describe(&self) -> String {
        "memory".to_string()
    }

    async fn put(&self, key: &str, data: Bytes, mode: PutMode) -> Result<PutOutcome> {
        validate_key(key)?;
        let mut map = self.objects.lock().unwrap();
        if mode == PutMode::Create && map.contains_key(key) {
            return Ok(PutOutcome::AlreadyExists);
        }
        map.insert(key.to_string(), data);
        Ok(PutOutcome::Written)
    }

    async fn get(&self, key: &str) -> Result<Bytes> {
        self.objects
            .lock()
            .unwrap()
            .get(key)
            .cloned()
            .ok_or_else(|| Error::new(ErrorKind::NotFound, format!("object {key} not found in memory store")))
    }

    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes> {
        let data = self.get(key).await?;
        slice_range(key, &data, range)
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>> {
        Ok(self.objects.lock().unwrap().get(key).map(|d| ObjectMeta { key: key.to_string(), size: d.len() as u64 }))
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        let map = self.objects.lock().unwrap();
        Ok(map
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| ObjectMeta { key: k.clone(), size: v.len() as u64 })
            .collect())
    }

    async fn delete(&self, key: &str) -> Result<()> {
        self.objects.lock().unwrap().remove(key);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn conformance() {
        super::super::conformance::run_all(&MemoryStore::new()).await;
    }
}
