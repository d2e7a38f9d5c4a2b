//! IPC between components: channels whose ends are capabilities in each component instance's
//! handle table. [`state`] is the logic (host-tested); `blocking` puts it behind the kernel's
//! lock and gives each instance its `mica_runtime::ipc::IpcPort`, parking and waking threads
//! through the scheduler.

pub mod state;

#[cfg(target_os = "none")]
pub mod blocking;
