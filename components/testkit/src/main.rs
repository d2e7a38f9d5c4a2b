//! Behaviours for boot tests, chosen by the first argument:
//! `exit N` (exit with status N), `panic`, `oom` (allocate until memory runs out), `spin` (loop
//! forever), `count N` (print N lines and succeed), `random` (print random-derived values),
//! `calls N` (call `wasi:clocks/monotonic-clock.now` N times, printing only at the end), `sieve N`
//! (print how many primes are below N, by the sieve of Eratosthenes), `crash-until N` (trap
//! while `MICA_RESTARTS` is below N, then succeed), and the faults in [`faults`]: `oob-load`,
//! `oob-store`, `oob-copy`, `grow`, `divide-by-zero`, `unreachable`, `stack-overflow`,
//! `touch MIB`, `statics TAG`.

#[cfg(target_arch = "wasm32")]
mod faults;
/// The faults need wasm; built for the host (its unit tests), there are none.
#[cfg(not(target_arch = "wasm32"))]
mod faults {
    pub fn run(_behaviour: &str, _arg: &str) -> bool {
        false
    }
}

use std::hint::black_box;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| args.get(i).map(String::as_str).unwrap_or("");
    match arg(0) {
        "exit" => {
            let code: i32 = arg(1).parse().unwrap_or(1);
            println!("exiting with status {code}");
            std::process::exit(code);
        }
        "panic" => panic!("testkit: deliberate panic"),
        "oom" => {
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                let mut block = vec![0u8; 1 << 20];
                block[4095] = 1;
                hoard.push(black_box(block));
                println!("holding {} MiB", hoard.len());
            }
        }
        "spin" => {
            println!("spinning forever");
            let mut x: u64 = 0;
            loop {
                x = black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
            }
        }
        "count" => {
            let n: u32 = arg(1).parse().unwrap_or(3);
            for i in 1..=n {
                println!("count {i}");
            }
        }
        "random" => {
            let m: std::collections::HashMap<u32, u32> = (0..4).map(|i| (i, i)).collect();
            println!("hashmap with {} entries (seeded by wasi:random)", m.len());
        }
        "calls" => {
            let n: u64 = arg(1).parse().unwrap_or(0);
            let start = std::time::Instant::now();
            let mut last = start;
            for _ in 0..n {
                last = black_box(std::time::Instant::now());
            }
            println!("{n} host calls made (clock advanced: {})", last > start || n == 0);
        }
        "sieve" => {
            let n: usize = arg(1).parse().unwrap_or(1_000_000);
            println!("{} primes below {n}", mica_workloads::sieve(n));
        }
        "bitscan" => {
            let n: usize = arg(1).parse().unwrap_or(100_000);
            let rounds: u32 = arg(2).parse().unwrap_or(10);
            println!("bit scan of {n} words x {rounds}: {}", mica_workloads::bit_scan(n, rounds));
        }
        "crash-until" => {
            let n: u32 = arg(1).parse().unwrap_or(1);
            let restarts: u32 = std::env::var("MICA_RESTARTS").ok().and_then(|r| r.parse().ok()).unwrap_or(0);
            if restarts < n {
                std::process::abort();
            }
            println!("restarted {restarts} times; done");
        }
        other if faults::run(other, arg(1)) => {}
        other => {
            eprintln!("testkit: unknown behaviour {other:?}");
            std::process::exit(2);
        }
    }
}
