//! `ustrace recover DIR`: make a trace a crash left readable again.
//!
//! Runs [`crate::trace::recover::recover`], prints one line per change, then reads the
//! whole trace back: the exit status is 0 only when it now reads to its end.

use crate::trace::reader::Reader;
use crate::trace::recover::recover;
use std::path::Path;
use std::process::ExitCode;

/// Recovers `dir` and checks that it reads.
pub fn run(dir: &Path) -> ExitCode {
    let recovery = recover(dir);
    for repair in &recovery.repairs {
        println!("{repair}");
    }
    if !recovery.errors.is_empty() {
        for e in &recovery.errors {
            eprintln!("Error: {e}");
        }
        return ExitCode::FAILURE;
    }
    let repairs = recovery.repairs;
    match read_all(dir) {
        Ok(events) => {
            let done = match repairs.len() {
                0 => "nothing to repair".to_string(),
                n => format!("{n} repairs"),
            };
            println!(
                "{}: {done}; the trace reads to its end ({events} events)",
                dir.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("Error: {} is still unreadable: {e}", dir.display());
            ExitCode::FAILURE
        }
    }
}

/// Reads every record of the trace in `dir`; the number of events.
fn read_all(dir: &Path) -> Result<u64, crate::trace::reader::ReadError> {
    let mut reader = Reader::open(dir)?;
    let mut events = 0;
    while let Some(record) = reader.next_record()? {
        if matches!(record.kind, crate::trace::reader::RecordKind::Event(_)) {
            events += 1;
        }
    }
    Ok(events)
}
