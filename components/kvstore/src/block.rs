//! [`BlockDisk`]: a [`Disk`] behind the block driver's connection (`mica:device` block protocol).

use mica::ipc::{Channel, ErrorCode};
use mica_device::block::{self, MAX_DATA_BYTES, MAX_SECTORS_PER_REQUEST, Request, Response};

use crate::disk::{Disk, SECTOR_SIZE};

/// The disk behind the block driver's connection.
#[derive(Debug)]
pub struct BlockDisk {
    channel: Channel,
    sectors: u64,
    /// The component, for its messages.
    user: String,
}

impl BlockDisk {
    /// Connects to the driver and asks for the disk's size; fails for a read-only disk. `user`
    /// names the component in the errors.
    pub fn connect(user: &str) -> Result<BlockDisk, String> {
        let channel = Channel::connect(block::CONNECTION)
            .map_err(|e| format!("cannot connect to the block driver (connection {:?}): {e}", block::CONNECTION))?;
        let mut disk = BlockDisk { channel, sectors: 0, user: user.to_owned() };
        match disk.request("info", &Request::Info)? {
            Response::Info { read_only: true, .. } => Err(format!("the disk is read-only; {user} needs to write")),
            Response::Info { sectors, sector_size, .. } if sector_size as usize == SECTOR_SIZE => {
                disk.sectors = sectors;
                Ok(disk)
            }
            Response::Info { sector_size, .. } => {
                Err(format!("the disk has {sector_size}-byte sectors; {user} needs {SECTOR_SIZE}-byte ones"))
            }
            other => Err(format!("info: expected the disk's size, got {}", other.brief())),
        }
    }

    /// Makes `request`. When the driver has gone (it crashed or was killed, and its supervisor
    /// starts it again), connects again and makes the request once more: reads, writes and
    /// flushes may be made twice, which changes nothing.
    fn request(&mut self, what: &str, request: &Request) -> Result<Response, String> {
        let encoded = request.encode();
        let bytes = match self.channel.call(&encoded) {
            Err(e) if e.code == ErrorCode::PeerClosed => {
                eprintln!("{}: the block driver has gone ({e}); connecting again", self.user);
                self.channel = Channel::connect(block::CONNECTION).map_err(|e| {
                    format!(
                        "{what}: the block driver has gone, and connecting {:?} again failed: {e}",
                        block::CONNECTION
                    )
                })?;
                self.channel.call(&encoded)
            }
            answered => answered,
        }
        .map_err(|e| format!("{what}: {e}"))?;
        Response::decode(&bytes).map_err(|e| format!("{what}: a malformed response from the driver: {e}"))
    }

    /// Sends a write or flush, which the driver answers with `Done`.
    fn expect_done(&mut self, what: &str, request: &Request) -> Result<(), String> {
        match self.request(what, request)? {
            Response::Done => Ok(()),
            other => Err(format!("{what}: expected done, got {}", other.brief())),
        }
    }
}

impl Disk for BlockDisk {
    type Error = String;

    fn sectors(&self) -> u64 {
        self.sectors
    }

    fn read(&mut self, sector: u64, count: u32) -> Result<Vec<u8>, String> {
        let mut data = Vec::with_capacity(count as usize * SECTOR_SIZE);
        let mut done = 0;
        while done < count {
            let chunk = (count - done).min(MAX_SECTORS_PER_REQUEST);
            let at = sector + u64::from(done);
            let what = format!("read of {chunk} sector(s) at {at}");
            match self.request(&what, &Request::Read { sector: at, count: chunk })? {
                Response::Data(bytes) if bytes.len() == chunk as usize * SECTOR_SIZE => data.extend_from_slice(&bytes),
                other => return Err(format!("{what}: expected {chunk} sector(s) of data, got {}", other.brief())),
            }
            done += chunk;
        }
        Ok(data)
    }

    fn write(&mut self, sector: u64, data: &[u8]) -> Result<(), String> {
        for (i, chunk) in data.chunks(MAX_DATA_BYTES).enumerate() {
            let at = sector + (i * MAX_DATA_BYTES / SECTOR_SIZE) as u64;
            let what = format!("write of {} sector(s) at {at}", chunk.len() / SECTOR_SIZE);
            self.expect_done(&what, &Request::Write { sector: at, data: chunk.to_vec() })?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), String> {
        self.expect_done("flush", &Request::Flush)
    }
}
