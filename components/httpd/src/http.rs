//! Just enough HTTP/1.0 and 1.1: reading a request's head (with `httparse`), and writing answers.
//!
//! Of the headers only `Content-Length`, `Transfer-Encoding` and `Expect` matter; the others are
//! read up to the blank line that ends them and ignored. Every answer closes the connection
//! (`Connection: close`), so at most one request is read per connection.

/// The most bytes of a request head (request line and headers) this server reads.
pub const MAX_HEAD_BYTES: usize = 8192;

/// The body of `GET /`.
pub const HELLO: &str = "hello from Mica over virtio-net\n";

/// The interim answer to `Expect: 100-continue`: go on and send the body.
pub const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// What the bytes received so far on a connection amount to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Head {
    /// The head has not ended yet: read more.
    Incomplete,
    /// A complete head with a well-formed request line and headers.
    Request(Request),
    /// Not a request this server can read: answer with this status, saying why.
    Bad(Status, String),
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

/// A request's head: its line and the headers that matter here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The request line.
    pub line: RequestLine,
    /// The head's length in bytes, blank line included: where the body starts.
    pub head_len: usize,
    /// The `Content-Length`, if given (`u64::MAX` for one too large to count).
    pub content_length: Option<u64>,
    /// Whether a `Transfer-Encoding` is given (a body this server cannot read).
    pub transfer_encoding: bool,
    /// Whether the client waits for `100 Continue` before sending the body.
    pub expect_continue: bool,
}

/// The statuses this server answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// 200.
    Ok,
    /// 400: the request is malformed, or so is its key or value.
    BadRequest,
    /// 404: no such path or key.
    NotFound,
    /// 405: not a method this path serves.
    MethodNotAllowed,
    /// 411: a body without `Content-Length`.
    LengthRequired,
    /// 413: a body over the limit.
    PayloadTooLarge,
    /// 431: the head is longer than [`MAX_HEAD_BYTES`].
    HeadTooLarge,
    /// 500: the key-value store failed.
    InternalServerError,
    /// 502: the key-value store answered something unexpected.
    BadGateway,
    /// 503: the key-value store is not there.
    ServiceUnavailable,
    /// 505: not HTTP/1.0 or 1.1.
    VersionNotSupported,
    /// 507: the key-value store's disk is full.
    InsufficientStorage,
}

impl Status {
    /// The numeric code.
    pub fn code(self) -> u16 {
        match self {
            Status::Ok => 200,
            Status::BadRequest => 400,
            Status::NotFound => 404,
            Status::MethodNotAllowed => 405,
            Status::LengthRequired => 411,
            Status::PayloadTooLarge => 413,
            Status::HeadTooLarge => 431,
            Status::InternalServerError => 500,
            Status::BadGateway => 502,
            Status::ServiceUnavailable => 503,
            Status::VersionNotSupported => 505,
            Status::InsufficientStorage => 507,
        }
    }

    /// The reason phrase.
    pub fn reason(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::BadRequest => "Bad Request",
            Status::NotFound => "Not Found",
            Status::MethodNotAllowed => "Method Not Allowed",
            Status::LengthRequired => "Length Required",
            Status::PayloadTooLarge => "Content Too Large",
            Status::HeadTooLarge => "Request Header Fields Too Large",
            Status::InternalServerError => "Internal Server Error",
            Status::BadGateway => "Bad Gateway",
            Status::ServiceUnavailable => "Service Unavailable",
            Status::VersionNotSupported => "HTTP Version Not Supported",
            Status::InsufficientStorage => "Insufficient Storage",
        }
    }
}

/// A refusal of a malformed request.
fn bad(why: impl Into<String>) -> Head {
    Head::Bad(Status::BadRequest, why.into())
}

fn too_large() -> Head {
    Head::Bad(Status::HeadTooLarge, format!("the request head is over {MAX_HEAD_BYTES} bytes"))
}

/// Reads the head at the start of `bytes` (all received so far on a connection); what follows
/// it (a body) is left alone. A bare `\n` ends a line as well as `\r\n` does.
pub fn parse(bytes: &[u8]) -> Head {
    let bytes = &bytes[..bytes.len().min(MAX_HEAD_BYTES)];
    // httparse skips blank lines before the request line; this server has always refused a
    // head that starts with one (an empty request line).
    if bytes.starts_with(b"\n") || bytes.starts_with(b"\r\n") {
        return bad("the request line is empty");
    }
    // A head has fewer headers than lines, so this many never runs short.
    let mut headers = vec![httparse::EMPTY_HEADER; bytes.iter().filter(|&&b| b == b'\n').count()];
    let mut parsed = httparse::Request::new(&mut headers);
    let head_len = match parsed.parse(bytes) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if bytes.len() >= MAX_HEAD_BYTES => return too_large(),
        Ok(httparse::Status::Partial) => return Head::Incomplete,
        Err(httparse::Error::Version) => return bad_version(bytes),
        Err(e) => return bad(malformed(e)),
    };
    let (Some(method), Some(target), Some(minor)) = (parsed.method, parsed.path, parsed.version) else {
        return bad("the request line is incomplete");
    };
    if !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return bad(format!("the method {method:?} is not upper-case letters"));
    }
    let Some(path) = target_path(target) else {
        return bad(format!("the target {target:?} is not an absolute path or http:// URL"));
    };
    let mut request = Request {
        line: RequestLine { method: method.into(), path: path.into(), version: format!("HTTP/1.{minor}") },
        head_len,
        content_length: None,
        transfer_encoding: false,
        expect_continue: false,
    };
    for header in parsed.headers.iter() {
        if let Err(why) = read_header(header, &mut request) {
            return bad(why);
        }
    }
    Head::Request(request)
}

