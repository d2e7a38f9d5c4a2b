//! The text protocol on connection `kv`, the same as the in-memory `kv` server's: one command
//! per request, one line of reply.
//!
//! | request | reply |
//! |---|---|
//! | `put KEY VALUE` | `ok` once the record is durable; `error disk full`; `error WHAT` |
//! | `get KEY` | `value VALUE` or `missing` |
//! | `del KEY` | `ok` once the record is durable, `missing`, or an error as for `put` |
//! | `len` | `len N` |
//! | anything else | `error malformed request "..."` |
//!
//! A key has no spaces; a value may (everything after the second space).

use crate::disk::Disk;
use crate::log::Store;

/// The reply to one request.
pub fn answer<D: Disk>(store: &mut Store<D>, request: &str) -> String {
    let mut words = request.splitn(3, ' ');
    match (words.next(), words.next(), words.next()) {
        (Some("put"), Some(key), Some(value)) => match store.put(key, value) {
            Ok(()) => "ok".into(),
            Err(e) => format!("error {e}"),
        },
        (Some("get"), Some(key), None) => match store.get(key) {
            Some(value) => format!("value {value}"),
            None => "missing".into(),
        },
        (Some("del"), Some(key), None) => match store.delete(key) {
            Ok(true) => "ok".into(),
            Ok(false) => "missing".into(),
            Err(e) => format!("error {e}"),
        },
        (Some("len"), None, None) => format!("len {}", store.len()),
        _ => format!("error malformed request {request:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::MemDisk;

    #[test]
    fn the_kv_protocol() {
        let (mut store, _) = Store::open(MemDisk::new(4), 1).expect("open");
        let mut ask = |request: &str| answer(&mut store, request);
        assert_eq!(ask("len"), "len 0");
        assert_eq!(ask("get colour"), "missing");
        assert_eq!(ask("put colour deep blue"), "ok");
        assert_eq!(ask("get colour"), "value deep blue");
        assert_eq!(ask("put size "), "ok");
        assert_eq!(ask("get size"), "value ");
        assert_eq!(ask("len"), "len 2");
        assert_eq!(ask("del colour"), "ok");
        assert_eq!(ask("del colour"), "missing");
        assert_eq!(ask("put more x"), "error disk full");
        assert_eq!(ask("put colour"), "error malformed request \"put colour\"");
        assert_eq!(ask("get"), "error malformed request \"get\"");
        assert_eq!(ask("len 3"), "error malformed request \"len 3\"");
        assert_eq!(ask("fly away"), "error malformed request \"fly away\"");
        assert_eq!(ask("get size"), "value ");
    }
}
