//! The service on disks in memory: the protocol's semantics, refusing a foreign disk, and power
//! cuts at every disk write with a volatile write cache that keeps a random part of what was not
//! flushed.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

use kvstore::disk::{Disk, MemDisk, SECTOR_SIZE};
use mica_device::files::{APPEND, Entry, FsErrorCode, Kind, MAX_ENTRIES, OpenFlags, Request, Response, SetTime};

use crate::service::{MAX_OPEN, Service};
use crate::volume::{BLOCK_SIZE, MountReport, Mounted, Volume};

/// Sectors in the test disks: 1 MiB, 256 littlefs blocks.
const SECTORS: u64 = 2048;

fn code(response: Response) -> FsErrorCode {
    match response {
        Response::Error { code, .. } => code,
        other => panic!("expected an error, got {}", other.brief()),
    }
}

fn opened(response: Response) -> u64 {
    match response {
        Response::Opened { handle, .. } => handle,
        other => panic!("expected a handle, got {}", other.brief()),
    }
}

fn data(response: Response) -> Vec<u8> {
    match response {
        Response::Data(data) => data,
        other => panic!("expected data, got {}", other.brief()),
    }
}

/// A stat's kind and size.
fn kind_size(response: Response) -> (Kind, u64) {
    match response {
        Response::Stat { kind, size, .. } => (kind, size),
        other => panic!("expected a stat, got {}", other.brief()),
    }
}

/// A stat's modification and access times.
fn times(response: Response) -> (Option<u64>, Option<u64>) {
    match response {
        Response::Stat { modified, accessed, .. } => (modified, accessed),
        other => panic!("expected a stat, got {}", other.brief()),
    }
}

fn done(response: Response) {
    assert_eq!(response, Response::Done, "{}", response.brief());
}

fn rw_create() -> OpenFlags {
    OpenFlags::READ | OpenFlags::WRITE | OpenFlags::CREATE
}

/// Runs `body` on a service over a fresh volume on `disk`.
fn with_service<D: Disk, R>(disk: D, body: impl FnOnce(&mut Service<'_, '_, Mounted<D>>) -> R) -> R {
    serve(disk, |s, _| body(s)).expect("the volume mounts")
}

/// The service's type on disk `D`.
type On<'fs, 'a, D> = Service<'fs, 'a, Mounted<D>>;

/// Opens and mounts the volume on `disk` (formatting a blank one) and runs `body` on a service
/// over it; an error if it does not mount.
fn serve<D: Disk, R>(disk: D, body: impl FnOnce(&mut On<'_, '_, D>, &MountReport) -> R) -> Result<R, String> {
    let (mut volume, formatted) = Volume::open(disk)?;
    let failures = volume.failures.clone();
    let (fs, report) = volume.mount(formatted)?;
    let mut service = Service::new(&fs, report.blocks, failures);
    Ok(body(&mut service, &report))
}

#[test]
fn files_are_created_written_read_and_listed() {
    with_service(MemDisk::new(SECTORS), |s| {
        let missing = Request::Open { flags: OpenFlags::READ, path: "a.txt".into() };
        assert_eq!(code(s.handle(missing)), FsErrorCode::NoEntry);
        let h = opened(s.handle(Request::Open { flags: rw_create(), path: "a.txt".into() }));
        assert_eq!(s.handle(Request::Write { handle: h, offset: 0, data: b"hello".to_vec() }), Response::Written(5));
        assert_eq!(
            s.handle(Request::Write { handle: h, offset: APPEND, data: b", world".to_vec() }),
            Response::Written(7)
        );
        assert_eq!(data(s.handle(Request::Read { handle: h, offset: 0, len: 100 })), b"hello, world");
        assert_eq!(data(s.handle(Request::Read { handle: h, offset: 7, len: 3 })), b"wor");
        assert_eq!(data(s.handle(Request::Read { handle: h, offset: 100, len: 3 })), b"");
        // A write past the end leaves zeros between.
        assert_eq!(s.handle(Request::Write { handle: h, offset: 20, data: b"!".to_vec() }), Response::Written(1));
        let all = data(s.handle(Request::Read { handle: h, offset: 0, len: 100 }));
        assert_eq!(all, b"hello, world\0\0\0\0\0\0\0\0!");
        done(s.handle(Request::SetSize { handle: h, size: 5 }));
        assert_eq!(kind_size(s.handle(Request::StatHandle { handle: h })), (Kind::File, 5));
        done(s.handle(Request::Close { handle: h }));
        assert_eq!(code(s.handle(Request::Close { handle: h })), FsErrorCode::BadHandle);
        assert_eq!(kind_size(s.handle(Request::Stat { path: "a.txt".into(), follow: true })), (Kind::File, 5));

        done(s.handle(Request::CreateDir { path: "d".into() }));
        assert_eq!(code(s.handle(Request::CreateDir { path: "d".into() })), FsErrorCode::Exists);
        let big: Vec<u8> = (0..3 * BLOCK_SIZE).map(|i| (i % 251) as u8).collect();
        let h = opened(s.handle(Request::Open { flags: rw_create(), path: "d/big".into() }));
        assert_eq!(
            s.handle(Request::Write { handle: h, offset: 0, data: big.clone() }),
            Response::Written(big.len() as u32)
        );
        done(s.handle(Request::Close { handle: h }));
        let listing = s.handle(Request::ReadDir { start: 0, path: String::new() });
        let expected = vec![
            Entry { kind: Kind::File, size: 5, name: "a.txt".into() },
            Entry { kind: Kind::Directory, size: 0, name: "d".into() },
        ];
        assert_eq!(listing, Response::Entries { entries: expected, end: true });
        let h = opened(s.handle(Request::Open { flags: OpenFlags::READ, path: "d/big".into() }));
        assert_eq!(data(s.handle(Request::Read { handle: h, offset: 4000, len: 200 })), big[4000..4200]);
        assert_eq!(code(s.handle(Request::Write { handle: h, offset: 0, data: vec![1] })), FsErrorCode::BadHandle);
        done(s.handle(Request::Close { handle: h }));
        assert_eq!(s.open_handles(), 0);
    });
}

