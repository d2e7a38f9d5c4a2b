//! The network stack component's parts: the frame queues smoltcp runs on ([`device`]) and the
//! stack serving the sockets protocol ([`stack`]). `main.rs` connects them to the network driver
//! and to the stack's clients over IPC.

pub mod device;
pub mod stack;

#[cfg(test)]
mod tests;
