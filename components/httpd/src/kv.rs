//! The key-value store behind `/kv/KEY`, reached through [`Store`]: in the component a
//! connection to `kvstore` (or the in-memory `kv`), in tests a fake. It speaks the stores' text
//! protocol, one request and one reply line per call: `put KEY VALUE` / `get KEY` / `del KEY`,
//! answered `ok`, `value VALUE`, `missing` or `error WHAT`.
//!
//! The protocol splits a request on its first two spaces, so a key here is 1 to
//! [`MAX_KEY_CHARS`] of `[A-Za-z0-9._-]` and a value one line of text (spaces allowed, no control
//! characters) of at most [`MAX_VALUE_BYTES`] bytes.

use crate::http::{Answer, Status};

/// The longest key, in characters.
pub const MAX_KEY_CHARS: usize = 64;

/// The largest value (a `PUT` body), in bytes.
pub const MAX_VALUE_BYTES: usize = 4096;

/// A failed call to the store.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// The store's end of the connection is closed (it ended); connecting again may help.
    #[error("the key-value store has gone: {0}")]
    Gone(String),
    /// Any other failure.
    #[error("calling the key-value store failed: {0}")]
    Failed(String),
}

/// A connection to a store.
pub trait Store {
    /// Sends one request line and returns the reply line.
    fn call(&mut self, request: &str) -> Result<String, CallError>;

    /// Connects again, after a call found the store gone.
    fn reconnect(&mut self) -> Result<(), String>;
}

/// Why `key` is not a key, if it is not.
pub fn check_key(key: &str) -> Result<(), String> {
    if key.is_empty() {
        return Err("the key is empty".into());
    }
    if let Some(c) = key.chars().find(|c| !c.is_ascii_alphanumeric() && !matches!(c, '.' | '_' | '-')) {
        return Err(format!("the key has {c:?}; keys are made of A-Z, a-z, 0-9, '.', '_' and '-'"));
    }
    if key.len() > MAX_KEY_CHARS {
        return Err(format!("the key has {} characters; at most {MAX_KEY_CHARS} are allowed", key.len()));
    }
    Ok(())
}

/// `body` as a value, or why it cannot be one.
pub fn check_value(body: &[u8]) -> Result<&str, String> {
    if body.len() > MAX_VALUE_BYTES {
        return Err(format!("the value has {} bytes; at most {MAX_VALUE_BYTES} are allowed", body.len()));
    }
    let value = std::str::from_utf8(body).map_err(|e| format!("the value is not UTF-8 ({e})"))?;
    if let Some((at, c)) = value.char_indices().find(|(_, c)| c.is_control()) {
        let what = if matches!(c, '\n' | '\r') { "a line break" } else { "a control character" };
        return Err(format!("the value has {what} ({c:?} at byte {at}); a value is one line of text"));
    }
    Ok(value)
}

/// Makes `request`; when the store has gone, connects again once and makes it again.
fn ask(store: &mut dyn Store, request: &str) -> Result<String, String> {
    match store.call(request) {
        Ok(reply) => Ok(reply),
        Err(CallError::Gone(first)) => {
            store.reconnect().map_err(|e| format!("it has gone ({first}), and connecting again failed: {e}"))?;
            store.call(request).map_err(|e| format!("it has gone ({first}), and after connecting again: {e}"))
        }
        Err(CallError::Failed(e)) => Err(e),
    }
}

/// The answer when the store cannot be reached.
fn unavailable(why: &str) -> Answer {
    Answer::error(Status::ServiceUnavailable, &format!("the key-value store is not available: {why}"))
}

/// The answer to a reply the request does not expect.
fn unexpected(reply: &str) -> Answer {
    match reply.strip_prefix("error ") {
        Some(why) => Answer::error(Status::InternalServerError, &format!("the key-value store failed: {why}")),
        None => Answer::error(Status::BadGateway, &format!("the key-value store answered {reply:?}")),
    }
}