#[test]
fn entries_keep_their_times() {
    with_service(MemDisk::new(SECTORS), |s| {
        let before = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_nanos();
        let h = opened(s.handle(Request::Open { flags: rw_create(), path: "f".into() }));
        let (modified, accessed) = times(s.handle(Request::StatHandle { handle: h }));
        let made = modified.expect("a new file has a modification time");
        assert!(u128::from(made) >= before, "{made} is before {before}");
        assert_eq!(accessed, Some(made), "a new file was accessed when it was made");
        let at = |ns| Request::SetTimes {
            path: "f".into(),
            follow: true,
            accessed: SetTime::At(ns),
            modified: SetTime::At(ns + 1),
        };
        done(s.handle(at(1_000)));
        assert_eq!(times(s.handle(Request::Stat { path: "f".into(), follow: true })), (Some(1_001), Some(1_000)));
        // A write changes the modification time only; a read changes neither.
        assert_eq!(s.handle(Request::Write { handle: h, offset: 0, data: b"x".to_vec() }), Response::Written(1));
        let (modified, accessed) = times(s.handle(Request::Stat { path: "f".into(), follow: true }));
        assert!(modified.is_some_and(|m| m >= made), "{modified:?}");
        assert_eq!(accessed, Some(1_000));
        data(s.handle(Request::Read { handle: h, offset: 0, len: 1 }));
        assert_eq!(times(s.handle(Request::Stat { path: "f".into(), follow: true })), (modified, Some(1_000)));
        let keep =
            Request::SetTimes { path: "f".into(), follow: true, accessed: SetTime::Keep, modified: SetTime::At(7) };
        done(s.handle(keep));
        assert_eq!(times(s.handle(Request::Stat { path: "f".into(), follow: true })), (Some(7), Some(1_000)));
        // Times follow a rename; a directory has them too; a missing path has none to set.
        done(s.handle(Request::Rename { from: "f".into(), to: "g".into() }));
        assert_eq!(times(s.handle(Request::Stat { path: "g".into(), follow: true })), (Some(7), Some(1_000)));
        done(s.handle(Request::CreateDir { path: "d".into() }));
        assert!(times(s.handle(Request::Stat { path: "d".into(), follow: true })).0.is_some());
        let missing =
            Request::SetTimes { path: "nope".into(), follow: true, accessed: SetTime::Now, modified: SetTime::Now };
        assert_eq!(code(s.handle(missing)), FsErrorCode::NoEntry);
        assert_eq!(code(s.handle(Request::Stat { path: "a\0".into(), follow: true })), FsErrorCode::Invalid);
    });
}

#[test]
fn the_times_writes_leave_reach_the_volume_at_a_sync_or_close() {
    let disk = SharedDisk::new(SECTORS);
    let at = |path: &str, ns| Request::SetTimes {
        path: path.into(),
        follow: true,
        accessed: SetTime::At(ns),
        modified: SetTime::At(ns),
    };
    let stat = |path: &str| Request::Stat { path: path.into(), follow: true };
    serve(disk.clone(), |s, _| {
        for path in ["synced", "open"] {
            let h = opened(s.handle(Request::Open { flags: rw_create(), path: path.into() }));
            done(s.handle(Request::Close { handle: h }));
            done(s.handle(at(path, 5)));
        }
        let synced = opened(s.handle(Request::Open { flags: OpenFlags::WRITE, path: "synced".into() }));
        let open = opened(s.handle(Request::Open { flags: OpenFlags::WRITE, path: "open".into() }));
        for h in [synced, open] {
            assert_eq!(s.handle(Request::Write { handle: h, offset: 0, data: b"x".to_vec() }), Response::Written(1));
        }
        done(s.handle(Request::Sync { handle: synced }));
        // A stat sees a write's time at once, synced or not.
        for path in ["synced", "open"] {
            assert!(times(s.handle(stat(path))).0.is_some_and(|t| t > 5), "{path}");
        }
    })
    .expect("the volume mounts");
    // Power is cut with `open` still open: its data is there, its time is the one set before.
    serve(disk.crashed(), |s, _| {
        assert!(times(s.handle(stat("synced"))).0.is_some_and(|t| t > 5));
        assert_eq!(times(s.handle(stat("open"))), (Some(5), Some(5)));
        assert_eq!(kind_size(s.handle(stat("open"))), (Kind::File, 1));
    })
    .expect("the volume mounts again");
}

