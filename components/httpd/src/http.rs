//! Just enough HTTP/1.0 and 1.1: reading a request's head, and the answers this server gives.
//!
//! Only the request line matters: the headers are read up to the blank line that ends them and
//! ignored, and so is any body. Every answer closes the connection (`Connection: close`).

/// The most bytes of a request head (request line and headers) this server reads.
pub const MAX_HEAD_BYTES: usize = 8192;

/// The body of `GET /`.
pub const HELLO: &str = "hello from Mica over virtio-net\n";

/// What the bytes received so far on a connection amount to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Head {
    /// The head has not ended yet: read more.
    Incomplete,
    /// A complete head with a well-formed request line.
    Request(RequestLine),
    /// Not a request this server can read: answer with this status.
    Bad(Status),
}

/// A request line: `METHOD TARGET HTTP/1.x`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestLine {
    /// The method, e.g. `GET`.
    pub method: String,
    /// The target's path, without query or fragment (an absolute-form target's path part).
    pub path: String,
    /// The protocol version, e.g. `HTTP/1.1`.
    pub version: String,
}

/// The statuses this server answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// 200.
    Ok,
    /// 400: the request line is malformed.
    BadRequest,
    /// 404: no such path.
    NotFound,
    /// 405: only GET and HEAD.
    MethodNotAllowed,
    /// 431: the head is longer than [`MAX_HEAD_BYTES`].
    HeadTooLarge,
    /// 505: not HTTP/1.0 or 1.1.
    VersionNotSupported,
}

impl Status {
    /// The numeric code.
    pub fn code(self) -> u16 {
        match self {
            Status::Ok => 200,
            Status::BadRequest => 400,
            Status::NotFound => 404,
            Status::MethodNotAllowed => 405,
            Status::HeadTooLarge => 431,
            Status::VersionNotSupported => 505,
        }
    }

    /// The reason phrase.
    pub fn reason(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::BadRequest => "Bad Request",
            Status::NotFound => "Not Found",
            Status::MethodNotAllowed => "Method Not Allowed",
            Status::HeadTooLarge => "Request Header Fields Too Large",
            Status::VersionNotSupported => "HTTP Version Not Supported",
        }
    }
}

/// Where the head in `bytes` ends (just past the blank line), if it does. A bare `\n` ends a
/// line as well as `\r\n` does.
fn head_end(bytes: &[u8]) -> Option<usize> {
    let mut line_start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'\n' {
            let line = &bytes[line_start..i];
            if line.is_empty() || line == b"\r" {
                return Some(i + 1);
            }
            line_start = i + 1;
        }
    }
    None
}

/// Reads the head at the start of `bytes` (all received so far on a connection).
pub fn parse(bytes: &[u8]) -> Head {
    let Some(end) = head_end(bytes) else {
        return if bytes.len() >= MAX_HEAD_BYTES { Head::Bad(Status::HeadTooLarge) } else { Head::Incomplete };
    };
    if end > MAX_HEAD_BYTES {
        return Head::Bad(Status::HeadTooLarge);
    }
    let head = &bytes[..end];
    let line_end = head.iter().position(|&b| b == b'\n').unwrap_or(head.len());
    let line = head[..line_end].strip_suffix(b"\r").unwrap_or(&head[..line_end]);
    let Ok(line) = std::str::from_utf8(line) else { return Head::Bad(Status::BadRequest) };
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Head::Bad(Status::BadRequest);
    };
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return Head::Bad(Status::BadRequest);
    }
    let Some(path) = target_path(target) else { return Head::Bad(Status::BadRequest) };
    match version {
        "HTTP/1.0" | "HTTP/1.1" => {}
        v if v.starts_with("HTTP/") => return Head::Bad(Status::VersionNotSupported),
        _ => return Head::Bad(Status::BadRequest),
    }
    Head::Request(RequestLine { method: method.into(), path: path.into(), version: version.into() })
}

/// The path of a request target: origin form (`/a?b`) or absolute form (`http://host/a?b`).
fn target_path(target: &str) -> Option<&str> {
    let path = match target.strip_prefix("http://") {
        Some(rest) => rest.find('/').map_or("/", |at| &rest[at..]),
        None => target,
    };
    let path = path.split(['?', '#']).next().unwrap_or(path);
    (path.starts_with('/') && !path.bytes().any(|b| b.is_ascii_control())).then_some(path)
}

