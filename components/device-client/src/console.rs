//! `console TEXT...`: two lines through the console driver (connection `console`): TEXT (the
//! words joined by spaces), then `console: N bytes written through the virtio-console driver`,
//! N being the first line's bytes (its newline included). Each write must be answered `Done`.

use mica::ipc::Channel;
use mica_device::console::{self, MAX_BYTES, Request, Response};

use crate::context;

/// The two lines for `words`: the words joined by spaces, then the count of the first line's
/// bytes; each ends with a newline.
fn lines(words: &[String]) -> [String; 2] {
    let first = format!("{}\n", words.join(" "));
    let second = format!("console: {} bytes written through the virtio-console driver\n", first.len());
    [first, second]
}

/// Writes the lines for `words` and prints `console: wrote 2 lines`.
pub fn run(words: &[String]) -> Result<(), String> {
    if words.is_empty() {
        return Err("console needs the TEXT to write, e.g. `console hello`".into());
    }
    let lines = lines(words);
    if let Some(long) = lines.iter().find(|l| l.len() > MAX_BYTES) {
        return Err(format!("a line of {} bytes is longer than one write ({MAX_BYTES} bytes)", long.len()));
    }
    let port = Channel::connect(console::CONNECTION).map_err(context("connect console"))?;
    for (i, line) in lines.iter().enumerate() {
        let what = format!("write {}", i + 1);
        let reply = port.call(&Request::Write(line.clone().into_bytes()).encode()).map_err(context(&what))?;
        match Response::decode(&reply) {
            Ok(Response::Done) => {}
            Ok(Response::Error { code, message }) => {
                return Err(format!("{what}: the driver refused: {message} ({code:?})"));
            }
            Ok(other) => return Err(format!("{what}: the driver answered {other:?}, not Done")),
            Err(e) => return Err(format!("{what}: malformed answer: {e}")),
        }
    }
    println!("console: wrote {} lines", lines.len());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_second_line_counts_the_first() {
        let words: Vec<String> = ["hello", "through", "virtio-console"].map(String::from).to_vec();
        let [first, second] = lines(&words);
        assert_eq!(first, "hello through virtio-console\n");
        assert_eq!(second, "console: 29 bytes written through the virtio-console driver\n");
    }
}