#[test]
fn handles_of_what_is_removed_or_replaced_are_closed() {
    with_service(MemDisk::new(SECTORS), |s| {
        let open = |s: &mut On<'_, '_, MemDisk>, path: &str| {
            opened(s.handle(Request::Open { flags: rw_create(), path: path.into() }))
        };
        let (gone, replaced, moved) = (open(s, "gone"), open(s, "replaced"), open(s, "moved"));
        done(s.handle(Request::Unlink { path: "gone".into() }));
        done(s.handle(Request::Rename { from: "moved".into(), to: "replaced".into() }));
        // A new entry at a removed path is not reached through an old handle: found in the
        // fuzzer, where such a handle grew a symbolic link made there since.
        done(s.handle(Request::Symlink { target: "x".into(), path: "gone".into() }));
        for h in [gone, replaced] {
            let w = s.handle(Request::SetSize { handle: h, size: 300 });
            assert_eq!(code(w), FsErrorCode::BadHandle);
        }
        assert_eq!(s.handle(Request::ReadLink { path: "gone".into() }), Response::Data(b"x".to_vec()));
        // The renamed file's handle followed it.
        assert_eq!(s.handle(Request::Write { handle: moved, offset: 0, data: b"m".to_vec() }), Response::Written(1));
        assert_eq!(kind_size(s.handle(Request::Stat { path: "replaced".into(), follow: true })), (Kind::File, 1));
        done(s.handle(Request::Rename { from: "replaced".into(), to: "replaced".into() }));
        done(s.handle(Request::Close { handle: moved }));
        assert_eq!(s.open_handles(), 0);
    });
}

#[test]
fn symbolic_links_are_followed_on_the_way_and_where_asked() {
    let disk = SharedDisk::new(SECTORS);
    serve(disk.clone(), |s, _| {
        done(s.handle(Request::CreateDir { path: "d".into() }));
        let h = opened(s.handle(Request::Open { flags: rw_create(), path: "d/f".into() }));
        assert_eq!(s.handle(Request::Write { handle: h, offset: 0, data: b"data".to_vec() }), Response::Written(4));
        done(s.handle(Request::Close { handle: h }));
        let link = |target: &str, path: &str| Request::Symlink { target: target.into(), path: path.into() };
        done(s.handle(link("d/f", "l")));
        done(s.handle(link("d", "ld")));
        let stat = |path: &str, follow| Request::Stat { path: path.into(), follow };
        assert_eq!(kind_size(s.handle(stat("l", false))), (Kind::Symlink, 3));
        assert_eq!(kind_size(s.handle(stat("l", true))), (Kind::File, 4));
        assert_eq!(kind_size(s.handle(stat("ld", true))), (Kind::Directory, 0));
        assert_eq!(s.handle(Request::ReadLink { path: "l".into() }), Response::Data(b"d/f".to_vec()));
        assert_eq!(code(s.handle(Request::ReadLink { path: "d/f".into() })), FsErrorCode::Invalid);
        // Opening the link itself is refused, as O_NOFOLLOW; following it opens the file.
        let open = |flags, path: &str| Request::Open { flags, path: path.into() };
        assert_eq!(code(s.handle(open(OpenFlags::READ, "l"))), FsErrorCode::Loop);
        let h = opened(s.handle(open(OpenFlags::READ | OpenFlags::FOLLOW, "l")));
        assert_eq!(data(s.handle(Request::Read { handle: h, offset: 0, len: 10 })), b"data");
        done(s.handle(Request::Close { handle: h }));
        // A link on the way is always followed: `ld/g` is made in `d`.
        let h = opened(s.handle(open(rw_create(), "ld/g")));
        done(s.handle(Request::Close { handle: h }));
        assert_eq!(kind_size(s.handle(stat("d/g", false))), (Kind::File, 0));
        let listing = s.handle(Request::ReadDir { start: 0, path: String::new() });
        let Response::Entries { entries, .. } = listing else { panic!("{}", listing.brief()) };
        let mut kinds: Vec<(&str, Kind)> = entries.iter().map(|e| (e.name.as_str(), e.kind)).collect();
        kinds.sort_by_key(|(name, _)| *name);
        assert_eq!(kinds, [("d", Kind::Directory), ("l", Kind::Symlink), ("ld", Kind::Symlink)]);
        // Loops, escapes, absolute targets and taken names are refused by name.
        done(s.handle(link("self", "self")));
        assert_eq!(code(s.handle(open(OpenFlags::READ | OpenFlags::FOLLOW, "self"))), FsErrorCode::Loop);
        done(s.handle(link("../outside", "up")));
        assert_eq!(code(s.handle(stat("up", true))), FsErrorCode::NotPermitted);
        assert_eq!(code(s.handle(link("/etc", "abs"))), FsErrorCode::NotPermitted);
        assert_eq!(code(s.handle(link("x", "d"))), FsErrorCode::Exists);
        // An exclusive create at a link is refused whether it leads anywhere or not.
        let exclusive = rw_create() | OpenFlags::EXCLUSIVE | OpenFlags::FOLLOW;
        assert_eq!(code(s.handle(open(exclusive, "l"))), FsErrorCode::Exists);
        assert_eq!(code(s.handle(open(exclusive, "up"))), FsErrorCode::Exists);
        // Removing a link leaves its target; a link is not a directory to remove.
        assert_eq!(code(s.handle(Request::RemoveDir { path: "ld".into() })), FsErrorCode::NotDirectory);
        done(s.handle(Request::Unlink { path: "ld".into() }));
        assert_eq!(kind_size(s.handle(stat("d", false))), (Kind::Directory, 0));
    })
    .expect("the volume mounts");
    // The links are there after a remount.
    serve(disk.crashed(), |s, _| {
        assert_eq!(kind_size(s.handle(Request::Stat { path: "l".into(), follow: false })), (Kind::Symlink, 3));
        assert_eq!(kind_size(s.handle(Request::Stat { path: "l".into(), follow: true })), (Kind::File, 4));
    })
    .expect("the volume mounts again");
}

