//! IPC between components: channels whose ends are capabilities in each component instance's
//! handle table. The logic is plain and host-tested: [`state`] (the operations), made of
//! [`space`] (each instance's handle table), [`channels`] (channels and their ends' holders),
//! [`registry`] (the manifest's connections), [`wakes`] (results for parked threads), [`watch`]
//! (threads waiting on several ends) and [`errors`] (error values). `blocking` puts it behind the kernel's lock and gives each
//! instance its `mica_runtime::ipc::IpcPort`, parking and waking threads through the scheduler.

pub mod channels;
pub mod errors;
pub mod registry;
pub mod space;
pub mod state;
pub mod wakes;
pub mod watch;

#[cfg(target_os = "none")]
pub mod blocking;