/// `GET /kv/KEY` (`key` checked): the value, or 404.
pub fn get(store: &mut dyn Store, key: &str) -> Answer {
    match ask(store, &format!("get {key}")) {
        Err(why) => unavailable(&why),
        Ok(reply) => match reply.strip_prefix("value ") {
            Some(value) => Answer::new(Status::Ok, value),
            None if reply == "missing" => Answer::error(Status::NotFound, &format!("no key {key:?}")),
            None => unexpected(&reply),
        },
    }
}

/// `PUT /kv/KEY` (`key` and `value` checked): stored once the store acknowledges it.
pub fn put(store: &mut dyn Store, key: &str, value: &str) -> Answer {
    match ask(store, &format!("put {key} {value}")) {
        Err(why) => unavailable(&why),
        Ok(reply) if reply == "ok" => Answer::new(Status::Ok, "stored\n"),
        Ok(reply) if reply == "error disk full" => {
            Answer::error(Status::InsufficientStorage, "the key-value store's disk is full")
        }
        Ok(reply) => unexpected(&reply),
    }
}

/// `DELETE /kv/KEY` (`key` checked): deleted once the store acknowledges it, or 404.
pub fn delete(store: &mut dyn Store, key: &str) -> Answer {
    match ask(store, &format!("del {key}")) {
        Err(why) => unavailable(&why),
        Ok(reply) if reply == "ok" => Answer::new(Status::Ok, "deleted\n"),
        Ok(reply) if reply == "missing" => Answer::error(Status::NotFound, &format!("no key {key:?}")),
        Ok(reply) => unexpected(&reply),
    }
}

/// An in-memory store for tests and the fuzzer (feature `fake`), speaking the protocol, which can
/// be made to fail.
#[cfg(any(test, feature = "fake"))]
pub mod fake {
    use std::cell::RefCell;
    use std::collections::BTreeMap;
    use std::rc::Rc;

    use super::{CallError, Store};

    /// The fake's state, shared by its clones.
    #[derive(Debug, Default)]
    pub struct State {
        /// The keys and values.
        pub map: BTreeMap<String, String>,
        /// Every request made, in order.
        pub requests: Vec<String>,
        /// How many of the next calls find the store gone.
        pub gone_calls: u32,
        /// Whether connecting again fails.
        pub reconnect_fails: bool,
        /// How many times it was connected again.
        pub reconnects: u32,
        /// Whether `put` answers `error disk full`.
        pub full: bool,
        /// A reply to give to every request instead.
        pub reply: Option<String>,
    }

    /// A handle to a fake store.
    #[derive(Debug, Clone, Default)]
    pub struct Fake(pub Rc<RefCell<State>>);

    impl Store for Fake {
        fn call(&mut self, request: &str) -> Result<String, CallError> {
            let mut state = self.0.borrow_mut();
            if state.gone_calls > 0 {
                state.gone_calls -= 1;
                return Err(CallError::Gone("peer closed".into()));
            }
            state.requests.push(request.to_string());
            if let Some(reply) = &state.reply {
                return Ok(reply.clone());
            }
            let mut words = request.splitn(3, ' ');
            Ok(match (words.next(), words.next(), words.next()) {
                (Some("put"), Some(_), Some(_)) if state.full => "error disk full".into(),
                (Some("put"), Some(key), Some(value)) => {
                    state.map.insert(key.into(), value.into());
                    "ok".into()
                }
                (Some("get"), Some(key), None) => state.map.get(key).map_or("missing".into(), |v| format!("value {v}")),
                (Some("del"), Some(key), None) => if state.map.remove(key).is_some() { "ok" } else { "missing" }.into(),
                _ => format!("error malformed request {request:?}"),
            })
        }

