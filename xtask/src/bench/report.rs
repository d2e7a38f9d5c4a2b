//! The boot benchmark's results: JSON for machines, a markdown table for people.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};
use serde::Serialize;

use super::stats::{Summary, human};
use crate::machine::Machine;

/// Everything `bench boot` measured, per architecture.
#[derive(Debug, Serialize)]
pub struct Reports {
    /// One report per architecture, in the order asked for.
    pub arches: Vec<Report>,
}

/// Everything `bench boot` measured on one architecture.
#[derive(Debug, Serialize)]
pub struct Report {
    /// The guest architecture.
    pub arch: &'static str,
    /// The host.
    pub machine: Machine,
    /// When, in seconds since the Unix epoch.
    pub unix_time_s: u64,
    /// The Mica kernel image that was measured (release build).
    pub kernel: String,
    /// The kernel command line Mica booted with.
    pub cmdline: String,
    /// Boots per measured row.
    pub runs: u32,
    /// Wall time, QEMU start to exit.
    pub wall: Vec<WallRow>,
    /// Guest instructions to ready.
    pub instructions: Instructions,
}

/// One kernel under one accelerator.
#[derive(Debug, Serialize)]
pub struct WallRow {
    /// `empty` or `mica`.
    pub kernel: &'static str,
    /// `tcg` or `kvm`.
    pub accel: &'static str,
    /// `TCG`, `hardware KVM (kvm_intel)`, `software KVM (kvm_pvm)`, ...
    pub accel_label: String,
    /// The measurements, unless skipped.
    pub summary: Option<Summary>,
    /// Why this row was not measured.
    pub skipped: Option<String>,
}

/// Instruction counts from `mica: ready (tsc_since_entry=N)` under `-icount shift=0`.
#[derive(Debug, Serialize)]
pub struct Instructions {
    /// The QEMU options that make the TSC count instructions.
    pub qemu_options: &'static str,
    /// One count per boot.
    pub counts: Vec<u64>,
    /// Whether every boot counted the same.
    pub identical: bool,
}

fn kernel_label(kernel: &str) -> &'static str {
    match kernel {
        "empty" => "empty kernel (QEMU's own cost)",
        _ => "Mica default system (release)",
    }
}

impl Reports {
    /// The architectures side by side, then each one's own tables.
    pub fn markdown(&self) -> String {
        let mut md = String::new();
        if self.arches.len() > 1 {
            let _ = writeln!(md, "## Boot per architecture (TCG)\n");
            let header: Vec<&str> = self.arches.iter().map(|r| r.arch).collect();
            let _ = writeln!(md, "| figure | {} |", header.join(" | "));
            let _ = writeln!(md, "|---|{}", "---:|".repeat(header.len()));
            for kernel in ["empty", "mica"] {
                let cells: Vec<String> = self
                    .arches
                    .iter()
                    .map(|r| {
                        r.wall
                            .iter()
                            .find(|w| w.kernel == kernel && w.accel == "tcg")
                            .and_then(|w| w.summary.as_ref())
                            .map_or("-".to_owned(), |s| human(s.median_s))
                    })
                    .collect();
                let _ = writeln!(md, "| {}, median wall clock | {} |", kernel_label(kernel), cells.join(" | "));
            }
            let cells: Vec<String> = self
                .arches
                .iter()
                .map(|r| r.instructions.counts.first().map_or("-".to_owned(), |n| grouped(*n)))
                .collect();
            let _ = writeln!(md, "| guest instructions, first instruction to ready | {} |\n", cells.join(" | "));
        }
        for report in &self.arches {
            md.push_str(&report.markdown());
            md.push('\n');
        }
        md
    }
}

impl Report {
    /// The report as markdown.
    pub fn markdown(&self) -> String {
        let mut md = String::new();
        let m = &self.machine;
        // Writing to a String cannot fail.
        let _ = writeln!(md, "## Boot time on {}: QEMU start to exit ({} boots each)\n", self.arch, self.runs);
        let _ = writeln!(md, "Machine: {} ({} CPUs), {}, KVM: {}\n", m.cpu_model, m.cpus, m.qemu, m.kvm);
        md.push_str("| kernel | accelerator | median | p10 | p90 | min | max |\n");
        md.push_str("|---|---|---:|---:|---:|---:|---:|\n");
        for row in &self.wall {
            let kernel = kernel_label(row.kernel);
            match (&row.summary, &row.skipped) {
                (Some(s), _) => {
                    let _ = writeln!(
                        md,
                        "| {kernel} | {} | {} | {} | {} | {} | {} |",
                        row.accel_label,
                        human(s.median_s),
                        human(s.p10_s),
                        human(s.p90_s),
                        human(s.min_s),
                        human(s.max_s)
                    );
                }
                (None, skipped) => {
                    let why = skipped.as_deref().unwrap_or("not measured");
                    let _ = writeln!(md, "| {kernel} | {} | skipped: {why} | | | | |", row.accel_label);
                }
            }
        }
        let ins = &self.instructions;
        let _ = writeln!(md, "\n## Guest instructions, Mica's first instruction to ready ({})\n", ins.qemu_options);
        md.push_str("| boot | instructions |\n|---:|---:|\n");
        for (i, n) in ins.counts.iter().enumerate() {
            let _ = writeln!(md, "| {} | {} |", i + 1, grouped(*n));
        }
        let _ = writeln!(
            md,
            "\n{} boots: {}",
            ins.counts.len(),
            if ins.identical { "identical counts" } else { "counts differ" }
        );
        md
    }
}

