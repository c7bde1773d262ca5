//! The built-in writer: each stream's packets appended to `<trace dir>/<channel>_<cpu>`
//! beside the trace's `metadata` file. It checks before each packet that its stream
//! file still has a name (`st_nlink`); an output removed while tracing is recreated,
//! and `sync` reports what went with it, so `stop` never claims data that is not on
//! disk. A failed write is cut back to the last whole packet.
//!
//! A channel with `--tracefile-size S` writes each stream into `<channel>_<cpu>_<k>`
//! files (k from 0) of at most S bytes of whole packets (a packet larger than S gets
//! a file of its own), each with its index; with `--tracefile-count N` the file
//! `k - N` (and its index) is deleted when file `k` is opened, so a stream holds at
//! most N files.

use super::{LeasedPacket, Metadata, StreamInfo, StreamWriter, WriterFactory};
use crate::ctf::packet::PacketHeader;
use crate::shm::DIRECT_ALIGN;
use crate::trace::index::{self, IndexEntry};
use crate::trace::writer::Appending;
use nix::errno::Errno;
use nix::fcntl::{FcntlArg, OFlag, fcntl};
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::AsFd;
use std::path::PathBuf;

/// Makes [`CtfFileWriter`]s.
pub(super) struct CtfFileWriterFactory {
    /// Whether its writers store leased packets with `O_DIRECT` (`daemon.direct_io`).
    pub(super) direct_io: bool,
}

impl WriterFactory for CtfFileWriterFactory {
    fn create(&self, stream: &StreamInfo) -> io::Result<Box<dyn StreamWriter>> {
        let mut writer = CtfFileWriter::new(stream.clone());
        if !self.direct_io {
            writer.direct = Direct::Off;
        }
        Ok(Box::new(writer))
    }
}

/// The built-in writer: a CTF stream file beside its trace's `metadata` file.
pub struct CtfFileWriter {
    /// The stream it writes.
    stream: StreamInfo,
    /// The stream file, opened at the first packet so that a stream that never
    /// records anything leaves no file.
    file: Option<File>,
    /// Length of the file made of whole packets; a failed write is cut back to it.
    good_len: u64,
    /// The stream's index file (`index/<stream>.idx`), opened with the stream file,
    /// and the length of its whole entries, one per packet in the stream file.
    index: Option<(File, u64)>,
    /// A removal of the stream file seen since the last `sync`, which reports it.
    removed: Option<StreamRemoved>,
    /// Number of the stream file written now (see the module doc).
    k: u64,
    /// How leased packets are stored.
    direct: Direct,
    /// Page-aligned blocks for the first and last page of each packet of an
    /// `O_DIRECT` run (two per packet), made at the first one and grown as needed.
    bounce: Option<memmap2::MmapMut>,
}

/// Whether leased packets go to the stream file with `O_DIRECT`: the kernel reads
/// them from the ring's pages into the device, with no copy into the page cache
/// (about a third of the CPU a buffered write of the same bytes costs here, see
/// docs/performance.md "Drain"), padded to [`DIRECT_ALIGN`] as LTTng pads every
/// packet to a page. A copied packet (a dead app's last ones, overwrite mode, a
/// custom writer's) and a file whose length is not aligned go through the page
/// cache, trimmed, as do all packets where the file system refuses `O_DIRECT`.
enum Direct {
    /// Off: `daemon.direct_io = false`, or the file system refused it.
    Off,
    /// On, with the flag set on the open stream file's fd or not.
    On {
        /// `O_DIRECT` is set on the open stream file's fd.
        set: bool,
    },
}

/// The stream file of a [`CtfFileWriter`] was removed (`rm -rf` of the output)
/// while it was open: nothing written to it since is on disk.
#[derive(Debug, thiserror::Error)]
#[error(
    "stream file {path} was removed after {bytes} bytes were written to it: they are gone \
     (later packets go to a recreated trace)"
)]
pub struct StreamRemoved {
    /// The file, as it was named.
    pub path: PathBuf,
    /// What it held, gone with it.
    pub bytes: u64,
}

