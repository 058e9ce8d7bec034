//! Structured logs through `tracing`: human-readable lines by default, JSON
//! with `--log-format json`. `RUST_LOG` filters (default `info`).
//!
//! Logging never takes anything down: a line that cannot be written (stderr on
//! a full disk, a closed pipe) is dropped and counted in
//! [`log_lines_dropped`], which `/metrics` exports. Nothing here panics on a
//! failed write, and the log library's own fallback print (which would) is
//! turned off.

use std::{io, sync::LazyLock};

use prometheus_client::metrics::counter::Counter;
use tracing_subscriber::{EnvFilter, fmt, fmt::MakeWriter};

use crate::config::LogFormat;

static LINES_DROPPED: LazyLock<Counter> = LazyLock::new(Counter::default);

/// Log lines dropped because they could not be written, since the process
/// started. A handle on the one process-wide count.
pub fn log_lines_dropped() -> Counter {
    LINES_DROPPED.clone()
}

/// Installs the global subscriber. Safe to call more than once (tests): later
/// calls are no-ops.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // The PKCS#11 binding logs an ERROR line for each vendor mechanism of a
    // module's list it does not know: noise, not a fault of ours.
    let filter = match "cryptoki::mechanism=off".parse() {
        Ok(quiet) => filter.add_directive(quiet),
        Err(_) => filter,
    };
    // Colour only for a terminal; log files and collectors get plain text.
    let ansi = io::IsTerminal::is_terminal(&io::stderr());
    let builder = fmt()
        .with_env_filter(filter)
        .with_writer(DroppingStderr)
        .with_ansi(ansi)
        .log_internal_errors(false);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// Makes a [`LineWriter`] per event.
struct DroppingStderr;

impl<'a> MakeWriter<'a> for DroppingStderr {
    type Writer = LineWriter;

    fn make_writer(&'a self) -> Self::Writer {
        LineWriter { dropped: false }
    }
}

/// Writes one formatted event to stderr. A write that fails drops the rest of
/// the line, counts it once, and reports success, so the caller (the task that
/// logged) carries on.
struct LineWriter {
    dropped: bool,
}

impl io::Write for LineWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if !self.dropped && io::Write::write_all(&mut io::stderr().lock(), buf).is_err() {
            self.dropped = true;
            LINES_DROPPED.inc();
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        // stderr is unbuffered; a failed flush has nothing left to lose.
        let _ = io::Write::flush(&mut io::stderr());
        Ok(())
    }
}
