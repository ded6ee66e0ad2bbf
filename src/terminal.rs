//! Text for a terminal. Anything shown to a person may come from the marketplace, the database
//! or another person, so control characters in it are shown escaped (`\x1b`, `\u{202e}`),
//! never sent raw: an order id cannot retitle the window, clear the screen or reorder a line.
//! (The console escapes for HTML on its own; JSON output escapes by itself.)
//!
//! Tables for people fit [`TABLE_WIDTH`] columns unless the command is given `--wide`.

use std::borrow::Cow;
use std::fmt::Write;

use comfy_table::{ContentArrangement, Table, presets};

/// How wide a table may be.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Width {
    /// Wrapped to [`TABLE_WIDTH`] columns, long texts cut to one line.
    #[default]
    Fit,
    /// Everything in full, however wide.
    Wide,
}

/// The width tables fit by default: a common terminal, and what a log or a ticket shows whole.
pub const TABLE_WIDTH: u16 = 120;

/// An empty table for people, laid out for `width`.
pub fn table(width: Width) -> Table {
    let mut table = Table::new();
    table.load_style(presets::UTF8_FULL_CONDENSED);
    match width {
        Width::Fit => table
            .set_content_arrangement(ContentArrangement::Dynamic)
            .set_width(TABLE_WIDTH),
        Width::Wide => table.set_content_arrangement(ContentArrangement::Disabled),
    };
    table
}

/// `text` with every control character escaped, newlines and tabs included: for one value on
/// one line (an id, a status, a table cell).
pub fn escape(text: &str) -> Cow<'_, str> {
    escape_where(text, |_| true)
}

/// `text` with every control character escaped except the newline: for multi-line text a person
/// reads (details, a whole rendered report).
pub fn escape_lines(text: &str) -> Cow<'_, str> {
    escape_where(text, |c| c != '\n')
}

/// A text log line: what the log formatter does not escape itself (CR, TAB, the Unicode marks
/// that reorder a line) is escaped; ESC is left to it, since it escapes ESC in every value and
/// writes its own for colours.
pub fn escape_log_line(text: &str) -> Cow<'_, str> {
    escape_where(text, |c| c != '\n' && c != '\u{1b}')
}

fn escape_where(text: &str, escaped: impl Fn(char) -> bool) -> Cow<'_, str> {
    let needs = |c: char| is_dangerous(c) && escaped(c);
    if !text.chars().any(needs) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if needs(c) {
            // Writing to a String cannot fail.
            let _ = match u32::from(c) {
                code @ 0..=0x7f => write!(out, "\\x{code:02x}"),
                code => write!(out, "\\u{{{code:x}}}"),
            };
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// C0 and C1 controls and DEL, and the Unicode marks that reorder how a line reads.
fn is_dangerous(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_shown_not_sent() {
        assert_eq!(escape("A-1"), "A-1");
        assert_eq!(
            escape("\u{1b}]0;owned\u{7}\u{1b}[2J"),
            "\\x1b]0;owned\\x07\\x1b[2J"
        );
        assert_eq!(escape("a\r\nb\tc"), "a\\x0d\\x0ab\\x09c");
        assert_eq!(escape_lines("a\nb\rc"), "a\nb\\x0dc");
        assert_eq!(escape("x\u{202e}y\u{9b}"), "x\\u{202e}y\\u{9b}");
        assert_eq!(escape("café ✓"), "café ✓");
    }
}