/// Whether `file` still has a name: `st_nlink == 0` once it was unlinked, and
/// writing to it then only fills an inode that disappears at close.
fn is_removed(file: &File) -> io::Result<bool> {
    use std::os::unix::fs::MetadataExt;
    Ok(file.metadata()?.nlink() == 0)
}

/// Sets or clears `O_DIRECT` on `file`'s open file description.
fn set_o_direct(file: &File, on: bool) -> nix::Result<()> {
    let fd = file.as_fd();
    let mut flags = OFlag::from_bits_retain(fcntl(fd, FcntlArg::F_GETFL)?);
    flags.set(OFlag::O_DIRECT, on);
    fcntl(fd, FcntlArg::F_SETFL(flags)).map(drop)
}

impl CtfFileWriter {
    /// A writer that creates nothing until its first packet.
    pub fn new(stream: StreamInfo) -> CtfFileWriter {
        CtfFileWriter {
            stream,
            file: None,
            good_len: 0,
            index: None,
            removed: None,
            k: 0,
            direct: Direct::On { set: false },
            bounce: None,
        }
    }

    /// The stream file written now.
    fn file_name(&self) -> String {
        self.stream.file_name_at(self.k)
    }

    /// Goes on to the next stream file if `len` more bytes would take the current
    /// one past the channel's tracefile size, deleting the one that falls out of
    /// its tracefile count.
    fn next_file_if_full(&mut self, len: u64) -> io::Result<()> {
        let limits = self.stream.tracefile;
        if limits.size == 0 || self.file.is_none() || self.good_len == 0 {
            return Ok(());
        }
        if self.good_len.saturating_add(len) <= limits.size {
            return Ok(());
        }
        self.file = None;
        self.index = None;
        self.good_len = 0;
        self.k += 1;
        if limits.count > 0 && self.k >= u64::from(limits.count) {
            let oldest = self.stream.file_name_at(self.k - u64::from(limits.count));
            self.stream.trace_dir.remove_stream(&oldest)?;
        }
        Ok(())
    }

    /// Writes the metadata file if no stream of the trace stored this version in
    /// its directory yet (a directory made anew after a removal holds none). A
    /// newer version replaces the old one atomically (see
    /// [`TraceDir::store_metadata`]).
    fn store_metadata(&mut self, metadata: &Metadata) -> io::Result<()> {
        let dir = &self.stream.trace_dir;
        if dir.has_metadata(metadata.version) {
            return Ok(());
        }
        dir.store_metadata(&self.stream.file_name(), &metadata.tsdl)?;
        dir.metadata_stored(metadata.version);
        Ok(())
    }

    /// Opens the stream file for appending and notes the length of the whole
    /// packets in it.
    fn open(&mut self) -> io::Result<()> {
        let Appending { file, len } = self.stream.trace_dir.open_stream(&self.file_name())?;
        self.good_len = len;
        self.file = Some(file);
        if let Direct::On { set, .. } = &mut self.direct {
            *set = false;
        }
        let Appending {
            file: mut index,
            len: mut index_len,
        } = self.stream.trace_dir.open_index(&self.file_name())?;
        if index_len == 0 {
            index.write_all(&index::header())?;
            index_len = index::INDEX_HEADER_LEN as u64;
        }
        self.index = Some((index, index_len));
        Ok(())
    }

    /// Stores the metadata if its directory lacks it, then opens the stream file
    /// on first use (again after a removal). The directory is made, or made anew
    /// if it was removed, before the metadata is looked at, so that a recreated
    /// trace gets its metadata whichever writer (restarted or not) recreates it.
    /// One removed again before the stream file is opened is made once more by
    /// the open, which forgets its metadata again: it is stored after the open too.
    fn ensure_open(&mut self, metadata: &Metadata) -> io::Result<()> {
        if self.file.is_none() {
            self.stream.trace_dir.ensure()?;
        }
        self.store_metadata(metadata)?;
        if self.file.is_some() {
            return Ok(());
        }
        match self.open() {
            // Removed between the two: the open makes it once more.
            Err(e) if e.kind() == io::ErrorKind::NotFound => self.open()?,
            other => other?,
        }
        self.store_metadata(metadata)
    }

