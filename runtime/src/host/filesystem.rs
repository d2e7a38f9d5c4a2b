//! `wasi:filesystem/types` and `wasi:filesystem/preopens`: no directory is preopened (none can be
//! granted yet), so a component can never hold a descriptor. The descriptor types are empty
//! enums: the methods exist because the interface must link for any std program, and the
//! compiler proves they cannot be reached.

use alloc::string::String;
use alloc::vec::Vec;

use wasmtime::component::Resource;

use super::InstanceState;
use super::error::IoError;
use super::streams::{InputStream, OutputStream};
use super::wasi::filesystem::preopens;
use super::wasi::filesystem::types::{
    Advice, DescriptorFlags, DescriptorStat, DescriptorType, DirectoryEntry, ErrorCode, Filesize, Host, HostDescriptor,
    HostDirectoryEntryStream, MetadataHashValue, NewTimestamp, OpenFlags, PathFlags,
};

/// A file or directory descriptor. There are none: no directory is preopened.
#[derive(Debug)]
pub enum Descriptor {}

/// A directory listing. There are none, as there are no descriptors.
#[derive(Debug)]
pub enum DirectoryEntryStream {}

type FsResult<T> = wasmtime::Result<Result<T, ErrorCode>>;

impl InstanceState {
    fn descriptor<T>(&mut self, d: &Resource<Descriptor>) -> wasmtime::Result<T> {
        match *self.table.get(d)? {}
    }
}

impl preopens::Host for InstanceState {
    fn get_directories(&mut self) -> wasmtime::Result<Vec<(Resource<Descriptor>, String)>> {
        Ok(Vec::new())
    }
}

impl Host for InstanceState {
    fn filesystem_error_code(&mut self, err: Resource<IoError>) -> wasmtime::Result<Option<ErrorCode>> {
        self.table.get(&err)?;
        Ok(None)
    }
}

impl HostDirectoryEntryStream for InstanceState {
    fn read_directory_entry(&mut self, s: Resource<DirectoryEntryStream>) -> FsResult<Option<DirectoryEntry>> {
        match *self.table.get(&s)? {}
    }

    fn drop(&mut self, s: Resource<DirectoryEntryStream>) -> wasmtime::Result<()> {
        self.table.delete(s)?;
        Ok(())
    }
}

impl HostDescriptor for InstanceState {
    fn read_via_stream(&mut self, d: Resource<Descriptor>, _: Filesize) -> FsResult<Resource<InputStream>> {
        self.descriptor(&d)
    }
    fn write_via_stream(&mut self, d: Resource<Descriptor>, _: Filesize) -> FsResult<Resource<OutputStream>> {
        self.descriptor(&d)
    }
    fn append_via_stream(&mut self, d: Resource<Descriptor>) -> FsResult<Resource<OutputStream>> {
        self.descriptor(&d)
    }
    fn advise(&mut self, d: Resource<Descriptor>, _: Filesize, _: Filesize, _: Advice) -> FsResult<()> {
        self.descriptor(&d)
    }
    fn sync_data(&mut self, d: Resource<Descriptor>) -> FsResult<()> {
        self.descriptor(&d)
    }
    fn get_flags(&mut self, d: Resource<Descriptor>) -> FsResult<DescriptorFlags> {
        self.descriptor(&d)
    }
    fn get_type(&mut self, d: Resource<Descriptor>) -> FsResult<DescriptorType> {
        self.descriptor(&d)
    }
    fn set_size(&mut self, d: Resource<Descriptor>, _: Filesize) -> FsResult<()> {
        self.descriptor(&d)
    }
    fn set_times(&mut self, d: Resource<Descriptor>, _: NewTimestamp, _: NewTimestamp) -> FsResult<()> {
        self.descriptor(&d)
    }
    fn read(&mut self, d: Resource<Descriptor>, _: Filesize, _: Filesize) -> FsResult<(Vec<u8>, bool)> {
        self.descriptor(&d)
    }
    fn write(&mut self, d: Resource<Descriptor>, _: Vec<u8>, _: Filesize) -> FsResult<Filesize> {
        self.descriptor(&d)
    }
    fn read_directory(&mut self, d: Resource<Descriptor>) -> FsResult<Resource<DirectoryEntryStream>> {
        self.descriptor(&d)
    }
    fn sync(&mut self, d: Resource<Descriptor>) -> FsResult<()> {
        self.descriptor(&d)
    }
    fn create_directory_at(&mut self, d: Resource<Descriptor>, _: String) -> FsResult<()> {
        self.descriptor(&d)
    }
    fn stat(&mut self, d: Resource<Descriptor>) -> FsResult<DescriptorStat> {
        self.descriptor(&d)
    }
    fn stat_at(&mut self, d: Resource<Descriptor>, _: PathFlags, _: String) -> FsResult<DescriptorStat> {
        self.descriptor(&d)
    }
    fn set_times_at(
        &mut self,
        d: Resource<Descriptor>,
        _: PathFlags,
        _: String,
        _: NewTimestamp,
        _: NewTimestamp,
    ) -> FsResult<()> {
        self.descriptor(&d)
    }
    fn link_at(
        &mut self,
        d: Resource<Descriptor>,
        _: PathFlags,
        _: String,
        _: Resource<Descriptor>,
        _: String,
    ) -> FsResult<()> {
        self.descriptor(&d)
    }
    fn open_at(
        &mut self,
        d: Resource<Descriptor>,
        _: PathFlags,
        _: String,
        _: OpenFlags,
        _: DescriptorFlags,
    ) -> FsResult<Resource<Descriptor>> {
        self.descriptor(&d)
    }
    fn readlink_at(&mut self, d: Resource<Descriptor>, _: String) -> FsResult<String> {
        self.descriptor(&d)
    }
    fn remove_directory_at(&mut self, d: Resource<Descriptor>, _: String) -> FsResult<()> {
        self.descriptor(&d)
    }
    fn rename_at(&mut self, d: Resource<Descriptor>, _: String, _: Resource<Descriptor>, _: String) -> FsResult<()> {
        self.descriptor(&d)
    }
    fn symlink_at(&mut self, d: Resource<Descriptor>, _: String, _: String) -> FsResult<()> {
        self.descriptor(&d)
    }
    fn unlink_file_at(&mut self, d: Resource<Descriptor>, _: String) -> FsResult<()> {
        self.descriptor(&d)
    }
    fn is_same_object(&mut self, d: Resource<Descriptor>, _: Resource<Descriptor>) -> wasmtime::Result<bool> {
        self.descriptor(&d)
    }
    fn metadata_hash(&mut self, d: Resource<Descriptor>) -> FsResult<MetadataHashValue> {
        self.descriptor(&d)
    }
    fn metadata_hash_at(&mut self, d: Resource<Descriptor>, _: PathFlags, _: String) -> FsResult<MetadataHashValue> {
        self.descriptor(&d)
    }
    fn drop(&mut self, d: Resource<Descriptor>) -> wasmtime::Result<()> {
        self.table.delete(d)?;
        Ok(())
    }
}