/// The answer to a request (`Err`: to a head that could not be read, with the status it gets),
/// as its status and bytes. `served` is the number of requests answered including this one, for
/// `/stats`.
pub fn respond(request: Result<&RequestLine, Status>, served: u64) -> (Status, Vec<u8>) {
    let (status, body, head_only) = match request {
        Err(status) => (status, format!("{} {}\n", status.code(), status.reason()), false),
        Ok(r) if r.method != "GET" && r.method != "HEAD" => {
            (Status::MethodNotAllowed, "only GET and HEAD are served here\n".to_string(), false)
        }
        Ok(r) => {
            let head_only = r.method == "HEAD";
            match r.path.as_str() {
                "/" => (Status::Ok, HELLO.to_string(), head_only),
                "/stats" => (Status::Ok, format!("requests served: {served}\n"), head_only),
                _ => (Status::NotFound, format!("no such page: {}\n", r.path), head_only),
            }
        }
    };
    let mut out = format!(
        "HTTP/1.1 {} {}\r\nServer: mica-httpd\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n",
        status.code(),
        status.reason(),
        body.len()
    );
    if status == Status::MethodNotAllowed {
        out.push_str("Allow: GET, HEAD\r\n");
    }
    out.push_str("\r\n");
    if !head_only {
        out.push_str(&body);
    }
    (status, out.into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(method: &str, path: &str, version: &str) -> Head {
        Head::Request(RequestLine { method: method.into(), path: path.into(), version: version.into() })
    }

    fn text(request: Result<&RequestLine, Status>, served: u64) -> (u16, String) {
        let (status, bytes) = respond(request, served);
        (status.code(), String::from_utf8(bytes).expect("UTF-8"))
    }

    #[test]
    fn complete_heads_parse() {
        assert_eq!(parse(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"), line("GET", "/", "HTTP/1.1"));
        assert_eq!(parse(b"GET /stats HTTP/1.0\r\n\r\n"), line("GET", "/stats", "HTTP/1.0"));
        assert_eq!(parse(b"HEAD /a?b=c#d HTTP/1.1\n\n"), line("HEAD", "/a", "HTTP/1.1"));
        assert_eq!(parse(b"GET http://10.0.2.15:80/stats?x HTTP/1.1\r\n\r\n"), line("GET", "/stats", "HTTP/1.1"));
        assert_eq!(parse(b"GET http://host HTTP/1.1\r\n\r\n"), line("GET", "/", "HTTP/1.1"));
        // A body after the head is left alone.
        assert_eq!(parse(b"POST /x HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc"), line("POST", "/x", "HTTP/1.1"));
    }

    #[test]
    fn partial_heads_ask_for_more() {
        for partial in [&b""[..], b"GE", b"GET / HTTP/1.1", b"GET / HTTP/1.1\r\n", b"GET / HTTP/1.1\r\nHost: x\r\n\r"] {
            assert_eq!(parse(partial), Head::Incomplete, "{:?}", String::from_utf8_lossy(partial));
        }
    }

    #[test]
    fn bad_heads_get_their_status() {
        for bad in [
            &b"\r\n"[..],
            b"GET\r\n\r\n",
            b"GET /\r\n\r\n",
            b"GET / HTTP/1.1 extra\r\n\r\n",
            b"GET  / HTTP/1.1\r\n\r\n",
            b"get / HTTP/1.1\r\n\r\n",
            b"GET relative HTTP/1.1\r\n\r\n",
            b"GET / FTP/1.0\r\n\r\n",
            b"GET /\xff HTTP/1.1\r\n\r\n",
        ] {
            assert_eq!(parse(bad), Head::Bad(Status::BadRequest), "{:?}", String::from_utf8_lossy(bad));
        }
        assert_eq!(parse(b"GET / HTTP/2.0\r\n\r\n"), Head::Bad(Status::VersionNotSupported));
        let mut huge = b"GET / HTTP/1.1\r\nX: ".to_vec();
        huge.resize(MAX_HEAD_BYTES, b'a');
        assert_eq!(parse(&huge), Head::Bad(Status::HeadTooLarge));
        huge.extend_from_slice(b"\r\n\r\n");
        assert_eq!(parse(&huge), Head::Bad(Status::HeadTooLarge));
    }

    #[test]
    fn the_routes_answer() {
        let Head::Request(root) = parse(b"GET / HTTP/1.1\r\n\r\n") else { panic!("a request") };
        assert_eq!(
            text(Ok(&root), 1),
            (
                200,
                "HTTP/1.1 200 OK\r\nServer: mica-httpd\r\nContent-Type: text/plain\r\nContent-Length: 32\r\n\
                 Connection: close\r\n\r\nhello from Mica over virtio-net\n"
                    .to_string()
            )
        );
        let Head::Request(stats) = parse(b"GET /stats HTTP/1.0\r\n\r\n") else { panic!("a request") };
        let (code, stats) = text(Ok(&stats), 7);
        assert_eq!(code, 200);
        assert!(stats.ends_with("Content-Length: 19\r\nConnection: close\r\n\r\nrequests served: 7\n"), "{stats}");
        let Head::Request(missing) = parse(b"GET /nope HTTP/1.1\r\n\r\n") else { panic!("a request") };
        let (code, missing) = text(Ok(&missing), 2);
        assert_eq!(code, 404);
        assert!(missing.starts_with("HTTP/1.1 404 Not Found\r\n") && missing.ends_with("no such page: /nope\n"));
    }

    #[test]
    fn head_gets_headers_only_and_other_methods_are_refused() {
        let Head::Request(head) = parse(b"HEAD / HTTP/1.1\r\n\r\n") else { panic!("a request") };
        let (code, text_head) = text(Ok(&head), 1);
        assert_eq!(code, 200);
        assert!(text_head.ends_with("Content-Length: 32\r\nConnection: close\r\n\r\n"), "{text_head}");
        let Head::Request(post) = parse(b"POST / HTTP/1.1\r\n\r\n") else { panic!("a request") };
        let (code, post) = text(Ok(&post), 1);
        assert_eq!(code, 405);
        assert!(post.contains("\r\nAllow: GET, HEAD\r\n"), "{post}");
        let (code, bad) = text(Err(Status::BadRequest), 1);
        assert_eq!(code, 400);
        assert!(bad.starts_with("HTTP/1.1 400 Bad Request\r\n") && bad.ends_with("\r\n\r\n400 Bad Request\n"));
    }
}
