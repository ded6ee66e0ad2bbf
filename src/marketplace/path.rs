//! How an order id goes into a URL path: exactly as itself, or not at all.
//!
//! An id comes from the marketplace or from another system's rows, so it may hold anything. The
//! URL standard strips tabs and newlines from a path and resolves `.` and `..` (also when
//! written `%2E`), so such an id would name another resource: `PUT /api/orders/../accept` is
//! `PUT /api/accept`. Every byte but the unreserved ones is percent-encoded here, and the two
//! ids no encoding can protect are refused before any call is made.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

/// Everything but RFC 3986's unreserved characters (`A-Z a-z 0-9 - . _ ~`).
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// `Err` with the reason when `id` cannot be sent as one path segment that means itself.
pub fn sendable_id(id: &str) -> Result<(), String> {
    if matches!(id, "." | "..") {
        return Err(format!(
            "order id {id:?} cannot be sent in a URL path: HTTP reads it as a relative path, so the call would name another resource"
        ));
    }
    Ok(())
}

/// One path segment, percent-encoded so that it reads back as exactly `segment`.
pub fn encode_segment(segment: &str) -> String {
    utf8_percent_encode(segment, SEGMENT).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_byte_that_could_change_the_path_is_encoded() {
        assert_eq!(encode_segment("A-1_b.c~"), "A-1_b.c~");
        assert_eq!(encode_segment("tab\there"), "tab%09here");
        assert_eq!(encode_segment("a/b?c#d"), "a%2Fb%3Fc%23d");
        assert_eq!(encode_segment("%2e"), "%252e");
        assert_eq!(encode_segment("é\u{1b}"), "%C3%A9%1B");
        assert!(sendable_id(".").is_err() && sendable_id("..").is_err());
        assert!(sendable_id("...").is_ok() && sendable_id(".a").is_ok());
    }
}