#[test]
fn opens_check_their_flags_and_the_kind_of_what_they_open() {
    with_service(MemDisk::new(SECTORS), |s| {
        done(s.handle(Request::CreateDir { path: "d".into() }));
        let h = opened(s.handle(Request::Open { flags: rw_create(), path: "f".into() }));
        done(s.handle(Request::Close { handle: h }));
        let exclusive = rw_create() | OpenFlags::EXCLUSIVE;
        assert_eq!(code(s.handle(Request::Open { flags: exclusive, path: "f".into() })), FsErrorCode::Exists);
        assert_eq!(code(s.handle(Request::Open { flags: rw_create(), path: "d".into() })), FsErrorCode::IsDirectory);
        let dir_only = OpenFlags::READ | OpenFlags::DIRECTORY;
        assert_eq!(code(s.handle(Request::Open { flags: dir_only, path: "f".into() })), FsErrorCode::NotDirectory);
        let create_read_only = OpenFlags::READ | OpenFlags::CREATE;
        assert_eq!(code(s.handle(Request::Open { flags: create_read_only, path: "g".into() })), FsErrorCode::Invalid);
        let d = s.handle(Request::Open { flags: dir_only, path: "d".into() });
        let Response::Opened { handle: d, kind: Kind::Directory, size: 0 } = d else { panic!("{}", d.brief()) };
        assert_eq!(code(s.handle(Request::Read { handle: d, offset: 0, len: 1 })), FsErrorCode::IsDirectory);
        assert_eq!(kind_size(s.handle(Request::StatHandle { handle: d })), (Kind::Directory, 0));
        let root = opened(s.handle(Request::Open { flags: dir_only, path: String::new() }));
        done(s.handle(Request::Close { handle: root }));
        let write_only = opened(s.handle(Request::Open { flags: OpenFlags::WRITE, path: "f".into() }));
        assert_eq!(code(s.handle(Request::Read { handle: write_only, offset: 0, len: 1 })), FsErrorCode::BadHandle);
        for (path, expected) in [
            ("../x", FsErrorCode::Invalid),
            ("a//b", FsErrorCode::Invalid),
            ("./f", FsErrorCode::Invalid),
            ("/f", FsErrorCode::Invalid),
            (&"n".repeat(256), FsErrorCode::NameTooLong),
            ("missing/f", FsErrorCode::NoEntry),
            ("f/g", FsErrorCode::NotDirectory),
        ] {
            assert_eq!(code(s.handle(Request::Open { flags: rw_create(), path: path.into() })), expected, "{path}");
        }
        let too_far = Request::Write { handle: write_only, offset: i32::MAX as u64, data: vec![1] };
        assert_eq!(code(s.handle(too_far)), FsErrorCode::Overflow);
    });
}

#[test]
fn removes_and_renames_keep_kinds_apart_and_handles_follow() {
    with_service(MemDisk::new(SECTORS), |s| {
        done(s.handle(Request::CreateDir { path: "d".into() }));
        done(s.handle(Request::CreateDir { path: "e".into() }));
        let h = opened(s.handle(Request::Open { flags: rw_create(), path: "d/f".into() }));
        assert_eq!(code(s.handle(Request::RemoveDir { path: "d".into() })), FsErrorCode::NotEmpty);
        assert_eq!(code(s.handle(Request::Unlink { path: "d".into() })), FsErrorCode::IsDirectory);
        assert_eq!(code(s.handle(Request::RemoveDir { path: "d/f".into() })), FsErrorCode::NotDirectory);
        assert_eq!(code(s.handle(Request::RemoveDir { path: String::new() })), FsErrorCode::Invalid);
        done(s.handle(Request::Rename { from: "d".into(), to: "e/d2".into() }));
        // The open file moved with its directory: what it writes lands at the new path.
        assert_eq!(s.handle(Request::Write { handle: h, offset: 0, data: b"moved".to_vec() }), Response::Written(5));
        done(s.handle(Request::Close { handle: h }));
        assert_eq!(kind_size(s.handle(Request::Stat { path: "e/d2/f".into(), follow: true })), (Kind::File, 5));
        assert_eq!(code(s.handle(Request::Stat { path: "d/f".into(), follow: true })), FsErrorCode::NoEntry);
        // A rename replaces a file.
        let g = opened(s.handle(Request::Open { flags: rw_create(), path: "g".into() }));
        done(s.handle(Request::Close { handle: g }));
        done(s.handle(Request::Rename { from: "e/d2/f".into(), to: "g".into() }));
        assert_eq!(kind_size(s.handle(Request::Stat { path: "g".into(), follow: true })), (Kind::File, 5));
        done(s.handle(Request::Unlink { path: "g".into() }));
        done(s.handle(Request::RemoveDir { path: "e/d2".into() }));
        let listing = s.handle(Request::ReadDir { start: 0, path: String::new() });
        let e = Entry { kind: Kind::Directory, size: 0, name: "e".into() };
        assert_eq!(listing, Response::Entries { entries: vec![e], end: true });
    });
}