    /// Drops the stream file if it was removed (with its trace, by `rm -rf` of the
    /// output), so that the next packet recreates the trace directory, its metadata
    /// and the file. Says so with [`StreamRemoved`], once per removal; the caller (a
    /// write) goes on to recreate, `sync` reports it.
    fn forget_removed_file(&mut self) -> io::Result<()> {
        let Some(file) = &self.file else {
            return Ok(());
        };
        if !is_removed(file)? {
            return Ok(());
        }
        self.file = None;
        self.index = None;
        let removed = StreamRemoved {
            path: self.stream.trace_dir.path().join(self.file_name()),
            bytes: self.good_len,
        };
        self.good_len = 0;
        log::warn!("{removed}; recreating the trace");
        self.removed = Some(removed);
        Ok(())
    }
}

impl CtfFileWriter {
    /// Makes the stream file ready for a packet of `len` bytes: recreated if it was
    /// removed, the next one if the current one is full, opened.
    fn prepare(&mut self, metadata: &Metadata, len: u64) -> io::Result<()> {
        self.forget_removed_file()?;
        self.next_file_if_full(len)?;
        self.ensure_open(metadata)
    }

    /// Appends packets, each given by its header (`PacketHeader::read` of its first
    /// bytes) and its length, written to the prepared stream file by `write` in one
    /// go, and their index entries; a failure cuts both files back to their last
    /// whole packet before them.
    fn append(
        &mut self,
        packets: &[(&[u8], u64)],
        write: impl FnOnce(&mut File) -> io::Result<()>,
    ) -> io::Result<()> {
        let good_len = self.good_len;
        let file = self.file.as_mut().expect("prepared");
        let (index, index_len) = self.index.as_mut().expect("opened with the file");
        let mut entries = Vec::with_capacity(packets.len() * index::INDEX_ENTRY_LEN);
        let mut len = 0;
        for (header, packet_len) in packets {
            let header = PacketHeader::read(header).map_err(io::Error::other)?;
            entries.extend(IndexEntry::of(good_len + len, &header).encode());
            len += packet_len;
        }
        if let Err(e) = write(file).and_then(|()| index.write_all(&entries)) {
            // A torn packet would make the whole stream unreadable, an entry without
            // its packet would mislead a reader: cut both back.
            let _ = file.set_len(good_len);
            let _ = index.set_len(*index_len);
            return Err(e);
        }
        self.good_len += len;
        *index_len += entries.len() as u64;
        self.stream.trace_dir.count_written(len);
        Ok(())
    }

    /// Sets or clears `O_DIRECT` on the open stream file's fd, if it is not so
    /// already. The file system refusing it turns direct writes off for good.
    fn set_direct(&mut self, on: bool) -> io::Result<()> {
        let Direct::On { set, .. } = &mut self.direct else {
            return Ok(());
        };
        if *set == on {
            return Ok(());
        }
        match set_o_direct(self.file.as_ref().expect("prepared"), on) {
            Ok(()) => *set = on,
            Err(Errno::EINVAL) if on => self.refuse_direct("setting O_DIRECT"),
            Err(e) => return Err(e.into()),
        }
        Ok(())
    }

    /// Stores all later packets through the page cache: the file system refused
    /// `O_DIRECT` (`EINVAL` from `what`), once per writer. The flag goes off the fd
    /// if it was set (a refused write), so that the retry through the page cache
    /// is not refused too.
    fn refuse_direct(&mut self, what: &str) {
        if let (Direct::On { set: true, .. }, Some(file)) = (&self.direct, &self.file)
            && let Err(e) = set_o_direct(file, false)
        {
            log::warn!("clearing O_DIRECT: {e}");
        }
        log::info!(
            "{}: {what} was refused (EINVAL): storing through the page cache",
            self.stream
                .trace_dir
                .path()
                .join(self.file_name())
                .display()
        );
        self.direct = Direct::Off;
    }

