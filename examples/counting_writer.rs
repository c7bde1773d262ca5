//! A daemon with a custom writer: `counting` keeps no trace, it logs how many packets
//! and bytes each stream produced, every `EVERY` packets and at each stop.
//!
//! Run it instead of `ustraced`, then pick the writer per channel:
//!
//! ```sh
//! cargo run --example counting_writer &
//! ustrace create s && ustrace enable-channel c --buffers-pid --writer counting
//! ```
//! or in the config file: `writer = "counting"` under `[[session.channel]]`.

use std::io;
use std::sync::Arc;
use ustrace::actors::writer::{Metadata, StreamInfo, StreamWriter, WriterFactory};
use ustrace::config::Config;
use ustrace::daemon::Daemon;

/// Packets between two log lines.
const EVERY: u64 = 100;

/// Counts one stream's packets.
struct CountingWriter {
    /// Which stream, for the log line.
    name: String,
    /// Packets seen.
    packets: u64,
    /// Bytes seen.
    bytes: u64,
}

impl StreamWriter for CountingWriter {
    fn write_packet(&mut self, _metadata: &Metadata, packet: &[u8]) -> io::Result<()> {
        self.packets += 1;
        self.bytes += packet.len() as u64;
        if self.packets.is_multiple_of(EVERY) {
            eprintln!(
                "{}: {} packets, {} bytes",
                self.name, self.packets, self.bytes
            );
        }
        Ok(())
    }

    fn sync(&mut self) -> io::Result<()> {
        eprintln!(
            "{}: {} packets, {} bytes (sync)",
            self.name, self.packets, self.bytes
        );
        Ok(())
    }
}

/// Makes a [`CountingWriter`] per stream.
struct Counting;

impl WriterFactory for Counting {
    fn create(&self, stream: &StreamInfo) -> io::Result<Box<dyn StreamWriter>> {
        Ok(Box::new(CountingWriter {
            name: format!("{}/{}", stream.session, stream.file_name()),
            packets: 0,
            bytes: 0,
        }))
    }
}

fn main() {
    let config = match std::env::var_os("USTRACE_CONFIG") {
        Some(path) => Config::load(std::path::Path::new(&path)).unwrap_or_else(|e| {
            eprintln!("{e}");
            std::process::exit(1)
        }),
        None => Config::default(),
    };
    if let Err(e) = Daemon::new(config)
        .writer("counting", Arc::new(Counting))
        .run()
    {
        eprintln!("{e}");
        std::process::exit(1);
    }
}