#[test]
fn long_directories_are_listed_in_pages_and_handles_are_limited() {
    with_service(MemDisk::new(SECTORS), |s| {
        let mut names = Vec::new();
        for i in 0..MAX_OPEN {
            let name = format!("f{i:03}");
            opened(s.handle(Request::Open { flags: rw_create(), path: name.clone() }));
            names.push(name);
        }
        let one_more = Request::Open { flags: rw_create(), path: "extra".into() };
        assert_eq!(code(s.handle(one_more)), FsErrorCode::TooManyOpen);
        let mut listed = Vec::new();
        loop {
            let Response::Entries { entries, end } =
                s.handle(Request::ReadDir { start: listed.len() as u32, path: String::new() })
            else {
                panic!("a listing")
            };
            assert!(entries.len() <= MAX_ENTRIES);
            listed.extend(entries.into_iter().map(|e| e.name));
            if end {
                break;
            }
        }
        assert_eq!(listed, names);
        let blocks = SECTORS * SECTOR_SIZE as u64 / u64::from(BLOCK_SIZE);
        assert_eq!(s.handle(Request::Volume), Response::Volume { block_size: BLOCK_SIZE, blocks });
    });
}

#[test]
fn a_volume_survives_a_remount_and_a_foreign_disk_is_left_alone() {
    let disk = SharedDisk::new(SECTORS);
    let formatted = serve(disk.clone(), |s, report| {
        let h = opened(s.handle(Request::Open { flags: rw_create(), path: "kept".into() }));
        assert_eq!(s.handle(Request::Write { handle: h, offset: 0, data: b"data".to_vec() }), Response::Written(4));
        report.clone()
    });
    assert_eq!(formatted, Ok(MountReport { formatted: true, blocks: 256 }));
    // Written is durable: a power cut right after keeps it.
    serve(disk.crashed(), |s, report| {
        assert_eq!(report.to_string(), "mounted a littlefs volume of 256 blocks of 4096 bytes");
        let h = opened(s.handle(Request::Open { flags: OpenFlags::READ, path: "kept".into() }));
        assert_eq!(data(s.handle(Request::Read { handle: h, offset: 0, len: 10 })), b"data");
    })
    .expect("the volume mounts again");
    // A disk that grew: the volume grows into it.
    let mut bigger = disk.crashed().0.borrow().durable.clone();
    bigger.resize(2 * bigger.len(), 0);
    serve(SharedDisk::from_image(bigger, 1), |s, report| {
        assert_eq!(report.blocks, 512);
        let big = Request::Open { flags: rw_create(), path: "big".into() };
        let h = opened(s.handle(big));
        let chunk = vec![3; 32768];
        for i in 0..40 {
            let w = s.handle(Request::Write { handle: h, offset: APPEND, data: chunk.clone() });
            assert_eq!(w, Response::Written(32768), "write {i}: more than the old 1 MiB fits");
        }
    })
    .expect("the grown disk mounts");

    let mut foreign = MemDisk::new(SECTORS);
    foreign.write(0, &[0x5a; SECTOR_SIZE]).expect("a write");
    let before = foreign.image().to_vec();
    let Err(e) = serve(foreign.clone(), |_, _| ()) else { panic!("a foreign disk mounted") };
    assert!(e.contains("holds no littlefs volume") && e.contains("refusing to format it"), "{e}");
    assert_eq!(foreign.image(), &before[..]);
    let Err(e) = serve(MemDisk::new(8), |_, _| ()) else { panic!("a tiny disk mounted") };
    assert!(e.contains("a volume needs at least 128"), "{e}");
}

#[test]
fn a_disk_failure_is_told_and_breaks_the_service() {
    let disk = SharedDisk::new(SECTORS);
    with_service(disk.clone(), |s| {
        let h = opened(s.handle(Request::Open { flags: rw_create(), path: "f".into() }));
        assert!(s.broken.is_none());
        disk.0.borrow_mut().writes_left = Some(0);
        let big = vec![7; 2 * BLOCK_SIZE as usize];
        let failed = match s.handle(Request::Write { handle: h, offset: 0, data: big }) {
            Response::Error { code, message } => (code, message),
            other => panic!("the write did not fail: {}", other.brief()),
        };
        assert_eq!(failed.0, FsErrorCode::Io);
        assert!(failed.1.contains("the power is off"), "{}", failed.1);
        assert!(s.broken.is_some());
    });
}

/// A disk with a volatile write cache: writes wait in `pending` until a flush. `writes_left`
/// counts down the writes until a power cut; the cut keeps a random part of what was pending
/// (whole writes, parts of writes, or nothing), and every later operation fails.
#[derive(Debug)]
struct CacheDisk {
    durable: Vec<u8>,
    pending: Vec<(u64, Vec<u8>)>,
    writes_left: Option<u64>,
    writes: u64,
    cut: bool,
    seed: u64,
}

/// A [`CacheDisk`] that the test keeps a hold of while littlefs owns it.
#[derive(Debug, Clone)]
struct SharedDisk(Rc<RefCell<CacheDisk>>);

