//! `notes`: a plain std program with nothing of Mica in it. It uses `std::fs` on the
//! directories its manifest grants (`/data`, writable, and `/shared`, the same volume
//! read-only), and prints what it sees:
//!
//! - `notes: boot N`: how many times it has run on this volume (a counter in `/data/boots`);
//! - `notes: NAME ok` for each step: write and sync, read back, times (modified, set), append, seek, list, rename,
//!   remove, refusals (`..` above the grant, writes through the read-only grant).
//!
//! Any unexpected result ends it with an error (exit 1).
//!
//! With an argument it is the power-cut test's program instead:
//!
//! - `fill`: writes `/data/f-0`, `/data/f-1`, ... (each of a size and content of its own), syncs
//!   each and prints `notes: synced f-N`, until the power is cut;
//! - `check`: after the cut, reads them back in order and prints `notes: f-0..f-M intact` for
//!   the files whose content is whole (the one being written at the cut may be short), or
//!   `notes: no files`.
//!
//! And `bench` runs `cargo xtask bench fs`'s phases ([`mica_workloads::files`]) in
//! `/data/bench`, printing `fs-bench op=NAME bytes=B n=N ns=T` per phase.

use std::fs::{self, File, OpenOptions};
use std::io::{self, ErrorKind, Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::time::{Duration, SystemTime};

fn main() {
    let result = match std::env::args().nth(1).as_deref() {
        None => run(),
        Some("fill") => fill(),
        Some("check") => check_files(),
        Some("bench") => bench(),
        Some(other) => Err(io::Error::other(format!("unknown mode {other:?}: expected fill, check or bench"))),
    };
    if let Err(e) = result {
        eprintln!("notes: {e}");
        std::process::exit(1);
    }
}

fn check(ok: bool, what: &str) -> io::Result<()> {
    if ok { Ok(()) } else { Err(io::Error::other(format!("{what}: unexpected result"))) }
}

fn run() -> io::Result<()> {
    let boots = match fs::read_to_string("/data/boots") {
        Ok(text) => text.trim().parse::<u64>().map_err(|e| io::Error::other(format!("/data/boots: {e}")))?,
        Err(e) if e.kind() == ErrorKind::NotFound => 0,
        Err(e) => return Err(e),
    } + 1;
    fs::write("/data/boots", format!("{boots}\n"))?;
    println!("notes: boot {boots}");

    fs::create_dir_all("/data/notes/old")?;
    let path = Path::new("/data/notes/today.txt");
    let mut file = File::create(path)?;
    let line = format!("boot {boots}: a line written with std::fs\n");
    for _ in 0..1000 {
        file.write_all(line.as_bytes())?;
    }
    file.sync_all()?;
    drop(file);
    println!("notes: write ok");

    let text = fs::read_to_string(path)?;
    check(text.len() == 1000 * line.len() && text.starts_with(&line), "read back")?;
    check(fs::metadata(path)?.len() == text.len() as u64 && fs::metadata(path)?.is_file(), "metadata")?;
    println!("notes: read ok");

    // The volume keeps times: the file was written after the first of January 2020, and
    // setting its modification time shows in its metadata.
    let written = fs::metadata(path)?.modified()?;
    check(written > SystemTime::UNIX_EPOCH + Duration::from_secs(1_577_836_800), "modification time")?;
    let then = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
    File::options().write(true).open(path)?.set_modified(then)?;
    check(fs::metadata(path)?.modified()? == then, "set modification time")?;
    println!("notes: times ok");

    let mut file = OpenOptions::new().append(true).open(path)?;
    file.write_all(b"the end\n")?;
    drop(file);
    let mut file = File::open(path)?;
    file.seek(SeekFrom::End(-8))?;
    let mut end = String::new();
    file.read_to_string(&mut end)?;
    check(end == "the end\n", "append and seek")?;
    println!("notes: append ok");

    let kept = format!("/data/notes/old/boot-{boots}.txt");
    fs::rename(path, &kept)?;
    check(!path.exists() && Path::new(&kept).exists(), "rename")?;
    let mut names: Vec<String> = fs::read_dir("/data/notes/old")?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<io::Result<_>>()?;
    names.sort();
    check(names.len() as u64 == boots, "one kept file per boot")?;
    println!("notes: list ok ({})", names.join(", "));

    fs::write("/data/notes/scratch", b"x")?;
    fs::remove_file("/data/notes/scratch")?;
    check(fs::metadata("/data/notes/scratch").map_err(|e| e.kind()).err() == Some(ErrorKind::NotFound), "remove")?;
    println!("notes: remove ok");

    // The read-only grant of the same volume: reads work, every change is refused.
    check(fs::read_to_string("/shared/boots")? == format!("{boots}\n"), "read through /shared")?;
    let refused = fs::write("/shared/boots", b"0\n").err().map(|e| e.kind());
    check(refused == Some(ErrorKind::ReadOnlyFilesystem), "write through /shared")?;
    // Nothing above a granted directory.
    check(fs::read_to_string("/data/../data/boots").is_err(), "`..` above /data")?;
    println!("notes: refusals ok");
    Ok(())
}

/// The content of `/data/f-N`: its size and bytes follow from N.
fn content(n: u64) -> Vec<u8> {
    let len = 100 + (n * 7919) % 20_000;
    (0..len).map(|i| (n.wrapping_mul(31).wrapping_add(i * 7) % 251) as u8).collect()
}

fn fill() -> io::Result<()> {
    for n in 0.. {
        let mut file = File::create(format!("/data/f-{n}"))?;
        file.write_all(&content(n))?;
        file.sync_all()?;
        println!("notes: synced f-{n}");
    }
    Ok(())
}

fn check_files() -> io::Result<()> {
    let mut whole = 0;
    loop {
        match fs::read(format!("/data/f-{whole}")) {
            Ok(bytes) if bytes == content(whole) => whole += 1,
            Ok(bytes) => {
                println!("notes: f-{whole} has {} of its {} bytes", bytes.len(), content(whole).len());
                break;
            }
            Err(e) if e.kind() == ErrorKind::NotFound => break,
            Err(e) => return Err(e),
        }
    }
    if whole == 0 {
        println!("notes: no files");
    } else {
        println!("notes: f-0..f-{} intact", whole - 1);
    }
    // Nothing past the first file that is not whole: files are written one after another.
    if Path::new(&format!("/data/f-{}", whole + 1)).exists() {
        return Err(io::Error::other(format!("f-{} exists after f-{whole}, which is not whole", whole + 1)));
    }
    Ok(())
}

fn bench() -> io::Result<()> {
    let start = std::time::Instant::now();
    let phases = mica_workloads::files::run(Path::new("/data/bench"), &mut || start.elapsed().as_nanos() as u64)?;
    for p in phases {
        println!("fs-bench op={} bytes={} n={} ns={}", p.op, p.bytes, p.n, p.elapsed);
    }
    Ok(())
}
