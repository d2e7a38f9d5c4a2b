//! What each request gets.
//!
//! | request | answer |
//! |---|---|
//! | `GET /` | 200, [`HELLO`] |
//! | `GET /stats` | 200, `requests served: N` (this one included) |
//! | `GET /kv/KEY` | 200 with the value as the body; 404 when there is no such key |
//! | `PUT /kv/KEY` + body | 200 `stored` once the store has it on disk; 507 when its disk is full |
//! | `DELETE /kv/KEY` | 200 `deleted` once the store has it on disk; 404 when there is no such key |
//! | any other path | 404 |
//!
//! `HEAD` gets `GET`'s head; other methods get 405. The `/kv/` paths are served only with a store
//! (else they are paths like any other). A key not as [`kv::check_key`] wants gets 400; so does
//! a `PUT` body not as [`kv::check_value`] wants, which must come with `Content-Length` (411)
//! and be at most [`kv::MAX_VALUE_BYTES`] long (413). When the store cannot be reached, even
//! after connecting again once: 503. Only `PUT /kv/KEY`'s body is read; other requests' bodies
//! are ignored (the connection closes after the answer anyway).

use crate::http::{Answer, HELLO, Request, RequestLine, Status};
use crate::kv::{self, Store};

/// The methods `/` and `/stats` serve.
const PAGE_METHODS: &str = "GET, HEAD";
/// The methods `/kv/KEY` serves.
const KV_METHODS: &str = "GET, HEAD, PUT, DELETE";

/// What a request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// The page at `/`.
    Hello,
    /// The count at `/stats`.
    Stats,
    /// A key's value.
    Get(String),
    /// Storing a key's value (the body).
    Put(String),
    /// Deleting a key.
    Delete(String),
    /// Answered without looking further (no such path, method or key).
    Refused(Answer),
}

/// Where `line` goes; `store` says whether there is a key-value store.
pub fn route(line: &RequestLine, store: bool) -> Route {
    let method = line.method.as_str();
    let key = line.path.strip_prefix("/kv/").filter(|_| store);
    let allowed = match key {
        Some(_) => matches!(method, "GET" | "HEAD" | "PUT" | "DELETE"),
        None => matches!(method, "GET" | "HEAD"),
    };
    if !allowed {
        let allow = if key.is_some() { KV_METHODS } else { PAGE_METHODS };
        let why = format!("{} serves only {allow}", line.path);
        return Route::Refused(Answer { allow: Some(allow), ..Answer::error(Status::MethodNotAllowed, &why) });
    }
    let Some(key) = key else {
        return match line.path.as_str() {
            "/" => Route::Hello,
            "/stats" => Route::Stats,
            _ => Route::Refused(Answer::new(Status::NotFound, format!("no such page: {}\n", line.path))),
        };
    };
    if let Err(why) = kv::check_key(key) {
        return Route::Refused(Answer::error(Status::BadRequest, &why));
    }
    let key = key.to_string();
    match method {
        "PUT" => Route::Put(key),
        "DELETE" => Route::Delete(key),
        _ => Route::Get(key),
    }
}

/// How many body bytes to read before answering `request` on `route`, or the answer when the
/// body cannot be had.
pub fn body_length(route: &Route, request: &Request) -> Result<usize, Answer> {
    if !matches!(route, Route::Put(_)) {
        return Ok(0);
    }
    if request.transfer_encoding {
        return Err(Answer::error(
            Status::LengthRequired,
            "a Transfer-Encoding body cannot be read here; send the value with Content-Length",
        ));
    }
    let Some(length) = request.content_length else {
        return Err(Answer::error(Status::LengthRequired, "PUT needs the value as a body with Content-Length"));
    };
    match usize::try_from(length) {
        Ok(length) if length <= kv::MAX_VALUE_BYTES => Ok(length),
        _ => Err(Answer::error(
            Status::PayloadTooLarge,
            &format!("the value has {length} bytes; at most {} are allowed", kv::MAX_VALUE_BYTES),
        )),
    }
}