        fn reconnect(&mut self) -> Result<(), String> {
            let mut state = self.0.borrow_mut();
            state.reconnects += 1;
            if state.reconnect_fails { Err("no such component".into()) } else { Ok(()) }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fake::Fake;
    use super::*;

    fn body(answer: &Answer) -> (u16, &str) {
        (answer.status.code(), answer.body.as_str())
    }

    #[test]
    fn keys_are_checked() {
        for good in ["a", "colour", "A.b_c-9", &"k".repeat(MAX_KEY_CHARS)] {
            assert_eq!(check_key(good), Ok(()), "{good:?}");
        }
        for bad in ["", "a b", "a/b", "%20", "caf\u{e9}", "a\n", &"k".repeat(MAX_KEY_CHARS + 1)] {
            assert!(check_key(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            check_key("a/b"),
            Err("the key has '/'; keys are made of A-Z, a-z, 0-9, '.', '_' and '-'".to_string())
        );
    }

    #[test]
    fn values_are_checked() {
        assert_eq!(check_value(b"deep blue"), Ok("deep blue"));
        assert_eq!(check_value(b""), Ok(""));
        assert_eq!(check_value("gr\u{fc}n".as_bytes()), Ok("gr\u{fc}n"));
        assert_eq!(check_value(&[b'x'; MAX_VALUE_BYTES]).map(str::len), Ok(MAX_VALUE_BYTES));
        assert!(check_value(&[b'x'; MAX_VALUE_BYTES + 1]).is_err());
        assert!(check_value(b"\xff").unwrap_err().contains("not UTF-8"));
        assert!(check_value(b"blue\n").unwrap_err().contains("a line break ('\\n' at byte 4)"));
        assert!(check_value(b"a\tb").unwrap_err().contains("a control character"));
    }

    #[test]
    fn requests_and_replies() {
        let fake = Fake::default();
        let mut store = fake.clone();
        assert_eq!(body(&get(&mut store, "colour")), (404, "404 Not Found: no key \"colour\"\n"));
        assert_eq!(body(&put(&mut store, "colour", "deep blue")), (200, "stored\n"));
        assert_eq!(body(&get(&mut store, "colour")), (200, "deep blue"));
        assert_eq!(body(&put(&mut store, "empty", "")), (200, "stored\n"));
        assert_eq!(body(&get(&mut store, "empty")), (200, ""));
        assert_eq!(body(&delete(&mut store, "colour")), (200, "deleted\n"));
        assert_eq!(body(&delete(&mut store, "colour")).0, 404);
        assert_eq!(
            fake.0.borrow().requests,
            ["get colour", "put colour deep blue", "get colour", "put empty ", "get empty", "del colour", "del colour"]
        );
        fake.0.borrow_mut().full = true;
        assert_eq!(
            body(&put(&mut store, "more", "x")),
            (507, "507 Insufficient Storage: the key-value store's disk is full\n")
        );
        fake.0.borrow_mut().reply = Some("error write failed".into());
        assert_eq!(
            body(&delete(&mut store, "empty")),
            (500, "500 Internal Server Error: the key-value store failed: write failed\n")
        );
        fake.0.borrow_mut().reply = Some("len 3".into());
        assert_eq!(body(&get(&mut store, "empty")).0, 502);
    }

    #[test]
    fn a_gone_store_is_connected_again_once() {
        let fake = Fake::default();
        let mut store = fake.clone();
        fake.0.borrow_mut().gone_calls = 1;
        assert_eq!(body(&put(&mut store, "colour", "blue")), (200, "stored\n"));
        assert_eq!(fake.0.borrow().reconnects, 1);
        // Gone again after connecting again: 503.
        fake.0.borrow_mut().gone_calls = 2;
        let answer = get(&mut store, "colour");
        assert_eq!(answer.status, Status::ServiceUnavailable);
        assert!(answer.body.contains("after connecting again"), "{}", answer.body);
        assert_eq!(fake.0.borrow().reconnects, 2);
        // Connecting again fails: 503, and no second call.
        let mut state = fake.0.borrow_mut();
        state.gone_calls = 1;
        state.reconnect_fails = true;
        drop(state);
        let answer = delete(&mut store, "colour");
        assert_eq!(answer.status, Status::ServiceUnavailable);
        assert!(answer.body.contains("connecting again failed: no such component"), "{}", answer.body);
        assert_eq!(fake.0.borrow().requests.len(), 1, "only the first put got through");
        assert_eq!(fake.0.borrow().map.get("colour").map(String::as_str), Some("blue"));
    }
}
