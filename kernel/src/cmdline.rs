//! The kernel command line: space-separated `key=value` words.
//!
//! Mica reads the keys it knows (among them `virtio_mmio.device=`, with which a VMM such as
//! `mica-vmm` describes its virtio-mmio transports) and keeps the rest for whoever needs them. A known key with a bad value is an error
//! that names the word, the value and what is accepted: a typo must not be silently ignored.

use core::fmt;

use log::LevelFilter;

/// Log levels accepted by `log=`.
pub const LOG_LEVELS: &str = "off, error, warn, info, debug, trace";

/// Timer tick rates accepted by `tick_hz=`.
pub const TICK_HZ_RANGE: core::ops::RangeInclusive<u32> = 10..=10_000;

/// The default timer tick rate.
pub const DEFAULT_TICK_HZ: u32 = 100;
/// How many times `restart = "on-failure"` restarts a component unless `restarts=` says.
pub const DEFAULT_RESTARTS: u32 = 3;
/// The first restart's wait unless `restart_backoff_ms=` says.
pub const DEFAULT_RESTART_BACKOFF_MS: u64 = 100;

/// A command-line word Mica could not accept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CmdlineError<'a> {
    /// The key.
    pub key: &'a str,
    /// The value given.
    pub value: &'a str,
    /// What would have been accepted.
    pub expected: &'static str,
}

impl fmt::Display for CmdlineError<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "kernel command line: {}={}: expected {}", self.key, self.value, self.expected)
    }
}

/// The most `virtio_mmio.device=` words the kernel takes.
pub const MAX_MMIO_DEVICES: usize = 8;

/// A virtio-mmio transport the command line describes (Linux's and Firecracker's
/// `virtio_mmio.device=<size>@<base>:<gsi>`; a VMM without ACPI uses it to tell the guest).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MmioDevice {
    /// The window's physical address.
    pub base: u64,
    /// Its size in bytes.
    pub size: u32,
    /// Its interrupt's GSI.
    pub gsi: u32,
}

/// `<size>@<base>:<gsi>[:<id>]`: size in bytes (decimal or `0x` hex, or with a `K` suffix), base
/// in `0x` hex or decimal, GSI in decimal.
pub fn parse_mmio_device(value: &str) -> Option<MmioDevice> {
    let number = |s: &str| match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    };
    let (size, rest) = value.split_once('@')?;
    let mut parts = rest.split(':');
    let (base, gsi) = (parts.next()?, parts.next()?);
    let size = match size.strip_suffix(['K', 'k']) {
        Some(kib) => number(kib)?.checked_mul(1024)?,
        None => number(size)?,
    };
    let size = u32::try_from(size).ok().filter(|s| (0x100..=0x1000).contains(s))?;
    let base = number(base).filter(|b| b % 4 == 0)?;
    Some(MmioDevice { base, size, gsi: gsi.parse().ok()? })
}

/// The settings the command line gives the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelArgs<'a> {
    /// The maximum log level (`log=`; default `info`).
    pub log: LevelFilter,
    /// The boot-test scenario to run instead of the default system (`test=`).
    pub test: Option<&'a str>,
    /// The timer tick rate in Hz (`tick_hz=`).
    pub tick_hz: u32,
    /// Stop the system this many milliseconds after its components start, whatever is still
    /// running (`stop_after_ms=`; default: run until every component has finished).
    pub stop_after_ms: Option<u64>,
    /// The virtio-mmio transports the command line describes (`virtio_mmio.device=`), in order.
    pub mmio_devices: [Option<MmioDevice>; MAX_MMIO_DEVICES],
    /// How many times `restart = "on-failure"` starts a failed component again (`restarts=`;
    /// default 3).
    pub restarts: u32,
    /// The wait before a component's first restart, doubling with each further one up to 5 s
    /// (`restart_backoff_ms=`; default 100, 0 for none).
    pub restart_backoff_ms: u64,
    /// Fault injection (`chaos=SEED`, with `chaos_ms=` and `chaos_gap_ms=`): kill random
    /// restartable components of the system for a while (see `wasm::chaos`).
    pub chaos: Option<Chaos>,
    line: &'a str,
}

/// The fault injector's settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Chaos {
    /// Seeds the choice of victims and moments (`chaos=`).
    pub seed: u64,
    /// How long it kills for, in ms (`chaos_ms=`; default 60000).
    pub run_ms: u64,
    /// The mean wait between two kills, in ms (`chaos_gap_ms=`; default 1000): each wait is
    /// drawn from half to one and a half times it. 0: no kills, only the memory reports (for a
    /// load test without faults).
    pub gap_ms: u64,
}