/// The answer to a request on `route` (`head_only` for `HEAD`) with its `body` read; `served`
/// counts the requests answered, this one included.
pub fn respond(route: &Route, head_only: bool, body: &[u8], served: u64, store: Option<&mut dyn Store>) -> Answer {
    let answer = match (route, store) {
        (Route::Hello, _) => Answer::new(Status::Ok, HELLO),
        (Route::Stats, _) => Answer::new(Status::Ok, format!("requests served: {served}\n")),
        (Route::Refused(answer), _) => answer.clone(),
        (Route::Get(key), Some(store)) => kv::get(store, key),
        (Route::Put(key), Some(store)) => match kv::check_value(body) {
            Ok(value) => kv::put(store, key, value),
            Err(why) => Answer::error(Status::BadRequest, &why),
        },
        (Route::Delete(key), Some(store)) => kv::delete(store, key),
        (Route::Get(_) | Route::Put(_) | Route::Delete(_), None) => {
            Answer::error(Status::ServiceUnavailable, "there is no key-value store")
        }
    };
    Answer { head_only, ..answer }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::{Head, parse};
    use crate::kv::fake::Fake;

    /// The answer to `head` (and `body`), with or without a store, as status and text.
    fn answer(head: &[u8], body: &[u8], served: u64, store: Option<&mut dyn Store>) -> (u16, String) {
        let Head::Request(request) = parse(head) else { panic!("a request: {:?}", String::from_utf8_lossy(head)) };
        let route = route(&request.line, store.is_some());
        let answer = match body_length(&route, &request) {
            Ok(length) => {
                assert_eq!(length, body.len(), "the body's length");
                respond(&route, request.line.method == "HEAD", body, served, store)
            }
            Err(answer) => answer,
        };
        (answer.status.code(), String::from_utf8(answer.to_bytes()).expect("UTF-8"))
    }

    #[test]
    fn the_routes_answer() {
        assert_eq!(
            answer(b"GET / HTTP/1.1\r\n\r\n", b"", 1, None),
            (
                200,
                "HTTP/1.1 200 OK\r\nServer: mica-httpd\r\nContent-Type: text/plain\r\nContent-Length: 32\r\n\
                 Connection: close\r\n\r\nhello from Mica over virtio-net\n"
                    .to_string()
            )
        );
        let (code, stats) = answer(b"GET /stats HTTP/1.0\r\n\r\n", b"", 7, None);
        assert_eq!(code, 200);
        assert!(stats.ends_with("Content-Length: 19\r\nConnection: close\r\n\r\nrequests served: 7\n"), "{stats}");
        let (code, missing) = answer(b"GET /nope HTTP/1.1\r\n\r\n", b"", 2, None);
        assert_eq!(code, 404);
        assert!(missing.starts_with("HTTP/1.1 404 Not Found\r\n") && missing.ends_with("no such page: /nope\n"));
    }

    #[test]
    fn head_gets_headers_only_and_other_methods_are_refused() {
        let (code, head) = answer(b"HEAD / HTTP/1.1\r\n\r\n", b"", 1, None);
        assert_eq!(code, 200);
        assert!(head.ends_with("Content-Length: 32\r\nConnection: close\r\n\r\n"), "{head}");
        let (code, post) = answer(b"POST / HTTP/1.1\r\n\r\n", b"", 1, None);
        assert_eq!(code, 405);
        assert!(post.contains("\r\nAllow: GET, HEAD\r\n"), "{post}");
    }

    #[test]
    fn without_a_store_kv_paths_are_like_any_other() {
        assert_eq!(answer(b"GET /kv/colour HTTP/1.1\r\n\r\n", b"", 1, None).0, 404);
        let (code, put) = answer(b"PUT /kv/colour HTTP/1.1\r\nContent-Length: 4\r\n\r\n", b"", 1, None);
        assert_eq!(code, 405);
        assert!(put.contains("\r\nAllow: GET, HEAD\r\n"), "{put}");
    }

    #[test]
    fn the_kv_routes_answer() {
        let fake = Fake::default();
        let mut store = fake.clone();
        let mut ask = |head: &[u8], body: &[u8]| answer(head, body, 1, Some(&mut store));
        let put = b"PUT /kv/colour HTTP/1.1\r\nContent-Length: 9\r\n\r\n";
        let (code, text) = ask(put, b"deep blue");
        assert_eq!(code, 200);
        assert!(text.ends_with("Content-Length: 7\r\nConnection: close\r\n\r\nstored\n"), "{text}");
        let (code, text) = ask(b"GET /kv/colour HTTP/1.1\r\n\r\n", b"");
        assert_eq!(code, 200);
        assert!(text.contains("Content-Type: text/plain\r\n"), "{text}");
        assert!(text.ends_with("Content-Length: 9\r\nConnection: close\r\n\r\ndeep blue"), "{text}");
        let (code, text) = ask(b"HEAD /kv/colour HTTP/1.1\r\n\r\n", b"");
        assert_eq!(code, 200);
        assert!(text.ends_with("Content-Length: 9\r\nConnection: close\r\n\r\n"), "{text}");
        assert_eq!(ask(b"GET /kv/shape HTTP/1.1\r\n\r\n", b"").0, 404);
        let (code, text) = ask(b"DELETE /kv/colour HTTP/1.1\r\n\r\n", b"");
        assert_eq!(code, 200);
        assert!(text.ends_with("\r\n\r\ndeleted\n"), "{text}");
        assert_eq!(ask(b"DELETE /kv/colour HTTP/1.1\r\n\r\n", b"").0, 404);
        assert_eq!(ask(b"GET /kv/colour HTTP/1.1\r\n\r\n", b"").0, 404);
        // The page and the count are still there.
        assert_eq!(ask(b"GET / HTTP/1.1\r\n\r\n", b"").0, 200);
        let (code, text) = ask(b"POST /kv/colour HTTP/1.1\r\n\r\n", b"");
        assert_eq!(code, 405);
        assert!(text.contains("\r\nAllow: GET, HEAD, PUT, DELETE\r\n"), "{text}");
        assert_eq!(
            fake.0.borrow().requests,
            ["put colour deep blue", "get colour", "get colour", "get shape", "del colour", "del colour", "get colour"]
        );
    }

    #[test]
    fn bad_kv_requests_are_refused_with_the_reason() {
        let fake = Fake::default();
        let mut store = fake.clone();
        let mut ask = |head: &[u8], body: &[u8]| answer(head, body, 1, Some(&mut store));
        for (head, body, code, why) in [
            (&b"GET /kv/ HTTP/1.1\r\n\r\n"[..], &b""[..], 400, "the key is empty"),
            (b"GET /kv/a%20b HTTP/1.1\r\n\r\n", b"", 400, "the key has '%'"),
            (b"PUT /kv/a/b HTTP/1.1\r\nContent-Length: 1\r\n\r\n", b"", 400, "the key has '/'"),
            (b"DELETE /kv/a:b HTTP/1.1\r\n\r\n", b"", 400, "the key has ':'"),
            (b"PUT /kv/a HTTP/1.1\r\n\r\n", b"", 411, "PUT needs the value as a body with Content-Length"),
            (b"PUT /kv/a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", b"", 411, "Transfer-Encoding"),
            (b"PUT /kv/a HTTP/1.1\r\nContent-Length: 4097\r\n\r\n", b"", 413, "4097 bytes; at most 4096"),
            (b"PUT /kv/a HTTP/1.1\r\nContent-Length: 5\r\n\r\n", b"blue\n", 400, "a line break"),
            (b"PUT /kv/a HTTP/1.1\r\nContent-Length: 1\r\n\r\n", b"\xff", 400, "not UTF-8"),
        ] {
            let (got, text) = ask(head, body);
            assert_eq!(got, code, "{text}");
            assert!(text.contains(why), "{text}");
        }
        let (code, text) = ask(&[b"GET /kv/".as_slice(), &[b'k'; 65], b" HTTP/1.1\r\n\r\n"].concat(), b"");
        assert_eq!(code, 400);
        assert!(text.contains("the key has 65 characters; at most 64 are allowed"), "{text}");
        assert!(fake.0.borrow().requests.is_empty(), "nothing reached the store");
    }
}
