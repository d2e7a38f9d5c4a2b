//! The modules protocol (`mica_device::modules`) over a [`ModuleStore`]: entries go out in
//! chunks by offset, and come in as chunks in order, written durably when the last one arrives.

use kvstore::disk::Disk;
use mica_device::modules::{MAX_CHUNK_BYTES, ModulesErrorCode, Request, Response};

use crate::store::{ModuleStore, StoreError};

/// An entry being received.
#[derive(Debug)]
struct Incoming {
    key: String,
    total: u64,
    data: Vec<u8>,
}

/// The service: the store, the entry being sent out, and the one coming in.
#[derive(Debug)]
pub struct Service<D: Disk> {
    store: ModuleStore<D>,
    /// The entry whose chunks are being asked for (read and checked once, at offset 0).
    outgoing: Option<(String, Vec<u8>)>,
    incoming: Option<Incoming>,
}

fn error(code: ModulesErrorCode, message: impl Into<String>) -> Response {
    Response::Error { code, message: message.into() }
}

fn store_error(e: StoreError) -> Response {
    let code = match e {
        StoreError::Corrupt { .. } => ModulesErrorCode::Corrupt,
        StoreError::Full { .. } => ModulesErrorCode::Full,
        StoreError::BadKey(_) => ModulesErrorCode::BadRequest,
        StoreError::Device(_) | StoreError::NotAStore | StoreError::OtherVersion(_) | StoreError::TooSmall(_) => {
            ModulesErrorCode::DeviceError
        }
    };
    error(code, e.to_string())
}

impl<D: Disk> Service<D> {
    /// Serves `store`.
    pub fn new(store: ModuleStore<D>) -> Service<D> {
        Service { store, outgoing: None, incoming: None }
    }

    /// The store.
    pub fn store(&self) -> &ModuleStore<D> {
        &self.store
    }

    /// Stops serving; the store.
    pub fn into_store(self) -> ModuleStore<D> {
        self.store
    }

    /// The answer to the request `message`, and a line to print about it when there is one.
    pub fn answer(&mut self, message: &[u8]) -> (Response, Option<String>) {
        match Request::decode(message) {
            Err(e) => (error(ModulesErrorCode::BadRequest, format!("malformed request: {e}")), None),
            Ok(Request::Get { key, offset }) => self.get(key, offset),
            Ok(Request::Put { key, total, offset, data }) => self.put(key, total, offset, data),
            Ok(Request::Keep { keys }) => {
                let count = keys.len();
                self.store.keep(keys);
                (Response::Kept, Some(format!("modstore: the system references {count} entries; kept when full")))
            }
        }
    }

    fn get(&mut self, key: String, offset: u64) -> (Response, Option<String>) {
        if offset == 0 || self.outgoing.as_ref().is_none_or(|(k, _)| *k != key) {
            self.outgoing = None;
            if offset != 0 {
                return (error(ModulesErrorCode::BadRequest, format!("{key}: a get must start at offset 0")), None);
            }
            match self.store.get(&key) {
                Ok(None) => return (Response::Missing, None),
                Ok(Some(data)) => self.outgoing = Some((key.clone(), data)),
                Err(e) => {
                    let line = format!("modstore: {e}");
                    return (store_error(e), Some(line));
                }
            }
        }
        let (_, data) = self.outgoing.as_ref().expect("set above");
        let total = data.len() as u64;
        let Some(start) = usize::try_from(offset).ok().filter(|s| *s <= data.len()) else {
            return (
                error(ModulesErrorCode::BadRequest, format!("{key}: offset {offset} is past its {total} bytes")),
                None,
            );
        };
        let end = (start + MAX_CHUNK_BYTES).min(data.len());
        let chunk = data[start..end].to_vec();
        if end == data.len() {
            self.outgoing = None;
        }
        (Response::Chunk { total, data: chunk }, None)
    }