    /// Stores `run` padded with `O_DIRECT` in one write; `Ok(false)` if it is not to
    /// be (off, or the file's length not aligned), and after the file system refused
    /// it.
    fn append_direct(&mut self, run: &[&LeasedPacket]) -> io::Result<bool> {
        if !matches!(self.direct, Direct::On { .. })
            || !self.good_len.is_multiple_of(DIRECT_ALIGN as u64)
        {
            return Ok(false);
        }
        self.set_direct(true)?;
        if !matches!(self.direct, Direct::On { set: true }) {
            return Ok(false);
        }
        let needed = 2 * DIRECT_ALIGN * run.len();
        let mut bounce = match self.bounce.take() {
            Some(kept) if kept.len() >= needed => kept,
            _ => memmap2::MmapMut::map_anon(needed)?,
        };
        let headers: Vec<Vec<u8>> = run.iter().map(|p| p.padded_header()).collect();
        let packets: Vec<(&[u8], u64)> = headers
            .iter()
            .zip(run)
            .map(|(header, p)| (&header[..], p.padded_len() as u64))
            .collect();
        let result = self.append(&packets, |file| {
            LeasedPacket::write_padded(file.as_fd(), run, &mut bounce)
        });
        self.bounce = Some(bounce);
        match result {
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                self.refuse_direct("an O_DIRECT write");
                Ok(false)
            }
            other => other.map(|()| true),
        }
    }
}

impl StreamWriter for CtfFileWriter {
    fn write_packet(&mut self, metadata: &Metadata, packet: &[u8]) -> io::Result<()> {
        self.prepare(metadata, packet.len() as u64)?;
        self.set_direct(false)?;
        let len = packet.len() as u64;
        self.append(&[(packet, len)], |file| file.write_all(packet))
    }

    fn write_leased(&mut self, metadata: &Metadata, packet: &LeasedPacket) -> io::Result<()> {
        self.write_leased_run(metadata, &[packet]).map(|_| ())
    }

    /// Straight from the ring's mapping: the whole run in one write with `O_DIRECT`
    /// where it can (see [`Direct`]), else its first packet through the page cache,
    /// its checked header then its content in one `writev` (no copy into the
    /// daemon's heap either way). With a tracefile size, one packet at a time, so
    /// that each file ends on the packet that fills it.
    fn write_leased_run(
        &mut self,
        metadata: &Metadata,
        run: &[&LeasedPacket],
    ) -> io::Result<usize> {
        let run = if self.stream.tracefile.size > 0 {
            &run[..1]
        } else {
            run
        };
        // The length a tracefile size is checked against: padded if it may go direct.
        let len = match self.direct {
            Direct::On { .. } => run.iter().map(|p| p.padded_len() as u64).sum(),
            Direct::Off => run[0].len() as u64,
        };
        self.prepare(metadata, len)?;
        if self.append_direct(run)? {
            return Ok(run.len());
        }
        let packet = run[0];
        self.set_direct(false)?;
        let len = packet.len() as u64;
        self.append(&[(packet.header(), len)], |file| {
            packet.write_to(file.as_fd())
        })?;
        Ok(1)
    }

    /// Every packet went out with an unbuffered `write`, so every reader sees it
    /// already. No fsync: `stop` promises a complete, readable trace, not one that
    /// survives power loss, and an fsync per stream of every short-lived app would
    /// cost milliseconds each on a real disk. A stream file removed since the last
    /// sync is reported: what it held is not on disk, whatever was written.
    fn sync(&mut self) -> io::Result<()> {
        self.forget_removed_file()?;
        self.take_unreported().map_or(Ok(()), Err)
    }

    /// The removal seen since the last sync, if any.
    fn take_unreported(&mut self) -> Option<io::Error> {
        self.removed.take().map(io::Error::other)
    }
}