/// Why httparse refused a head (other than for its version).
fn malformed(error: httparse::Error) -> &'static str {
    match error {
        httparse::Error::HeaderName => "a header line has no colon or no proper name",
        httparse::Error::HeaderValue => "a header's value has control characters",
        httparse::Error::NewLine => "a line of the head does not end where it should",
        httparse::Error::TooManyHeaders => "the head has too many headers",
        httparse::Error::Token | httparse::Error::Status | httparse::Error::Version => {
            "the request line is not METHOD TARGET VERSION"
        }
    }
}

/// The refusal of a request line whose version is not HTTP/1.0 or 1.1: a 505 for another HTTP
/// version, else a malformed request.
fn bad_version(bytes: &[u8]) -> Head {
    let line = bytes.split(|&b| b == b'\n').next().unwrap_or(bytes);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let version = String::from_utf8_lossy(line.rsplit(|&b| b == b' ').next().unwrap_or(line));
    if version.starts_with("HTTP/") {
        Head::Bad(Status::VersionNotSupported, format!("{version} is not served; HTTP/1.0 and 1.1 are"))
    } else {
        bad(format!("the version {version:?} is not HTTP/1.x"))
    }
}

/// Notes what a header says in `request`, if it matters here.
fn read_header(header: &httparse::Header, request: &mut Request) -> Result<(), String> {
    let (name, value) = (header.name, header.value.trim_ascii());
    if name.eq_ignore_ascii_case("content-length") {
        if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
            return Err(format!("Content-Length {:?} is not a number", String::from_utf8_lossy(value)));
        }
        // Only digits: only too many of them fail to parse.
        let length = std::str::from_utf8(value).ok().and_then(|v| v.parse().ok()).unwrap_or(u64::MAX);
        if request.content_length.is_some_and(|l| l != length) {
            return Err("two different Content-Length headers".into());
        }
        request.content_length = Some(length);
    } else if name.eq_ignore_ascii_case("transfer-encoding") {
        request.transfer_encoding = true;
    } else if name.eq_ignore_ascii_case("expect") {
        request.expect_continue = value.eq_ignore_ascii_case(b"100-continue");
    }
    Ok(())
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

/// An answer: status, `text/plain` body and what goes with them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The status.
    pub status: Status,
    /// The body (its length is sent even when it is not).
    pub body: String,
    /// Whether to send the head only (for `HEAD`).
    pub head_only: bool,
    /// The methods the path serves, sent as `Allow` with a 405.
    pub allow: Option<&'static str>,
}

impl Answer {
    /// An answer with `body`.
    pub fn new(status: Status, body: impl Into<String>) -> Answer {
        Answer { status, body: body.into(), head_only: false, allow: None }
    }

    /// A refusal or failure: the status and why, as the body.
    pub fn error(status: Status, why: &str) -> Answer {
        Answer::new(status, format!("{} {}: {why}\n", status.code(), status.reason()))
    }