/// Every `PREFIX op=OP bytes=B n=N ns=T` line a benchmark component printed: (op, bytes, n, ns).
pub(super) fn op_lines(serial: &str, prefix: &str) -> Vec<(String, u64, u64, u64)> {
    serial
        .lines()
        .filter_map(|line| {
            let rest = &line[line.find(prefix)? + prefix.len()..];
            let op = rest.split_whitespace().find_map(|w| w.strip_prefix("op="))?.to_owned();
            let get = |key: &str| crate::linux_guest::field(rest, key).ok();
            Some((op, get("bytes")?, get("n")?, get("ns")?))
        })
        .collect()
}

/// `1234567` as `1,234,567`.
pub(super) fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Prints a benchmark's `markdown` table and writes its `report` as `out_dir/file` (JSON).
pub fn publish(out_dir: &Path, file: &str, markdown: &str, report: &impl Serialize) -> Result<()> {
    println!("{markdown}");
    let json = out_dir.join(file);
    std::fs::write(&json, serde_json::to_string_pretty(report)? + "\n")
        .with_context(|| format!("writing {}", json.display()))?;
    println!("Written to {}", json.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn markdown_has_rows_and_skips() {
        let summary = Summary::of(&[Duration::from_millis(15); 10]);
        let report = Report {
            arch: "x86_64",
            machine: Machine::sample("not usable: /dev/kvm does not exist"),
            unix_time_s: 0,
            kernel: "k".into(),
            cmdline: String::new(),
            runs: 10,
            wall: vec![
                WallRow { kernel: "empty", accel: "tcg", accel_label: "TCG".into(), summary, skipped: None },
                WallRow {
                    kernel: "mica",
                    accel: "kvm",
                    accel_label: "KVM".into(),
                    summary: None,
                    skipped: Some("/dev/kvm does not exist".into()),
                },
            ],
            instructions: Instructions {
                qemu_options: "-accel tcg -icount shift=0",
                counts: vec![1_234_567; 3],
                identical: true,
            },
        };
        let md = report.markdown();
        assert!(md.contains("| empty kernel (QEMU's own cost) | TCG | 15.0 ms | 15.0 ms |"), "{md}");
        assert!(md.contains("| Mica default system (release) | KVM | skipped: /dev/kvm does not exist |"), "{md}");
        assert!(md.contains("| 3 | 1,234,567 |"), "{md}");
        assert!(md.contains("identical counts"), "{md}");
        let json = serde_json::to_value(&report).expect("serializes");
        assert_eq!(json["wall"][0]["summary"]["runs"], 10);
        assert_eq!(json["machine"]["cpu_model"], "AMD EPYC");
        assert_eq!(json["arch"], "x86_64");

        // Two architectures: a side-by-side table first.
        let reports = Reports { arches: vec![report, aarch64_sample()] };
        let md = reports.markdown();
        assert!(md.contains("| figure | x86_64 | aarch64 |"), "{md}");
        assert!(md.contains("| empty kernel (QEMU's own cost), median wall clock | 15.0 ms | 15.0 ms |"), "{md}");
        assert!(md.contains("| guest instructions, first instruction to ready | 1,234,567 | 1,234,567 |"), "{md}");
        assert!(md.contains("## Boot time on aarch64"), "{md}");
    }

    /// An aarch64 report: one TCG row and one count.
    fn aarch64_sample() -> Report {
        let summary = Summary::of(&[Duration::from_millis(15); 10]);
        Report {
            arch: "aarch64",
            machine: Machine::sample("none"),
            unix_time_s: 0,
            kernel: "k".into(),
            cmdline: String::new(),
            runs: 10,
            wall: vec![WallRow { kernel: "empty", accel: "tcg", accel_label: "TCG".into(), summary, skipped: None }],
            instructions: Instructions {
                qemu_options: "-accel tcg -icount shift=0",
                counts: vec![1_234_567],
                identical: true,
            },
        }
    }

    #[test]
    fn numbers_are_grouped() {
        assert_eq!(grouped(0), "0");
        assert_eq!(grouped(999), "999");
        assert_eq!(grouped(1000), "1,000");
        assert_eq!(grouped(14_000_009), "14,000,009");
    }
}
