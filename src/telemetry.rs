//! Logging: JSON lines for containers and log shippers, readable text on a terminal; every line
//! has its secrets masked, and text lines their control characters escaped.

use std::io::{self, IsTerminal};

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

use crate::config::LogFormat;
use crate::{redact, terminal};

/// Installs the global subscriber writing to stdout. `RUST_LOG` sets the level (default `info`).
pub fn init(format: LogFormat) {
    init_with_writer(format, std::io::stdout);
}

/// Installs the global subscriber with any writer; tests use it to capture what is logged.
/// Every remembered secret is masked before a line reaches the writer.
pub fn init_with_writer<W>(format: LogFormat, writer: W)
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    // PostgreSQL's notices ("relation already exists, skipping") are noise at info.
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx::postgres::notice=warn"));
    let json = match format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => !std::io::stdout().is_terminal(),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stdout().is_terminal() && std::io::stderr().is_terminal())
        // Secrets are masked in every line, whatever a message or a field carries; text lines
        // are escaped for the terminal they may be read on (JSON escapes itself).
        .with_writer(ScrubbingWriter {
            inner: writer,
            escape_for_terminal: !json,
        });
    // A second initialisation (several tests in one process) keeps the first subscriber.
    let _ = if json {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.try_init()
    };
}

/// A log writer that masks remembered secrets in each line before it is written (and, for text
/// lines, escapes them for a terminal). The fmt layer writes every event with one `write_all`,
/// so a secret is never split across calls.
pub struct ScrubbingWriter<M> {
    pub inner: M,
    pub escape_for_terminal: bool,
}

impl<'a, M: MakeWriter<'a>> MakeWriter<'a> for ScrubbingWriter<M> {
    type Writer = Scrubbed<M::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        Scrubbed {
            inner: self.inner.make_writer(),
            escape_for_terminal: self.escape_for_terminal,
        }
    }
}

pub struct Scrubbed<W> {
    inner: W,
    escape_for_terminal: bool,
}

impl<W: io::Write> io::Write for Scrubbed<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let scrubbed = redact::scrub_bytes(buf);
        if self.escape_for_terminal {
            let text = String::from_utf8_lossy(&scrubbed);
            self.inner
                .write_all(terminal::escape_log_line(&text).as_bytes())?;
        } else {
            self.inner.write_all(&scrubbed)?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}