    /// The answer's bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = format!(
            "HTTP/1.1 {} {}\r\nServer: mica-httpd\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n",
            self.status.code(),
            self.status.reason(),
            self.body.len()
        );
        if let Some(allow) = self.allow {
            out.push_str(&format!("Allow: {allow}\r\n"));
        }
        out.push_str("\r\n");
        if !self.head_only {
            out.push_str(&self.body);
        }
        out.into_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(method: &str, path: &str, version: &str) -> RequestLine {
        RequestLine { method: method.into(), path: path.into(), version: version.into() }
    }

    fn request_line(head: &[u8]) -> RequestLine {
        match parse(head) {
            Head::Request(r) => r.line,
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(head)),
        }
    }

    fn status(head: &[u8]) -> Status {
        match parse(head) {
            Head::Bad(status, _) => status,
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(head)),
        }
    }

    #[test]
    fn complete_heads_parse() {
        assert_eq!(request_line(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"), line("GET", "/", "HTTP/1.1"));
        assert_eq!(request_line(b"GET /stats HTTP/1.0\r\n\r\n"), line("GET", "/stats", "HTTP/1.0"));
        assert_eq!(request_line(b"HEAD /a?b=c#d HTTP/1.1\n\n"), line("HEAD", "/a", "HTTP/1.1"));
        assert_eq!(
            request_line(b"GET http://10.0.2.15:80/stats?x HTTP/1.1\r\n\r\n"),
            line("GET", "/stats", "HTTP/1.1")
        );
        assert_eq!(request_line(b"GET http://host HTTP/1.1\r\n\r\n"), line("GET", "/", "HTTP/1.1"));
        // A body after the head is left alone.
        assert_eq!(request_line(b"POST /x HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc"), line("POST", "/x", "HTTP/1.1"));
    }

    #[test]
    fn the_headers_that_matter_are_read() {
        let head = b"PUT /kv/a HTTP/1.1\r\nHost: x\r\ncontent-length:  12 \r\nEXPECT: 100-Continue\r\n\r\nbody";
        let Head::Request(r) = parse(head) else { panic!("a request") };
        assert_eq!(r.head_len, head.len() - 4);
        assert_eq!((r.content_length, r.transfer_encoding, r.expect_continue), (Some(12), false, true));
        let Head::Request(r) =
            parse(b"PUT /kv/a HTTP/1.1\nTransfer-Encoding: chunked\nContent-Length: 1\nContent-Length: 1\n\n")
        else {
            panic!("a request")
        };
        assert_eq!((r.content_length, r.transfer_encoding, r.expect_continue), (Some(1), true, false));
        let Head::Request(r) = parse(b"GET / HTTP/1.1\r\n\r\n") else { panic!("a request") };
        assert_eq!((r.content_length, r.transfer_encoding, r.expect_continue), (None, false, false));
        let Head::Request(r) = parse(b"PUT / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n") else {
            panic!("a request")
        };
        assert_eq!(r.content_length, Some(u64::MAX));
    }

    #[test]
    fn any_number_of_headers_fits() {
        let mut head = b"GET / HTTP/1.1\n".to_vec();
        for i in 0..1000 {
            head.extend_from_slice(format!("X{i}:\n").as_bytes());
        }
        head.extend_from_slice(b"Content-Length: 0\n\n");
        let Head::Request(r) = parse(&head) else { panic!("a request") };
        assert_eq!((r.head_len, r.content_length), (head.len(), Some(0)));
    }

    #[test]
    fn refusals_say_why() {
        for (head, why) in [
            (&b"GET / HTTP/1.1\r\nno colon\r\n\r\n"[..], "a header line has no colon or no proper name"),
            (b"GET / HTTP/1.1 extra\r\n\r\n", "a line of the head does not end where it should"),
            (b"GET  / HTTP/1.1\r\n\r\n", "the request line is not METHOD TARGET VERSION"),
            (b"get / HTTP/1.1\r\n\r\n", "the method \"get\" is not upper-case letters"),
            (b"GET / FTP/1.0\r\n\r\n", "the version \"FTP/1.0\" is not HTTP/1.x"),
            (b"GET / HTTP/3\r\n", "HTTP/3 is not served; HTTP/1.0 and 1.1 are"),
        ] {
            let Head::Bad(_, got) = parse(head) else { panic!("{:?} is refused", String::from_utf8_lossy(head)) };
            assert_eq!(got, why);
        }
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
            b"GET / HTTP/1.1\r\nno colon\r\n\r\n",
            b"GET / HTTP/1.1\r\n: no name\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost : x\r\n\r\n",
            b"PUT / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
            b"PUT / HTTP/1.1\r\nContent-Length: 1, 1\r\n\r\n",
            b"PUT / HTTP/1.1\r\nContent-Length:\r\n\r\n",
            b"PUT / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        ] {
            assert_eq!(status(bad), Status::BadRequest, "{:?}", String::from_utf8_lossy(bad));
        }
        assert_eq!(status(b"GET / HTTP/2.0\r\n\r\n"), Status::VersionNotSupported);
        let mut huge = b"GET / HTTP/1.1\r\nX: ".to_vec();
        huge.resize(MAX_HEAD_BYTES, b'a');
        assert_eq!(status(&huge), Status::HeadTooLarge);
        huge.extend_from_slice(b"\r\n\r\n");
        assert_eq!(status(&huge), Status::HeadTooLarge);
        assert_eq!(
            parse(b"PUT / HTTP/1.1\r\nContent-Length: ten\r\n\r\n"),
            Head::Bad(Status::BadRequest, "Content-Length \"ten\" is not a number".into())
        );
    }

    #[test]
    fn answers_are_written_out() {
        assert_eq!(
            String::from_utf8(Answer::new(Status::Ok, HELLO).to_bytes()).expect("UTF-8"),
            "HTTP/1.1 200 OK\r\nServer: mica-httpd\r\nContent-Type: text/plain\r\nContent-Length: 32\r\n\
             Connection: close\r\n\r\nhello from Mica over virtio-net\n"
        );
        let head = Answer { head_only: true, ..Answer::new(Status::Ok, HELLO) };
        assert!(
            String::from_utf8(head.to_bytes())
                .expect("UTF-8")
                .ends_with("Content-Length: 32\r\nConnection: close\r\n\r\n")
        );
        let refused = Answer { allow: Some("GET, HEAD"), ..Answer::error(Status::MethodNotAllowed, "no") };
        let refused = String::from_utf8(refused.to_bytes()).expect("UTF-8");
        assert!(refused.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"), "{refused}");
        assert!(refused.ends_with("\r\nAllow: GET, HEAD\r\n\r\n405 Method Not Allowed: no\n"), "{refused}");
    }
}
