//! An ordinary Rust program: nothing in it knows about Mica.

fn main() {
    println!("hello from a Mica component");
    let args: Vec<String> = std::env::args().collect();
    println!("args: {args:?}");
    let mut vars: Vec<(String, String)> = std::env::vars().collect();
    vars.sort();
    for (k, v) in vars {
        println!("env: {k}={v}");
    }
    let start = std::time::Instant::now();
    std::thread::sleep(std::time::Duration::from_millis(10));
    println!("slept at least 10 ms: {}", start.elapsed() >= std::time::Duration::from_millis(10));
}
