//! A hostile component: it calls every host interface it is granted with random arguments,
//! handles, sizes and timeouts, to show that nothing it does reaches past its own sandbox. The
//! kernel must refuse what is wrong with an error value, never panic or hang, and the
//! well-behaved components beside it must finish with correct results.
//!
//! Usage: `hostile [CALLS [SEED]]` (default 2000 calls, a seed from the clock). It prints
//! `hostile: seed S, N calls` first, so that a run can be repeated, and `hostile: N calls made
//! (K succeeded, R refused)` at the end.
//!
//! What it calls, with what:
//! - `mica:kernel/ipc`: every function, on handles it holds, handles it closed, small numbers and
//!   any number; messages of any size (past the limit too) carrying handles it holds or not;
//!   spans anywhere in its memory to read from, and into a scratch buffer of its own or past its
//!   memory (wrapping past 4 GiB too) to write to; timeouts of zero or a millisecond, never
//!   unbounded. It may be a client of connection `echo` and sends the server anything.
//! - `mica:hw`: claims of devices by any name (it is granted none), register and interrupt calls
//!   on any handle, DMA buffers of any size (over its limit too), reads and writes anywhere in
//!   them, mapped into a region of its own memory or past its end.
//! - WASI: the clocks, and randomness in bounded amounts.
//!
//! It runs in safe Rust on the SDK's raw bindings (`mica::raw`): nothing here is undefined
//! behaviour for the component itself, so anything that goes wrong is the kernel's.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::time::{Duration, Instant, SystemTime};

use mica::raw::{device, dma, ipc, irq, mmio};

/// A small, fast, seeded generator (xorshift64*): the run is the seed's.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// Bytes of the scratch buffer spans may write into.
const SCRATCH: usize = 64 * 1024;
/// Bytes of the region DMA buffers may be mapped into (page-aligned inside a larger block).
const MAP_REGION: usize = 256 * 1024;
/// A wasm page.
#[cfg(target_arch = "wasm32")]
const WASM_PAGE: u64 = 64 * 1024;

/// What the run holds and counts.
struct Hostile {
    rng: Rng,
    /// IPC handles it was given (some closed since).
    ipc: Vec<u32>,
    /// Its end of connection `echo`, once connected: picked often, so the server gets its share.
    echo: Option<u32>,
    /// Hardware handles it was given (some freed since).
    hw: Vec<u32>,
    /// Call ids it received.
    calls: Vec<u64>,
    scratch: Vec<u8>,
    /// Page-aligned offset of the map region, and the block that holds it.
    region: u32,
    _block: Vec<u8>,
    ok: u64,
    refused: u64,
}

