//! `mica-vmm`: see [`mica_vmm::cli`].

fn main() -> std::process::ExitCode {
    mica_vmm::cli::main(std::env::args_os())
}