impl SharedDisk {
    fn new(sectors: u64) -> SharedDisk {
        SharedDisk::from_image(vec![0; sectors as usize * SECTOR_SIZE], 1)
    }

    fn from_image(durable: Vec<u8>, seed: u64) -> SharedDisk {
        let disk = CacheDisk { durable, pending: Vec::new(), writes_left: None, writes: 0, cut: false, seed };
        SharedDisk(Rc::new(RefCell::new(disk)))
    }

    /// The disk after a power cut now: what was flushed, and a random part of the rest.
    fn crashed(&self) -> SharedDisk {
        let mut disk = self.0.borrow_mut();
        let mut image = disk.durable.clone();
        let pending = disk.pending.clone();
        for (sector, data) in pending {
            let start = sector as usize * SECTOR_SIZE;
            match disk.random() % 4 {
                0 => {}
                1 => {
                    let sectors = data.len() / SECTOR_SIZE;
                    let kept = (disk.random() as usize % sectors) * SECTOR_SIZE;
                    image[start..start + kept].copy_from_slice(&data[..kept]);
                }
                _ => image[start..start + data.len()].copy_from_slice(&data),
            }
        }
        SharedDisk::from_image(image, disk.seed)
    }
}

impl CacheDisk {
    /// xorshift64: the cut's choices, repeatable from the seed.
    fn random(&mut self) -> u64 {
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        self.seed
    }
}

impl Disk for SharedDisk {
    type Error = String;

    fn sectors(&self) -> u64 {
        (self.0.borrow().durable.len() / SECTOR_SIZE) as u64
    }

    fn read(&mut self, sector: u64, count: u32) -> Result<Vec<u8>, String> {
        let disk = self.0.borrow();
        if disk.cut {
            return Err("the power is off".into());
        }
        let start = sector as usize * SECTOR_SIZE;
        let end = start + count as usize * SECTOR_SIZE;
        let mut out = disk.durable[start..end].to_vec();
        for (at, data) in &disk.pending {
            let (w_start, w_end) = (*at as usize * SECTOR_SIZE, *at as usize * SECTOR_SIZE + data.len());
            let (from, to) = (start.max(w_start), end.min(w_end));
            if from < to {
                out[from - start..to - start].copy_from_slice(&data[from - w_start..to - w_start]);
            }
        }
        Ok(out)
    }

    fn write(&mut self, sector: u64, data: &[u8]) -> Result<(), String> {
        let mut disk = self.0.borrow_mut();
        if disk.cut {
            return Err("the power is off".into());
        }
        if disk.writes_left == Some(0) {
            // The write in flight when the power goes is pending: the cut may keep it, drop
            // it, or keep its first sectors only.
            disk.cut = true;
            disk.pending.push((sector, data.to_vec()));
            return Err("the power is off".into());
        }
        if let Some(left) = &mut disk.writes_left {
            *left -= 1;
        }
        disk.writes += 1;
        disk.pending.push((sector, data.to_vec()));
        Ok(())
    }

    fn flush(&mut self) -> Result<(), String> {
        let mut disk = self.0.borrow_mut();
        if disk.cut {
            return Err("the power is off".into());
        }
        for (sector, data) in std::mem::take(&mut disk.pending) {
            let start = sector as usize * SECTOR_SIZE;
            disk.durable[start..start + data.len()].copy_from_slice(&data);
        }
        Ok(())
    }
}

/// What the volume holds: every path, a directory (`None`) or a file's bytes.
type Tree = BTreeMap<String, Option<Vec<u8>>>;

/// Everything on the volume, through the protocol.
fn tree<D: Disk>(s: &mut On<'_, '_, D>) -> Tree {
    let mut tree = Tree::new();
    let mut dirs = vec![String::new()];
    while let Some(dir) = dirs.pop() {
        let Response::Entries { entries, end: true } = s.handle(Request::ReadDir { start: 0, path: dir.clone() })
        else {
            panic!("listing {dir:?} in one page")
        };
        for entry in entries {
            let path = if dir.is_empty() { entry.name } else { format!("{dir}/{}", entry.name) };
            if entry.kind == Kind::Directory {
                tree.insert(path.clone(), None);
                dirs.push(path);
            } else {
                let h = opened(s.handle(Request::Open { flags: OpenFlags::READ, path: path.clone() }));
                let mut bytes = Vec::new();
                loop {
                    let chunk = data(s.handle(Request::Read { handle: h, offset: bytes.len() as u64, len: 32768 }));
                    if chunk.is_empty() {
                        break;
                    }
                    bytes.extend(chunk);
                }
                done(s.handle(Request::Close { handle: h }));
                assert_eq!(bytes.len() as u64, entry.size, "{path}: the listing's size");
                tree.insert(path, Some(bytes));
            }
        }
    }
    tree
}

fn content(i: usize, len: usize) -> Vec<u8> {
    (0..len).map(|j| (i * 31 + j * 7) as u8).collect()
}

/// One step of the power-cut workload: requests, and whether the tree after them is durable
/// (every step ends with a commit: a sync, a close, or a directory operation).
enum Step {
    /// Create or overwrite `path` with `data` (in two writes), sync after the first when
    /// `sync_between`, then close.
    WriteFile { path: String, data: Vec<u8>, sync_between: bool },
    /// Append to `path`.
    Append { path: String, data: Vec<u8> },
    /// Cut `path` to `size`.
    Truncate { path: String, size: u64 },
    /// A request answered `Done`.
    Plain(Request),
}

