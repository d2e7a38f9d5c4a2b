//! The HTTP server's parts as a library, for its binary (`main.rs`: the component) and for the
//! fuzzer (`fuzz/targets`, target `http_request`): reading a request's head ([`http`]), choosing
//! and answering the route ([`routes`]), the key-value store's protocol ([`kv`]) and the
//! connections on smoltcp ([`server`]).

#![forbid(unsafe_code)]

pub mod http;
pub mod kv;
pub mod routes;
pub mod server;
