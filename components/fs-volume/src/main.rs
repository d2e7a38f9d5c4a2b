//! `fs-volume`: the file system service's volumes on the host, through the same code the `fs`
//! component runs (`fs::volume` and `fs::service`), so an image it builds is exactly what `fs`
//! mounts. `cargo xtask volume ...` runs it.
//!
//! - `fs-volume build DIR IMAGE SIZE`: a new image of SIZE bytes (`16MiB`, ...) holding DIR's
//!   files and directories;
//! - `fs-volume list IMAGE`: every path on the volume, with file sizes;
//! - `fs-volume extract IMAGE DIR`: copies the volume's files into DIR (which must not exist).

use std::path::Path;
use std::process::ExitCode;

use fs_volume::{build, extract, list, parse_size};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let words: Vec<&str> = args.iter().map(String::as_str).collect();
    let result = match words.as_slice() {
        ["build", dir, image, size] => parse_size(size).and_then(|size| build(Path::new(dir), Path::new(image), size)),
        ["list", image] => list(Path::new(image)).map(|entries| {
            for (path, size) in entries {
                match size {
                    Some(size) => println!("{path}\t{size}"),
                    None => println!("{path}/"),
                }
            }
        }),
        ["extract", image, dir] => extract(Path::new(image), Path::new(dir)),
        _ => Err("usage: fs-volume build DIR IMAGE SIZE | list IMAGE | extract IMAGE DIR".to_owned()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fs-volume: {e}");
            ExitCode::FAILURE
        }
    }
}