fn workload() -> Vec<Step> {
    let mut steps = vec![Step::Plain(Request::CreateDir { path: "docs".into() })];
    for (i, len) in [10, 700, 3000, 4096, 9000, 20000].into_iter().enumerate() {
        steps.push(Step::WriteFile { path: format!("docs/f{i}"), data: content(i, len), sync_between: i % 2 == 0 });
    }
    steps.extend([
        Step::Plain(Request::Rename { from: "docs/f1".into(), to: "docs/g1".into() }),
        Step::Plain(Request::Unlink { path: "docs/f2".into() }),
        Step::Plain(Request::CreateDir { path: "docs/sub".into() }),
        Step::Plain(Request::Rename { from: "docs/f3".into(), to: "docs/sub/f3".into() }),
        Step::WriteFile { path: "docs/f0".into(), data: content(10, 12000), sync_between: true },
        Step::Append { path: "docs/f4".into(), data: content(11, 5000) },
        Step::Truncate { path: "docs/f5".into(), size: 50 },
        Step::Plain(Request::Rename { from: "docs/f4".into(), to: "docs/f5".into() }),
        Step::Plain(Request::Unlink { path: "docs/sub/f3".into() }),
        Step::Plain(Request::RemoveDir { path: "docs/sub".into() }),
        Step::WriteFile { path: "last".into(), data: content(12, 6000), sync_between: false },
    ]);
    steps
}

/// Runs `step`'s requests on `s`; `None` when one failed (the power was cut).
fn run_step<D: Disk>(s: &mut On<'_, '_, D>, step: &Step) -> Option<()> {
    let ok = |r: Response| match r {
        Response::Error { .. } => None,
        other => Some(other),
    };
    match step {
        Step::WriteFile { path, data, sync_between } => {
            let flags = OpenFlags::WRITE | OpenFlags::CREATE | OpenFlags::TRUNCATE;
            let h = opened(ok(s.handle(Request::Open { flags, path: path.clone() }))?);
            let (first, second) = data.split_at(data.len() / 2);
            ok(s.handle(Request::Write { handle: h, offset: 0, data: first.to_vec() }))?;
            if *sync_between {
                ok(s.handle(Request::Sync { handle: h }))?;
            }
            ok(s.handle(Request::Write { handle: h, offset: first.len() as u64, data: second.to_vec() }))?;
            ok(s.handle(Request::Close { handle: h }))?;
        }
        Step::Append { path, data } => {
            let h = opened(ok(s.handle(Request::Open { flags: OpenFlags::WRITE, path: path.clone() }))?);
            ok(s.handle(Request::Write { handle: h, offset: APPEND, data: data.clone() }))?;
            ok(s.handle(Request::Close { handle: h }))?;
        }
        Step::Truncate { path, size } => {
            let h = opened(ok(s.handle(Request::Open { flags: OpenFlags::WRITE, path: path.clone() }))?);
            ok(s.handle(Request::SetSize { handle: h, size: *size }))?;
            ok(s.handle(Request::Close { handle: h }))?;
        }
        Step::Plain(request) => {
            ok(s.handle(request.clone()))?;
        }
    }
    Some(())
}

/// The trees a cut during `step` may leave, from `before`: each state the step commits on its
/// way, the last being the step's whole outcome.
fn outcomes(step: &Step, before: &Tree) -> Vec<Tree> {
    let with = |path: &str, node: Option<Vec<u8>>| {
        let mut tree = before.clone();
        tree.insert(path.to_owned(), node);
        tree
    };
    let file = |path: &str| before.get(path).cloned().flatten().expect("the model has the file");
    match step {
        // Opening creates or truncates the file at once, and each write is durable when it is
        // answered.
        Step::WriteFile { path, data, .. } => vec![
            with(path, Some(Vec::new())),
            with(path, Some(data[..data.len() / 2].to_vec())),
            with(path, Some(data.clone())),
        ],
        Step::Append { path, data } => {
            let mut grown = file(path);
            grown.extend_from_slice(data);
            vec![with(path, Some(grown))]
        }
        Step::Truncate { path, size } => {
            let mut cut = file(path);
            cut.truncate(*size as usize);
            vec![with(path, Some(cut))]
        }
        Step::Plain(request) => {
            let mut tree = before.clone();
            match request {
                Request::CreateDir { path } => {
                    tree.insert(path.clone(), None);
                }
                Request::Unlink { path } | Request::RemoveDir { path } => {
                    tree.remove(path);
                }
                Request::Rename { from, to } => {
                    let moved: Vec<String> =
                        tree.keys().filter(|k| *k == from || k.starts_with(&format!("{from}/"))).cloned().collect();
                    for old in moved {
                        let node = tree.remove(&old).expect("listed");
                        tree.insert(format!("{to}{}", &old[from.len()..]), node);
                    }
                }
                other => panic!("no model for {other:?}"),
            }
            vec![tree]
        }
    }
}

/// A tree told briefly: paths with sizes.
fn brief(tree: &Tree) -> String {
    let items: Vec<String> = tree
        .iter()
        .map(|(path, node)| match node {
            None => format!("{path}/"),
            Some(bytes) => format!("{path} ({} bytes)", bytes.len()),
        })
        .collect();
    items.join(", ")
}