impl<'a> KernelArgs<'a> {
    /// Parses the command line.
    pub fn parse(line: &'a str) -> Result<KernelArgs<'a>, CmdlineError<'a>> {
        let mut args = KernelArgs {
            log: LevelFilter::Info,
            test: None,
            tick_hz: DEFAULT_TICK_HZ,
            stop_after_ms: None,
            mmio_devices: [None; MAX_MMIO_DEVICES],
            restarts: DEFAULT_RESTARTS,
            restart_backoff_ms: DEFAULT_RESTART_BACKOFF_MS,
            chaos: None,
            line,
        };
        let (mut chaos_ms, mut chaos_gap_ms) = (60_000, 1_000);
        for word in line.split_ascii_whitespace() {
            let (key, value) = word.split_once('=').unwrap_or((word, ""));
            match key {
                "log" => {
                    args.log = parse_level(value).ok_or(CmdlineError { key, value, expected: LOG_LEVELS })?;
                }
                "test" => {
                    if value.is_empty() {
                        return Err(CmdlineError { key, value, expected: "a scenario name" });
                    }
                    args.test = Some(value);
                }
                "tick_hz" => {
                    let expected = "a whole number of Hz from 10 to 10000";
                    args.tick_hz = value.parse().ok().filter(|hz| TICK_HZ_RANGE.contains(hz)).ok_or(CmdlineError {
                        key,
                        value,
                        expected,
                    })?;
                }
                "stop_after_ms" => {
                    let expected = "a whole number of milliseconds, at least 1";
                    let ms = value.parse().ok().filter(|ms| *ms > 0);
                    args.stop_after_ms = Some(ms.ok_or(CmdlineError { key, value, expected })?);
                }
                "restarts" => {
                    let expected = "a whole number of restarts from 0 to 100000";
                    let n = value.parse().ok().filter(|n| *n <= 100_000);
                    args.restarts = n.ok_or(CmdlineError { key, value, expected })?;
                }
                "restart_backoff_ms" => {
                    let expected = "a whole number of milliseconds from 0 to 5000";
                    let ms = value.parse().ok().filter(|ms| *ms <= 5_000);
                    args.restart_backoff_ms = ms.ok_or(CmdlineError { key, value, expected })?;
                }
                "chaos" => {
                    let expected = "a seed: a whole number from 0 to 2^64-1";
                    let seed = value.parse().ok().ok_or(CmdlineError { key, value, expected })?;
                    args.chaos = Some(Chaos { seed, run_ms: 0, gap_ms: 0 });
                }
                "chaos_ms" => {
                    let expected = "a whole number of milliseconds from 1 to 86400000";
                    let ms = value.parse().ok().filter(|ms| (1..=86_400_000).contains(ms));
                    chaos_ms = ms.ok_or(CmdlineError { key, value, expected })?;
                }
                "chaos_gap_ms" => {
                    let expected =
                        "0 (no kills, only the memory reports) or a whole number of milliseconds from 10 to 600000";
                    let ms = value.parse().ok().filter(|ms| *ms == 0 || (10..=600_000).contains(ms));
                    chaos_gap_ms = ms.ok_or(CmdlineError { key, value, expected })?;
                }
                "virtio_mmio.device" => {
                    let expected = "<size>@<base>:<gsi>, e.g. 512@0xd0000000:5 (size 0x100 to 0x1000, at most 8 words)";
                    let device = parse_mmio_device(value).ok_or(CmdlineError { key, value, expected })?;
                    let slot = args.mmio_devices.iter_mut().find(|d| d.is_none());
                    *slot.ok_or(CmdlineError { key, value, expected })? = Some(device);
                }
                _ => {}
            }
        }
        if let Some(chaos) = &mut args.chaos {
            (chaos.run_ms, chaos.gap_ms) = (chaos_ms, chaos_gap_ms);
        }
        Ok(args)
    }

    /// The words Mica does not interpret, in order.
    pub fn others(&self) -> impl Iterator<Item = &'a str> {
        self.line.split_ascii_whitespace().filter(|w| {
            let key = w.split_once('=').map_or(*w, |(k, _)| k);
            !matches!(
                key,
                "log"
                    | "test"
                    | "tick_hz"
                    | "stop_after_ms"
                    | "restarts"
                    | "restart_backoff_ms"
                    | "chaos"
                    | "chaos_ms"
                    | "chaos_gap_ms"
                    | "virtio_mmio.device"
            )
        })
    }
}

