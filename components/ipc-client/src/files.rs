//! `files`: a client of the file system service on connection `files` (the files protocol,
//! [`mica_device::files`]). It makes a directory and a file, writes, reads back, lists, renames
//! and removes, checking every answer, and prints `files: NAME ok` per step. Run twice on the
//! same disk (`files` then `files-again`), the second run finds what the first left.

use mica::ipc::Channel;
use mica_device::files::{APPEND, CONNECTION, Entry, Kind, OpenFlags, Request, Response};

/// What the first run leaves in `docs/kept.txt`.
const KEPT: &[u8] = b"written before the reboot\n";

struct Files(Channel);

impl Files {
    fn call(&self, request: Request) -> Result<Response, String> {
        let reply = self.0.call(&request.encode()).map_err(|e| format!("{request:?}: {e}"))?;
        Response::decode(&reply).map_err(|e| format!("{request:?}: a malformed response: {e}"))
    }

    /// `request`, which must be answered `expected`.
    fn expect(&self, request: Request, expected: Response) -> Result<(), String> {
        let what = format!("{request:?}");
        match self.call(request)? {
            got if got == expected => Ok(()),
            got => Err(format!("{what}: expected {}, got {}", expected.brief(), got.brief())),
        }
    }

    fn open(&self, flags: OpenFlags, path: &str) -> Result<u64, String> {
        match self.call(Request::Open { flags, path: path.into() })? {
            Response::Opened { handle, .. } => Ok(handle),
            other => Err(format!("opening {path:?}: {}", other.brief())),
        }
    }
}

fn step(name: &str) {
    println!("files: {name} ok");
}

/// The first run, on a blank disk.
pub fn run() -> Result<(), String> {
    let files = Files(Channel::connect(CONNECTION).map_err(|e| format!("connect {CONNECTION}: {e}"))?);
    files.expect(Request::CreateDir { path: "docs".into() }, Response::Done)?;
    step("mkdir");
    let create = OpenFlags::READ | OpenFlags::WRITE | OpenFlags::CREATE | OpenFlags::EXCLUSIVE;
    let h = files.open(create, "docs/hello.txt")?;
    let text: Vec<u8> = (0..40_000u32).map(|i| b"0123456789abcdef"[(i % 16) as usize]).collect();
    files.expect(Request::Write { handle: h, offset: 0, data: text[..32768].to_vec() }, Response::Written(32768))?;
    let rest = text[32768..].to_vec();
    files.expect(
        Request::Write { handle: h, offset: APPEND, data: rest.clone() },
        Response::Written(rest.len() as u32),
    )?;
    files.expect(Request::Sync { handle: h }, Response::Done)?;
    step("write");
    files.expect(Request::Read { handle: h, offset: 39_990, len: 100 }, Response::Data(text[39_990..].to_vec()))?;
    match files.call(Request::StatHandle { handle: h })? {
        // The volume keeps the time of the last write.
        Response::Stat { kind: Kind::File, size: 40_000, modified: Some(_), accessed: Some(_) } => {}
        other => return Err(format!("stat of docs/hello.txt: {}", other.brief())),
    }
    files.expect(Request::Close { handle: h }, Response::Done)?;
    step("read");
    files.expect(Request::Rename { from: "docs/hello.txt".into(), to: "docs/kept.txt".into() }, Response::Done)?;
    let h = files.open(OpenFlags::WRITE | OpenFlags::TRUNCATE, "docs/kept.txt")?;
    files.expect(Request::Write { handle: h, offset: 0, data: KEPT.to_vec() }, Response::Written(KEPT.len() as u32))?;
    files.expect(Request::Close { handle: h }, Response::Done)?;
    let h = files.open(create, "docs/gone.txt")?;
    files.expect(Request::Close { handle: h }, Response::Done)?;
    files.expect(Request::Unlink { path: "docs/gone.txt".into() }, Response::Done)?;
    step("rename");
    let kept = Entry { kind: Kind::File, size: KEPT.len() as u64, name: "kept.txt".into() };
    files.expect(
        Request::ReadDir { start: 0, path: "docs".into() },
        Response::Entries { entries: vec![kept], end: true },
    )?;
    step("list");
    // A symbolic link: followed where asked, described itself where not.
    let link = Request::Symlink { target: "docs/kept.txt".into(), path: "latest".into() };
    files.expect(link, Response::Done)?;
    files.expect(Request::ReadLink { path: "latest".into() }, Response::Data(b"docs/kept.txt".to_vec()))?;
    for (follow, want) in [(true, Kind::File), (false, Kind::Symlink)] {
        match files.call(Request::Stat { path: "latest".into(), follow })? {
            Response::Stat { kind, .. } if kind == want => {}
            other => return Err(format!("stat of the link (follow: {follow}): {}", other.brief())),
        }
    }
    let h = files.open(OpenFlags::READ | OpenFlags::FOLLOW, "latest")?;
    files.expect(Request::Read { handle: h, offset: 0, len: 100 }, Response::Data(KEPT.to_vec()))?;
    files.expect(Request::Close { handle: h }, Response::Done)?;
    step("link");
    Ok(())
}

/// The second run: what the first left is there.
pub fn again() -> Result<(), String> {
    let files = Files(Channel::connect(CONNECTION).map_err(|e| format!("connect {CONNECTION}: {e}"))?);
    let h = files.open(OpenFlags::READ, "docs/kept.txt")?;
    files.expect(Request::Read { handle: h, offset: 0, len: 4096 }, Response::Data(KEPT.to_vec()))?;
    files.expect(Request::Close { handle: h }, Response::Done)?;
    // The link made before the reboot still leads there.
    let h = files.open(OpenFlags::READ | OpenFlags::FOLLOW, "latest")?;
    files.expect(Request::Read { handle: h, offset: 0, len: 4096 }, Response::Data(KEPT.to_vec()))?;
    files.expect(Request::Close { handle: h }, Response::Done)?;
    step("kept");
    Ok(())
}
