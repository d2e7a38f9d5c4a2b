//! The boot-test binary: every scenario as a libtest trial (`tcg::panic`, `kvm::basic_boot`, ...).
//!
//! Run through `cargo xtask test`, which builds the kernel and passes it in `MICA_KERNEL`.

use std::process::ExitCode;
use std::sync::Arc;

use libtest_mimic::{Arguments, Failed, Trial};
use mica_launch::{GuestArch, KvmProbe, find_qemu_for};

fn main() -> ExitCode {
    let args = Arguments::from_args();
    let kernel = match qemu_tests::kernel_from_env() {
        Ok(kernel) => kernel,
        Err(msg) => {
            eprintln!("error: {msg}");
            return ExitCode::FAILURE;
        }
    };
    let qemu = match mica_launch::find_qemu() {
        Ok(qemu) => qemu,
        Err(err) => {
            eprintln!("error: {err}");
            return ExitCode::FAILURE;
        }
    };
    let plan = qemu_tests::plan(&KvmProbe::detect());
    for note in &plan.notes {
        println!("qemu-tests: {note}");
    }
    let paths = Arc::new((qemu, kernel));
    let mut trials: Vec<Trial> = plan
        .trials
        .into_iter()
        .map(|trial| {
            let paths = Arc::clone(&paths);
            let ignored = trial.skip.is_some();
            Trial::test(trial.name.clone(), move || {
                qemu_tests::run_trial(&paths.0, &paths.1, &trial).map_err(Failed::from)
            })
            .with_ignored_flag(ignored)
        })
        .collect();
    // Two boots on one disk image with a kill between them (see `power_cut`).
    let cut = Arc::clone(&paths);
    trials.push(Trial::test("tcg::kv_store_survives_power_cut", move || {
        let report = qemu_tests::power_cut::run(&cut.0, &cut.1, &qemu_tests::power_cut::KV).map_err(Failed::from)?;
        println!("power cut: {report}");
        Ok(())
    }));
    // The same for files an unmodified program synced through the file system service.
    let cut = Arc::clone(&paths);
    trials.push(Trial::test("tcg::synced_files_survive_power_cut", move || {
        let report = qemu_tests::power_cut::run(&cut.0, &cut.1, &qemu_tests::power_cut::FILES).map_err(Failed::from)?;
        println!("power cut: {report}");
        Ok(())
    }));
    // A component restarted 200 times leaves the kernel's memory where it found it (see `memory`).
    let crash = Arc::clone(&paths);
    trials.push(Trial::test("tcg::restarts_return_all_memory", move || {
        let report = qemu_tests::memory::run(&crash.0, &crash.1).map_err(Failed::from)?;
        println!("restarts: {report}");
        Ok(())
    }));
    // A real HTTP client on this host against the component web server (see `http`).
    let web = Arc::clone(&paths);
    trials.push(Trial::test("tcg::http_over_virtio_net", move || {
        let report = qemu_tests::http::run(&web.0, &web.1).map_err(Failed::from)?;
        println!("http: {report}");
        Ok(())
    }));
    // TCP through the network stack component, two servers at once (see `sockets`).
    let net = Arc::clone(&paths);
    trials.push(Trial::test("tcg::tcp_through_the_network_stack_component", move || {
        let report = qemu_tests::sockets::run(&net.0, &net.1).map_err(Failed::from)?;
        println!("sockets: {report}");
        Ok(())
    }));
    // Unmodified std::net programs on wasi:sockets: two servers, a client, a refusal (see `std_sockets`).
    let std_net = Arc::clone(&paths);
    trials.push(Trial::test("tcg::std_net_programs_on_wasi_sockets", move || {
        let report = qemu_tests::std_sockets::run(&std_net.0, &std_net.1).map_err(Failed::from)?;
        println!("std sockets: {report}");
        Ok(())
    }));
    // Random drivers and services killed under HTTP load for 60 s (see `chaos`).
    let chaos = Arc::clone(&paths);
    trials.push(Trial::test("tcg::chaos_kills_drivers_and_services_under_load", move || {
        let report = qemu_tests::chaos::run(&chaos.0, &chaos.1).map_err(Failed::from)?;
        println!("chaos: {report}");
        Ok(())
    }));
    // The key-value store behind the web server, across a reboot (see `http::run_kv`).
    let kv = Arc::clone(&paths);
    trials.push(Trial::test("tcg::http_kv_survives_reboot", move || {
        let report = qemu_tests::http::run_kv(&kv.0, &kv.1).map_err(Failed::from)?;
        println!("http-kv: {report}");
        Ok(())
    }));
    // The file system service on virtio-blk, across a reboot (see `files`).
    let files = Arc::clone(&paths);
    trials.push(Trial::test("tcg::files_survive_reboot", move || {
        let report = qemu_tests::files::run(&files.0, &files.1).map_err(Failed::from)?;
        println!("files: {report}");
        Ok(())
    }));
    // An unmodified std program's files, served by the file system service (see `files::run_notes`).
    let notes = Arc::clone(&paths);
    trials.push(Trial::test("tcg::std_fs_in_granted_directories", move || {
        let report = qemu_tests::files::run_notes(&notes.0, &notes.1).map_err(Failed::from)?;
        println!("notes: {report}");
        Ok(())
    }));
    // A bundle of wasm, compiled by the system at boot (see `late`).
    let late = Arc::clone(&paths);
    trials.push(Trial::test("tcg::late_binding_compiles_in_the_system", move || {
        let report = qemu_tests::late::run(&late.0, &late.1).map_err(Failed::from)?;
        println!("late binding: {report}");
        Ok(())
    }));
    // The module store across boots, CPUs and a damaged entry (see `late::run_store`).
    let store = Arc::clone(&paths);
    trials.push(Trial::test("tcg::module_store_keeps_compiled_code_across_boots", move || {
        let report = qemu_tests::late::run_store(&store.0, &store.1).map_err(Failed::from)?;
        println!("module store: {report}");
        Ok(())
    }));
    // A full module store evicts what this system does not reference (see `late::run_store_eviction`).
    let evict = Arc::clone(&paths);
    trials.push(Trial::test("tcg::full_module_store_evicts_what_no_manifest_references", move || {
        let report = qemu_tests::late::run_store_eviction(&evict.0, &evict.1).map_err(Failed::from)?;
        println!("module store eviction: {report}");
        Ok(())
    }));
    // A bundle with no native code but the compiler's (see `late::run_no_native`).
    let no_native = Arc::clone(&paths);
    trials.push(Trial::test("tcg::bundle_without_native_code_boots_drivers_and_components", move || {
        let report = qemu_tests::late::run_no_native(&no_native.0, &no_native.1).map_err(Failed::from)?;
        println!("no native code: {report}");
        Ok(())
    }));
    // A power cut while the module store writes (see `late::run_store_power_cut`).
    let cut = Arc::clone(&paths);
    trials.push(Trial::test("tcg::module_store_survives_power_cut", move || {
        let report = qemu_tests::late::run_store_power_cut(&cut.0, &cut.1).map_err(Failed::from)?;
        println!("module store power cut: {report}");
        Ok(())
    }));
    // The aarch64 kernel on QEMU's virt (see `aarch64`).
    let arm = match (qemu_tests::kernel_from(qemu_tests::aarch64::KERNEL_ENV), find_qemu_for(GuestArch::Aarch64)) {
        (Ok(kernel), Ok(qemu)) => Ok(Arc::new((qemu, kernel))),
        (Err(e), _) => Err(e),
        (_, Err(e)) => Err(e.to_string()),
    };
    for scenario in qemu_tests::aarch64::scenarios() {
        let arm = arm.clone();
        trials.push(Trial::test(format!("aarch64::{}", scenario.name), move || {
            let paths = arm.map_err(Failed::from)?;
            qemu_tests::aarch64::run(&paths.0, &paths.1, &scenario).map_err(Failed::from)
        }));
    }
    // The virtio-net driver and httpd on virt, asked by a real HTTP client on this host.
    let arm_http = arm.clone();
    trials.push(Trial::test("aarch64::http_over_virtio_net", move || {
        let paths = arm_http.map_err(Failed::from)?;
        let report = qemu_tests::http::run_aarch64(&paths.0, &paths.1).map_err(Failed::from)?;
        println!("http on aarch64: {report}");
        Ok(())
    }));
    // An unmodified std program's files on virt, the same wasm (see `files::run_notes_aarch64`).
    let arm_notes = arm.clone();
    trials.push(Trial::test("aarch64::std_fs_in_granted_directories", move || {
        let paths = arm_notes.map_err(Failed::from)?;
        let report = qemu_tests::files::run_notes_aarch64(&paths.0, &paths.1).map_err(Failed::from)?;
        println!("notes on aarch64: {report}");
        Ok(())
    }));
    // Chaos on virt: the same system and load, the same kills (see `chaos`).
    trials.push(Trial::test("aarch64::chaos_kills_drivers_and_services_under_load", move || {
        let paths = arm.map_err(Failed::from)?;
        let report = qemu_tests::chaos::run_aarch64(&paths.0, &paths.1).map_err(Failed::from)?;
        println!("chaos on aarch64: {report}");
        Ok(())
    }));
    libtest_mimic::run(&args, trials).exit_code()
}