    fn put(&mut self, key: String, total: u64, offset: u64, data: Vec<u8>) -> (Response, Option<String>) {
        if offset == 0 {
            // Refused at once when it cannot fit, even with eviction, before its bytes are sent.
            if let Err(e) = self.store.room_for(&key, total) {
                self.incoming = None;
                let line = format!("modstore: {key} not stored: {e}");
                return (store_error(e), Some(line));
            }
            // Grown as chunks arrive, not reserved up front for a size the client only claims.
            self.incoming = Some(Incoming { key: key.clone(), total, data: Vec::new() });
        }
        let Some(incoming) = self.incoming.as_mut() else {
            return (error(ModulesErrorCode::BadRequest, format!("{key}: a put must start at offset 0")), None);
        };
        if incoming.key != key || incoming.total != total || incoming.data.len() as u64 != offset {
            let expected = format!("{} at offset {} of {}", incoming.key, incoming.data.len(), incoming.total);
            self.incoming = None;
            return (
                error(
                    ModulesErrorCode::BadRequest,
                    format!("out-of-order chunk of {key} at {offset}; expected {expected}"),
                ),
                None,
            );
        }
        incoming.data.extend_from_slice(&data);
        if (incoming.data.len() as u64) < total {
            return (Response::Accepted, None);
        }
        let Incoming { key, data, .. } = self.incoming.take().expect("checked");
        match self.store.put(&key, &data) {
            Ok(evicted) => {
                let evicted = evicted.map(|e| format!("; {e}")).unwrap_or_default();
                (Response::Stored, Some(format!("modstore: stored {key} ({} KiB){evicted}", data.len().div_ceil(1024))))
            }
            Err(e) => {
                let line = format!("modstore: {key} not stored: {e}");
                (store_error(e), Some(line))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use kvstore::disk::MemDisk;

    use super::*;

    fn service(sectors: u64) -> Service<MemDisk> {
        Service::new(ModuleStore::open(MemDisk::new(sectors), 1).expect("open").0)
    }

    /// Puts `data` under `key` chunk by chunk, as the kernel does; the last answer.
    fn put(service: &mut Service<MemDisk>, key: &str, data: &[u8]) -> Response {
        let total = data.len() as u64;
        let mut offset = 0;
        loop {
            let end = (offset + MAX_CHUNK_BYTES).min(data.len());
            let request =
                Request::Put { key: key.into(), total, offset: offset as u64, data: data[offset..end].to_vec() };
            let (response, _) = service.answer(&request.encode());
            offset = end;
            if offset == data.len() || response != Response::Accepted {
                return response;
            }
        }
    }

    /// Gets `key` chunk by chunk, as the kernel does.
    fn get(service: &mut Service<MemDisk>, key: &str) -> Result<Option<Vec<u8>>, Response> {
        let mut data = Vec::new();
        loop {
            let request = Request::Get { key: key.into(), offset: data.len() as u64 };
            match service.answer(&request.encode()).0 {
                Response::Missing => return Ok(None),
                Response::Chunk { total, data: chunk } => {
                    data.extend_from_slice(&chunk);
                    if data.len() as u64 == total {
                        return Ok(Some(data));
                    }
                }
                other => return Err(other),
            }
        }
    }

    #[test]
    fn entries_go_in_and_out_in_chunks() {
        let mut s = service(4096);
        let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        assert_eq!(get(&mut s, "k"), Ok(None));
        assert_eq!(put(&mut s, "k", &big), Response::Stored);
        assert_eq!(put(&mut s, "empty", &[]), Response::Stored);
        assert_eq!(get(&mut s, "k"), Ok(Some(big)));
        assert_eq!(get(&mut s, "empty"), Ok(Some(Vec::new())));
        assert_eq!(s.store().len(), 2);
    }

    #[test]
    fn out_of_order_chunks_and_bad_requests_are_refused() {
        let mut s = service(4096);
        let chunk = |offset: u64| Request::Put { key: "k".into(), total: 10, offset, data: vec![1; 5] }.encode();
        assert!(matches!(
            s.answer(&chunk(5)).0,
            Response::Error { code: ModulesErrorCode::BadRequest, ref message } if message.contains("must start at offset 0")
        ));
        assert_eq!(s.answer(&chunk(0)).0, Response::Accepted);
        let (response, _) =
            s.answer(&Request::Put { key: "other".into(), total: 10, offset: 5, data: vec![1; 5] }.encode());
        assert!(
            matches!(response, Response::Error { code: ModulesErrorCode::BadRequest, ref message }
            if message == "out-of-order chunk of other at 5; expected k at offset 5 of 10"),
            "{response:?}"
        );
        // The entry was dropped: nothing half-written is stored.
        assert_eq!(s.store().len(), 0);
        assert!(matches!(s.answer(&[0x42]).0, Response::Error { code: ModulesErrorCode::BadRequest, .. }));
        let (response, _) = s.answer(&Request::Get { key: "k".into(), offset: 3 }.encode());
        assert!(matches!(response, Response::Error { code: ModulesErrorCode::BadRequest, .. }));
    }

    #[test]
    fn a_full_store_refuses_before_the_bytes_come() {
        let mut s = service(16);
        let (response, line) =
            s.answer(&Request::Put { key: "k".into(), total: 1 << 20, offset: 0, data: vec![0; 10] }.encode());
        assert!(
            matches!(response, Response::Error { code: ModulesErrorCode::Full, ref message }
            if message.starts_with("the store is full: the entry needs 1025 KiB, 7 KiB are free with every entry")),
            "{response:?}"
        );
        assert!(
            line.as_deref().is_some_and(|l| l.starts_with(
                "modstore: k not stored: the store is full: the entry needs 1025 KiB, 7 KiB are free with every entry"
            )),
            "{line:?}"
        );
    }

    #[test]
    fn a_full_store_evicts_what_the_system_does_not_reference() {
        let mut s = service(64);
        let (response, line) = s.answer(&Request::Keep { keys: vec!["b".into(), "new".into()] }.encode());
        assert_eq!(response, Response::Kept);
        assert_eq!(line.as_deref(), Some("modstore: the system references 2 entries; kept when full"));
        assert_eq!(put(&mut s, "a", &[1; 12_000]), Response::Stored);
        assert_eq!(put(&mut s, "b", &[2; 12_000]), Response::Stored);
        let request = Request::Put { key: "new".into(), total: 12_000, offset: 0, data: vec![3; 12_000] };
        let (response, line) = s.answer(&request.encode());
        assert_eq!(response, Response::Stored);
        assert_eq!(
            line.as_deref(),
            Some(
                "modstore: stored new (12 KiB); evicted 1 entries no manifest references, kept 1 (13 KiB used, was 25 KiB)"
            )
        );
        assert_eq!(get(&mut s, "a"), Ok(None));
        assert_eq!(get(&mut s, "b"), Ok(Some(vec![2; 12_000])));
        assert_eq!(get(&mut s, "new"), Ok(Some(vec![3; 12_000])));
    }
}
