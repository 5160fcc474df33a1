//! `switchboard-broker store check`: is the store on disk whole, and if not, what is damaged?
//!
//! Exit codes: 0 the store is whole (a torn write at the end, which the next start cuts off, is
//! reported but is not damage); 1 the store is damaged (the file, the byte offset and what is wrong are
//! printed); 2 the check could not run (a broker holds the data directory, the directory cannot be
//! read, the settings are invalid, or the store is not a log store).

use std::path::PathBuf;
use std::process::ExitCode;

use switchboard_broker::settings::{Overrides, Settings, StoreKind};
use switchboard_broker::store::{check_log, CheckReport, StoreError};

use crate::args::StoreAction;

/// Exit code of a damaged store.
const DAMAGED: u8 = 1;
/// Exit code of a check that could not run.
const NOT_CHECKED: u8 = 2;

/// Runs `action` on the store of the settings (`--config`, `--data-dir` as for the broker).
pub(crate) fn dispatch(
    action: StoreAction,
    config_file: Option<PathBuf>,
    data_dir: Option<PathBuf>,
) -> ExitCode {
    let overrides = Overrides {
        config_file,
        listen: None,
        data_dir,
        accept_store_loss: false,
    };
    match action {
        StoreAction::Check => run(&overrides),
    }
}

/// Runs the check of the store the settings name and prints what it found.
fn run(overrides: &Overrides) -> ExitCode {
    let settings = match Settings::load(overrides) {
        Ok(settings) => settings,
        Err(error) => return not_checked(&format!("{error:#}")),
    };
    if settings.store != StoreKind::Log {
        return not_checked("store check reads the log store; this broker's store is not one");
    }
    match check_log(&settings.data_dir) {
        Ok(report) => {
            print_report(&report);
            ExitCode::SUCCESS
        }
        Err(error @ (StoreError::LogCorrupt { .. } | StoreError::Incompatible(_))) => {
            println!("DAMAGED: {error}");
            println!("The broker refuses to start on this store. Keep a copy of the data directory before repairing it.");
            ExitCode::from(DAMAGED)
        }
        Err(error) => not_checked(&error.to_string()),
    }
}

fn print_report(report: &CheckReport) {
    println!("log store {}: whole", report.dir.display());
    println!(
        "  {} segment(s), {} bytes of frames verified",
        report.segments, report.verified_bytes
    );
    println!(
        "  {} entries, {} remembered sends, last id {}",
        report.entries, report.remembered, report.last_id
    );
    if !report.snapshot_usable {
        println!("  no usable snapshot: the next start replays the whole log");
    }
    if let Some(torn) = &report.torn_tail {
        println!(
            "  a torn write at the end of {} (byte {}, {} bytes): a crash interrupted it; the next start cuts it off",
            torn.path.display(),
            torn.offset,
            torn.bytes
        );
    }
}

fn not_checked(why: &str) -> ExitCode {
    eprintln!("error: cannot check the store: {why}");
    ExitCode::from(NOT_CHECKED)
}