impl Hostile {
    fn new(seed: u64) -> Hostile {
        let block = vec![0u8; MAP_REGION + 4096];
        let start = block.as_ptr() as usize as u32;
        let region = start.next_multiple_of(4096);
        Hostile {
            rng: Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1),
            ipc: Vec::new(),
            echo: None,
            hw: Vec::new(),
            calls: Vec::new(),
            scratch: vec![0; SCRATCH],
            region,
            _block: block,
            ok: 0,
            refused: 0,
        }
    }

    fn count<T, E>(&mut self, result: Result<T, E>) -> Option<T> {
        match result {
            Ok(value) => {
                self.ok += 1;
                Some(value)
            }
            Err(_) => {
                self.refused += 1;
                None
            }
        }
    }

    /// A handle: one it holds (or held), a small number, or any number.
    fn pick(&mut self, held: &[u32]) -> u32 {
        match self.rng.below(8) {
            0..5 if !held.is_empty() => held[self.rng.below(held.len() as u64) as usize],
            0..7 => self.rng.below(64) as u32,
            _ => self.rng.next() as u32,
        }
    }

    fn ipc_handle(&mut self) -> u32 {
        if let Some(echo) = self.echo
            && self.rng.chance(30)
        {
            return echo;
        }
        let held = std::mem::take(&mut self.ipc);
        let h = self.pick(&held);
        self.ipc = held;
        h
    }

    fn hw_handle(&mut self) -> u32 {
        let held = std::mem::take(&mut self.hw);
        let h = self.pick(&held);
        self.hw = held;
        h
    }

    /// A size: mostly small, sometimes around the kernel's limits, sometimes anything.
    fn size(&mut self) -> u32 {
        match self.rng.below(10) {
            0..6 => self.rng.below(256) as u32,
            6..8 => self.rng.below(70_000) as u32,
            8 => 65_536 + self.rng.below(16) as u32,
            _ => self.rng.next() as u32,
        }
    }

    fn timeout(&mut self) -> Option<u64> {
        Some(if self.rng.chance(70) { 0 } else { 1_000_000 })
    }

    /// The linear memory's size now.
    #[cfg(target_arch = "wasm32")]
    fn memory_size() -> u64 {
        core::arch::wasm32::memory_size(0) as u64 * WASM_PAGE
    }

    /// (The component runs as wasm32 only; host builds just check the code.)
    #[cfg(not(target_arch = "wasm32"))]
    fn memory_size() -> u64 {
        u64::from(u32::MAX) + 1
    }

    /// A span to read from: anywhere, inside the memory or not.
    fn read_span(&mut self) -> ipc::Span {
        let memory = Self::memory_size();
        let offset = if self.rng.chance(70) { self.rng.below(memory) as u32 } else { self.rng.next() as u32 };
        ipc::Span { offset, len: self.size() }
    }

    /// A span the kernel may write into: inside the scratch buffer, or wholly past the memory's
    /// end (where it must be refused), its length wrapping past 4 GiB sometimes.
    fn write_span(&mut self) -> ipc::Span {
        if self.rng.chance(60) {
            let start = self.rng.below(SCRATCH as u64) as usize;
            let len = self.rng.below((SCRATCH - start) as u64 + 1) as u32;
            ipc::Span { offset: self.scratch.as_ptr() as usize as u32 + start as u32, len }
        } else {
            let memory = Self::memory_size();
            let past = u32::try_from(memory).unwrap_or(u32::MAX);
            let offset = past.saturating_add(self.rng.below(u64::from(u32::MAX - past) + 1) as u32);
            ipc::Span { offset, len: if self.rng.chance(50) { self.size() } else { u32::MAX } }
        }
    }

    fn message(&mut self) -> ipc::Message {
        let len = self.size().min(70_000) as usize;
        let bytes = (0..len).map(|_| self.rng.next() as u8).collect();
        let handles = (0..self.rng.below(4)).map(|_| self.ipc_handle()).collect();
        ipc::Message { bytes, handles }
    }

    fn rights(&mut self) -> ipc::Rights {
        let mut rights = ipc::Rights::empty();
        for flag in [ipc::Rights::READ, ipc::Rights::WRITE, ipc::Rights::GRANT] {
            if self.rng.chance(50) {
                rights |= flag;
            }
        }
        rights
    }

    fn call_id(&mut self) -> u64 {
        if !self.calls.is_empty() && self.rng.chance(60) {
            self.calls[self.rng.below(self.calls.len() as u64) as usize]
        } else {
            self.rng.next() % 64
        }
    }

    fn keep(&mut self, received: &ipc::Received) {
        self.ipc.extend(&received.message.handles);
        self.calls.extend(received.call);
    }

    /// One call of `mica:kernel/ipc`.
    fn ipc_call(&mut self) {
        let h = self.ipc_handle();
        let timeout = self.timeout();
        match self.rng.below(20) {
            0 => {
                let names = ["echo", "nope", "", "echo\0", "an-awfully-long-name-that-no-manifest-has-ever-named"];
                let name = names[self.rng.below(names.len() as u64) as usize];
                if let Some(h) = self.count(ipc::connect(name)) {
                    self.ipc.push(h);
                    if name == "echo" {
                        self.echo = Some(h);
                    }
                }
            }
            1 => {
                if let Some((a, b)) = self.count(ipc::create_channel()) {
                    self.ipc.extend([a, b]);
                }
            }
            2 => {
                let message = self.message();
                let result = ipc::send(h, &message, timeout);
                if let Err(e) = &result {
                    self.ipc.extend(&e.returned);
                }
                self.count(result);
            }
            3 => {
                if let Some(received) = self.count(ipc::receive(h, timeout)) {
                    self.keep(&received);
                }
            }
            4 => {
                let message = self.message();
                match ipc::call(h, &message, timeout) {
                    Ok(reply) => {
                        self.ok += 1;
                        self.ipc.extend(reply.handles);
                    }
                    Err(e) => {
                        self.refused += 1;
                        self.ipc.extend(e.returned);
                    }
                }
            }
            5 => {
                let (call, message) = (self.call_id(), self.message());
                let result = ipc::reply(h, call, &message);
                if let Err(e) = &result {
                    self.ipc.extend(&e.returned);
                }
                self.count(result);
            }
            6 => {
                let span = self.read_span();
                self.count(ipc::send_span(h, span, timeout));
            }
            7 => {
                let (bytes, handles) = (self.write_span(), self.write_span());
                self.count(ipc::receive_into(h, bytes, handles, timeout));
            }
            8 => {
                let (request, bytes, handles) = (self.read_span(), self.write_span(), self.write_span());
                self.count(ipc::call_into(h, request, bytes, handles, timeout));
            }
            9 => {
                let (call, span) = (self.call_id(), self.read_span());
                self.count(ipc::reply_span(h, call, span));
            }
            10 => {
                let (call, message, bytes, handles) =
                    (self.call_id(), self.read_span(), self.write_span(), self.write_span());
                let (replied, received) = ipc::reply_receive(h, call, message, bytes, handles, timeout);
                self.count(replied);
                self.count(received);
            }
            11 => {
                let (bytes, handles) = (self.write_span(), self.write_span());
                self.count(ipc::collect(bytes, handles));
            }
            12 => {
                if let Some(e) = ipc::last_error() {
                    self.ipc.extend(e.returned);
                }
            }
            13 => {
                let rights = self.rights();
                if let Some(h) = self.count(ipc::duplicate(h, rights)) {
                    self.ipc.push(h);
                }
            }
            14 => {
                self.count(ipc::rights_of(h));
            }
            15 => {
                self.count(ipc::close(h));
            }
            _ => {
                // A plain exchange on a channel of its own, so that the successful paths run too.
                if let Some((a, b)) = self.count(ipc::create_channel()) {
                    let message = self.message();
                    if self.count(ipc::send(a, &message, Some(0))).is_some()
                        && let Some(received) = self.count(ipc::receive(b, Some(0)))
                    {
                        self.keep(&received);
                    }
                    self.ipc.extend([a, b]);
                }
            }
        }
    }

    /// One call of `mica:hw`.
    fn hw_call(&mut self) {
        let h = self.hw_handle();
        let width = [0u8, 1, 2, 3, 4, 8, 16][self.rng.below(7) as usize];
        let offset = if self.rng.chance(70) { self.rng.below(8192) as u32 } else { self.rng.next() as u32 };
        match self.rng.below(14) {
            0 => {
                let _ = device::granted();
            }
            1 => {
                let names = ["virtio-rng.0", "virtio-blk.0", "virtio-net.7", "", "virtio-rng.999999999999"];
                let name = names[self.rng.below(names.len() as u64) as usize];
                if let Some(claimed) = self.count(device::claim(name)) {
                    self.hw.extend([claimed.window, claimed.irq]);
                }
            }
            2 => {
                self.count(mmio::read(h, offset, width));
            }
            3 => {
                let value = self.rng.next();
                self.count(mmio::write(h, offset, width, value));
            }
            4 => {
                self.count(irq::wait(h, Some(0)));
            }
            5 | 6 => {
                let size = if self.rng.chance(80) { self.rng.below(64 * 1024) as u32 + 1 } else { self.size() };
                if let Some(buffer) = self.count(dma::allocate(size)) {
                    self.hw.push(buffer);
                }
            }
            7 => {
                self.count(dma::bus_address(h));
                self.count(dma::size(h));
            }
            8 => {
                let len = self.size().min(256 * 1024);
                self.count(dma::read(h, offset, len));
            }
            9 => {
                let data: Vec<u8> = (0..self.size().min(70_000)).map(|_| self.rng.next() as u8).collect();
                self.count(dma::write(h, offset, &data));
            }
            10 => {
                self.count(dma::load(h, offset, width));
                let value = self.rng.next();
                self.count(dma::store(h, offset, width, value));
            }
            11 => {
                // Into its own region (page-aligned, a buffer's size fitting or not), or past the
                // memory's end.
                let at = if self.rng.chance(70) {
                    self.region + 4096 * self.rng.below((MAP_REGION / 4096) as u64) as u32
                } else {
                    u32::try_from(Self::memory_size())
                        .unwrap_or(u32::MAX)
                        .saturating_add(4096 * self.rng.below(64) as u32)
                };
                self.count(dma::map_into_memory(h, at));
            }
            _ => {
                self.count(dma::free(h));
            }
        }
    }

    /// One WASI call.
    fn wasi_call(&mut self) {
        match self.rng.below(3) {
            0 => {
                let _ = Instant::now();
            }
            1 => {
                let _ = SystemTime::now();
            }
            _ => {
                // Randomness, through std's hasher keys (wasi:random).
                let _ = RandomState::new().build_hasher().finish();
            }
        }
        self.ok += 1;
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let calls = match args.first().map(|a| a.parse::<u64>()) {
        None => 2000,
        Some(Ok(n)) => n,
        Some(Err(_)) => {
            eprintln!("CALLS must be a number, not {:?}", args[0]);
            std::process::exit(2);
        }
    };
    let seed = match args.get(1).map(|a| a.parse::<u64>()) {
        None => {
            let mut hasher = RandomState::new().build_hasher();
            hasher.write_u128(SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_nanos());
            hasher.finish()
        }
        Some(Ok(seed)) => seed,
        Some(Err(_)) => {
            eprintln!("SEED must be a number, not {:?}", args[1]);
            std::process::exit(2);
        }
    };
    println!("hostile: seed {seed}, {calls} calls");
    let mut hostile = Hostile::new(seed);
    let start = Instant::now();
    for _ in 0..calls {
        match hostile.rng.below(10) {
            0..6 => hostile.ipc_call(),
            6..9 => hostile.hw_call(),
            _ => hostile.wasi_call(),
        }
    }
    println!(
        "hostile: {calls} calls made ({} succeeded, {} refused) in {:?}",
        hostile.ok,
        hostile.refused,
        start.elapsed().max(Duration::from_millis(1))
    );
}
