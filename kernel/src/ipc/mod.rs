//! IPC between components: channels whose ends are capabilities in each component instance's
//! handle table. [`state`] is the logic (host-tested); `port` gives each instance its
//! `mica_runtime::ipc::IpcPort`, parking and waking threads through the scheduler.

pub mod state;

#[cfg(target_os = "none")]
pub mod port;