/// A fresh disk whose power goes off at its `cut_at`th write, the cut's choices from `seed`.
fn disk_cut_at(cut_at: u64, seed: u64) -> SharedDisk {
    let disk = SharedDisk::new(SECTORS);
    disk.0.borrow_mut().seed = seed ^ cut_at.wrapping_mul(0x9e37_79b9);
    disk.0.borrow_mut().writes_left = Some(cut_at);
    disk
}

#[test]
fn power_cuts_at_every_write_keep_every_completed_step() {
    // The whole workload, uncut: the model is right, and how many writes it makes.
    let disk = SharedDisk::new(SECTORS);
    with_service(disk.clone(), |s| {
        let mut model = Tree::new();
        for step in workload() {
            run_step(s, &step).expect("no cut");
            model = outcomes(&step, &model).pop().expect("an outcome");
        }
        assert_eq!(tree(s), model);
    });
    let total = disk.0.borrow().writes;
    assert!(total > 50, "the workload wrote only {total} times");

    let (mut cut_in_steps, mut cut_while_formatting) = (0, 0);
    for cut_at in 0..=total {
        for seed in [0x9e37_79b9_7f4a_7c15, 0x2545_f491_4f6c_dd1d] {
            let disk = disk_cut_at(cut_at, seed);
            let ran = serve(disk.clone(), |s, _| {
                let mut completed = Tree::new();
                let mut acceptable = vec![completed.clone()];
                for step in workload() {
                    let after = outcomes(&step, &completed);
                    if run_step(s, &step).is_none() {
                        acceptable.extend(after);
                        break;
                    }
                    completed = after.last().expect("an outcome").clone();
                    acceptable = vec![completed.clone()];
                }
                acceptable
            });
            let acceptable = match ran {
                Ok(acceptable) => acceptable,
                Err(e) => {
                    // Cut while formatting: the disk holds nothing yet. It mounts empty
                    // (formatted again if still blank), or is refused as holding a broken
                    // superblock; either way nothing was acknowledged, so nothing is lost.
                    assert!(e.contains("the power is off"), "{e}");
                    cut_while_formatting += 1;
                    match serve(disk.crashed(), |s, _| tree(s)) {
                        Ok(found) => assert_eq!(found, Tree::new(), "cut at write {cut_at}"),
                        Err(e) => assert!(e.contains("refusing to format it"), "cut at write {cut_at}: {e}"),
                    }
                    continue;
                }
            };
            assert!(disk.0.borrow().cut || cut_at == total, "the cut at write {cut_at} never came");
            serve(disk.crashed(), |s, _| {
                let found = tree(s);
                assert!(
                    acceptable.contains(&found),
                    "cut at write {cut_at} (seed {seed:#x}): found [{}]; acceptable: {}",
                    brief(&found),
                    acceptable.iter().map(|t| format!("[{}]", brief(t))).collect::<Vec<_>>().join(" or ")
                );
                // The volume still works.
                let h = opened(s.handle(Request::Open { flags: rw_create(), path: "after".into() }));
                let w = s.handle(Request::Write { handle: h, offset: 0, data: b"ok".to_vec() });
                assert_eq!(w, Response::Written(2));
                assert_eq!(kind_size(s.handle(Request::Stat { path: "after".into(), follow: true })), (Kind::File, 2));
            })
            .unwrap_or_else(|e| panic!("cut at write {cut_at}: {e}"));
            cut_in_steps += 1;
        }
    }
    eprintln!("{total} writes; {cut_in_steps} cuts in the workload, {cut_while_formatting} while formatting");
    assert_eq!(cut_in_steps + cut_while_formatting, 2 * (total + 1));
    assert!(cut_in_steps > cut_while_formatting * 5, "{cut_in_steps} cuts in the workload");
}

/// A [`MemDisk`] that counts its reads.
struct CountingDisk(MemDisk, Rc<RefCell<u64>>);

impl Disk for CountingDisk {
    type Error = String;
    fn sectors(&self) -> u64 {
        self.0.sectors()
    }
    fn read(&mut self, sector: u64, count: u32) -> Result<Vec<u8>, String> {
        *self.1.borrow_mut() += 1;
        self.0.read(sector, count)
    }
    fn write(&mut self, sector: u64, data: &[u8]) -> Result<(), String> {
        self.0.write(sector, data)
    }
    fn flush(&mut self) -> Result<(), String> {
        self.0.flush()
    }
}

#[test]
fn blocks_read_once_are_served_from_memory() {
    let reads = Rc::new(RefCell::new(0));
    with_service(CountingDisk(MemDisk::new(SECTORS), reads.clone()), |s| {
        let h = opened(s.handle(Request::Open { flags: rw_create(), path: "f".into() }));
        let data: Vec<u8> = (0..3 * BLOCK_SIZE).map(|i| (i % 7) as u8).collect();
        assert_eq!(s.handle(Request::Write { handle: h, offset: 0, data: data.clone() }), Response::Written(12288));
        let mut counts = Vec::new();
        for _ in 0..3 {
            let before = *reads.borrow();
            assert_eq!(s.handle(Request::Read { handle: h, offset: 0, len: 12288 }), Response::Data(data.clone()));
            counts.push(*reads.borrow() - before);
        }
        // What the first read brought in (and the write kept up to date) serves the others.
        assert_eq!(counts[1..], [0, 0], "disk reads per file read: {counts:?}");
    });
}
