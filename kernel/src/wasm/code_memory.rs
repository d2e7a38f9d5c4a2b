//! Publishing compiled component code through the kernel's page tables: Wasmtime writes the
//! code into heap memory (read-write, never executable), then asks for it to become
//! read-execute (never writable). W^X holds throughout.

use alloc::format;

use mica_runtime::wasmtime::{self, CustomCodeMemory};

use crate::arch::paging::{self, PageSize};
use crate::mem::Protection;
use crate::mem::range::PAGE_SIZE;

/// Code memory backed by the kernel's page tables.
#[derive(Debug)]
pub struct KernelCodeMemory;

fn reprotect(ptr: *const u8, len: usize, prot: Protection) -> wasmtime::Result<()> {
    let start = ptr as u64;
    if start % PAGE_SIZE != 0 || len as u64 % PAGE_SIZE != 0 {
        return Err(wasmtime::format_err!("code region {start:#x}+{len:#x} is not page-aligned"));
    }
    for page in (start..start + len as u64).step_by(PAGE_SIZE as usize) {
        paging::protect(page, PageSize::Small, prot)
            .map_err(|e| wasmtime::Error::msg(format!("code page {page:#x}: {e}")))?;
    }
    Ok(())
}

impl CustomCodeMemory for KernelCodeMemory {
    fn required_alignment(&self) -> usize {
        PAGE_SIZE as usize
    }

    fn publish_executable(&self, ptr: *const u8, len: usize) -> wasmtime::Result<()> {
        reprotect(ptr, len, Protection::READ | Protection::EXEC)
    }

    fn unpublish_executable(&self, ptr: *const u8, len: usize) -> wasmtime::Result<()> {
        reprotect(ptr, len, Protection::READ | Protection::WRITE)
    }
}