fn parse_level(value: &str) -> Option<LevelFilter> {
    Some(match value {
        "off" => LevelFilter::Off,
        "error" => LevelFilter::Error,
        "warn" => LevelFilter::Warn,
        "info" => LevelFilter::Info,
        "debug" => LevelFilter::Debug,
        "trace" => LevelFilter::Trace,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let a = KernelArgs::parse("").expect("parse");
        assert_eq!(a.log, LevelFilter::Info);
        assert_eq!(a.test, None);
        assert_eq!(a.tick_hz, DEFAULT_TICK_HZ);
        assert_eq!((a.restarts, a.restart_backoff_ms), (3, 100));
    }

    #[test]
    fn chaos_settings() {
        assert_eq!(KernelArgs::parse("quiet").expect("parse").chaos, None);
        let a = KernelArgs::parse("chaos_gap_ms=250 chaos=42 chaos_ms=5000").expect("parse");
        assert_eq!(a.chaos, Some(Chaos { seed: 42, run_ms: 5000, gap_ms: 250 }));
        assert_eq!(
            KernelArgs::parse("chaos=7").expect("parse").chaos,
            Some(Chaos { seed: 7, run_ms: 60_000, gap_ms: 1000 })
        );
        // Without `chaos=`, the other two change nothing.
        assert_eq!(KernelArgs::parse("chaos_ms=10").expect("parse").chaos, None);
        assert_eq!(KernelArgs::parse("chaos=1 chaos_gap_ms=0").expect("parse").chaos.map(|c| c.gap_ms), Some(0));
        for bad in ["chaos=x", "chaos=", "chaos_ms=0", "chaos_gap_ms=5"] {
            let e = KernelArgs::parse(bad).unwrap_err();
            assert_eq!(bad.split_once('=').map(|(k, _)| k), Some(e.key), "{bad}");
        }
        assert_eq!(KernelArgs::parse("chaos=1 chaos_ms=9 x").expect("parse").others().collect::<Vec<_>>(), vec!["x"]);
    }

    #[test]
    fn restart_policy_knobs() {
        let a = KernelArgs::parse("restarts=200 restart_backoff_ms=0 quiet").expect("parse");
        assert_eq!((a.restarts, a.restart_backoff_ms), (200, 0));
        assert_eq!(a.others().collect::<Vec<_>>(), vec!["quiet"]);
        let e = KernelArgs::parse("restarts=many").unwrap_err();
        assert_eq!(
            e.to_string(),
            "kernel command line: restarts=many: expected a whole number of restarts from 0 to 100000"
        );
        assert!(KernelArgs::parse("restart_backoff_ms=6000").is_err());
    }

    #[test]
    fn known_keys_and_others() {
        let a = KernelArgs::parse("  virtio_mmio.device=512@0xfeb00e00:12 log=debug test=heap tick_hz=250 quiet")
            .expect("parse");
        assert_eq!(a.log, LevelFilter::Debug);
        assert_eq!(a.test, Some("heap"));
        assert_eq!(a.tick_hz, 250);
        assert_eq!(a.others().collect::<Vec<_>>(), vec!["quiet"]);
        assert_eq!(a.mmio_devices[0], Some(MmioDevice { base: 0xfeb0_0e00, size: 512, gsi: 12 }));
        assert_eq!(a.mmio_devices[1], None);
    }

    #[test]
    fn virtio_mmio_words_are_read_and_checked() {
        assert_eq!(parse_mmio_device("4K@0xd0000000:5:3"), Some(MmioDevice { base: 0xd000_0000, size: 4096, gsi: 5 }));
        assert_eq!(parse_mmio_device("0x200@3489660928:7"), Some(MmioDevice { base: 0xd000_0000, size: 512, gsi: 7 }));
        for bad in ["", "512", "512@0xd0000000", "512@zz:5", "512@0xd0000000:x", "16@0xd0000000:5", "512@0xd0000001:5"]
        {
            assert_eq!(parse_mmio_device(bad), None, "{bad}");
        }
        let line = "virtio_mmio.device=512@0xd0000000:5 virtio_mmio.device=512@0xd0001000:6";
        let a = KernelArgs::parse(line).expect("parse");
        assert_eq!(a.mmio_devices.iter().flatten().count(), 2);
        assert_eq!(a.mmio_devices[1].map(|d| d.gsi), Some(6));
        let e = KernelArgs::parse("virtio_mmio.device=512").unwrap_err();
        assert_eq!(e.key, "virtio_mmio.device");
        assert!(e.to_string().contains("expected <size>@<base>:<gsi>"), "{e}");
        let nine = "virtio_mmio.device=512@0xd0000000:5 ".repeat(9);
        assert!(KernelArgs::parse(&nine).is_err(), "a ninth word is refused, not dropped");
    }

    #[test]
    fn bad_values_name_the_word() {
        let e = KernelArgs::parse("log=loud").unwrap_err();
        assert_eq!((e.key, e.value), ("log", "loud"));
        assert_eq!(e.to_string(), "kernel command line: log=loud: expected off, error, warn, info, debug, trace");
        assert!(KernelArgs::parse("tick_hz=5").is_err());
        assert!(KernelArgs::parse("tick_hz=fast").is_err());
        assert_eq!(KernelArgs::parse("stop_after_ms=2500").unwrap().stop_after_ms, Some(2500));
        assert_eq!(KernelArgs::parse("").unwrap().stop_after_ms, None);
        let e = KernelArgs::parse("stop_after_ms=0").unwrap_err();
        assert_eq!(
            e.to_string(),
            "kernel command line: stop_after_ms=0: expected a whole number of milliseconds, at least 1"
        );
        assert!(KernelArgs::parse("stop_after_ms=soon").is_err());
        assert!(KernelArgs::parse("test=").is_err());
        assert!(KernelArgs::parse("log").is_err());
    }
}
