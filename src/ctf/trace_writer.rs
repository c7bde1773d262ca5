//! Writing a trace directory: the metadata file and packets appended to stream files.
//!
//! The daemon's writers and the tests use these; a packet is written as it is (a
//! sub-buffer is already a whole CTF packet).

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

use crate::ctf::layout::{METADATA_FILE, stream_file_name};
use crate::ctf::registry::Registry;

/// Writes `registry`'s metadata to `dir/metadata` (see [`replace_metadata`]).
pub fn write_metadata(dir: &Path, registry: &Registry) -> io::Result<()> {
    replace_metadata(dir, "tmp", &registry.metadata())
}

/// Writes `tsdl` to `dir/metadata`, whole, replacing the old file atomically (a
/// reader never sees half a metadata file): through `.metadata.<tag>`, a name no
/// other writer of the same trace uses at the same time. Creates `dir` if needed.
pub fn replace_metadata(dir: &Path, tag: &str, tsdl: &str) -> io::Result<()> {
    fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(".{METADATA_FILE}.{tag}"));
    fs::write(&tmp, tsdl)?;
    fs::rename(&tmp, dir.join(METADATA_FILE))
}

/// Appends one packet to the stream file of `channel` on `cpu` in `dir`.
pub fn append_packet(dir: &Path, channel: &str, cpu: u32, packet: &[u8]) -> io::Result<()> {
    fs::create_dir_all(dir)?;
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(stream_file_name(channel, cpu)))?
        .write_all(packet)
}
