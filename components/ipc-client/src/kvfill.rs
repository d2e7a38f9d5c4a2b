//! The two halves of the crash test of the persistent `kvstore`, on connection `kv`:
//!
//! - [`fill`] (`kv-fill`): puts `key-0`, `key-1`, ... each with [`fill_value`], one at a time,
//!   printing `kv-fill: acked key-N` (flushed) after each `ok`, until a reply is not `ok` or the
//!   machine is killed.
//! - [`check`] (`kv-check`): after a reboot, reads `key-0`, `key-1`, ... until the first
//!   `missing`, checks every value and that `len` counts exactly those keys (no key after the
//!   first missing one), and prints `kv-check: key-0..key-{M-1} present and correct, key-M
//!   missing` (or `kv-check: no keys`).

use std::io::Write;

use mica::ipc::Channel;

use crate::context;

/// The length of each value.
const VALUE_BYTES: usize = 100;

/// What `kv-fill` stores under `key-{i}`: `value-{i}-` and then letters (a run that starts at a
/// letter depending on `i`) up to [`VALUE_BYTES`] bytes.
pub fn fill_value(i: u64) -> String {
    let mut value = format!("value-{i}-");
    let pad = VALUE_BYTES.saturating_sub(value.len());
    value.extend((0..pad as u64).map(|j| char::from(b'a' + ((i % 26 + j % 26) % 26) as u8)));
    value
}

/// `kv-fill`: puts until a reply is not `ok`.
pub fn fill() -> Result<(), String> {
    let kv = Channel::connect("kv").map_err(context("connect kv"))?;
    let mut stdout = std::io::stdout();
    for i in 0.. {
        let request = format!("put key-{i} {}", fill_value(i));
        let reply = kv.call(request.as_bytes()).map_err(context(format!("kv-fill: put key-{i}")))?;
        if reply != b"ok" {
            return Err(format!("kv-fill: put key-{i}: the server replied {:?}", String::from_utf8_lossy(&reply)));
        }
        writeln!(stdout, "kv-fill: acked key-{i}")
            .and_then(|()| stdout.flush())
            .map_err(|e| format!("kv-fill: cannot write to stdout: {e}"))?;
    }
    Ok(())
}

/// `kv-check`: the keys `kv-fill` wrote, each with the right value, and no others.
pub fn check() -> Result<(), String> {
    let kv = Channel::connect("kv").map_err(context("connect kv"))?;
    let mut present = 0;
    loop {
        let key = format!("key-{present}");
        let reply = kv.call(format!("get {key}").as_bytes()).map_err(context(format!("kv-check: get {key}")))?;
        if reply == b"missing" {
            break;
        }
        let expected = format!("value {}", fill_value(present));
        if reply != expected.as_bytes() {
            let line = format!(
                "kv-check: {key} has a wrong value: the server replied {:?}, expected {expected:?}",
                String::from_utf8_lossy(&reply)
            );
            println!("{line}");
            return Err(line);
        }
        present += 1;
    }
    let reply = kv.call(b"len").map_err(context("kv-check: len"))?;
    if reply != format!("len {present}").as_bytes() {
        let line = format!(
            "kv-check: key-{present} is missing, but the store answered {:?} to len (keys after a missing one?)",
            String::from_utf8_lossy(&reply)
        );
        println!("{line}");
        return Err(line);
    }
    if present == 0 {
        println!("kv-check: no keys");
    } else {
        println!("kv-check: key-0..key-{} present and correct, key-{present} missing", present - 1);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::fill_value;

    #[test]
    fn fill_values_are_100_bytes_and_distinct() {
        assert_eq!(fill_value(0), format!("value-0-{}", &"abcdefghijklmnopqrstuvwxyz".repeat(4)[..92]));
        assert!(fill_value(1).starts_with("value-1-bcd"));
        for i in [0, 9, 10, 12345, u64::MAX] {
            assert_eq!(fill_value(i).len(), 100, "{i}");
        }
        assert_ne!(fill_value(1), fill_value(27));
    }
}
