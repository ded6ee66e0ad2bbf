//! Secrets out of everything a person, a table or a log sees: passwords in database URLs, and
//! every configured secret (the marketplace key, database passwords) in any text this process
//! writes or stores.
//!
//! The secrets of loaded settings are remembered here once, for the whole process, because
//! they must be scrubbed in places that never see the settings: a marketplace answer that
//! echoes the key, a driver error that repeats the URL, the fatal error printed by `main`, and
//! every log line (see `telemetry`).

use std::borrow::Cow;
use std::sync::{PoisonError, RwLock};

use memchr::memmem;

/// What replaces a secret.
pub const MASK: &str = "***";

/// Secrets shorter than this are not scrubbed from free text: no real key or password is that
/// short, and masking a two-letter value would shred every message that contains those letters.
const SHORTEST_SCRUBBED: usize = 6;

static SECRETS: RwLock<Vec<String>> = RwLock::new(Vec::new());

/// Remembers a secret, so that [`scrub`] masks it (also as it reads inside a JSON string).
pub fn remember(secret: &str) {
    if secret.len() < SHORTEST_SCRUBBED {
        return;
    }
    // As JSON writes it inside a string, also with `/` escaped as many encoders do.
    let json = serde_json::to_string(secret).unwrap_or_default();
    let json = json.trim_matches('"');
    let slashes = json.replace('/', "\\/");
    let mut secrets = SECRETS.write().unwrap_or_else(PoisonError::into_inner);
    for form in [secret, json, &slashes] {
        if !form.is_empty() && !secrets.iter().any(|known| known == form) {
            secrets.push(form.to_owned());
        }
    }
    // Longest first, so a secret that contains another is masked whole.
    secrets.sort_by_key(|known| std::cmp::Reverse(known.len()));
}

/// Remembers the passwords a database URL carries (user-info or a `password` parameter).
pub fn remember_url_passwords(raw: &str) {
    if let Ok(url) = url::Url::parse(raw) {
        if let Some(password) = url.password() {
            remember(password);
            remember(&percent_decode(password));
        }
        for (key, value) in url.query_pairs() {
            if is_password_key(&key) {
                remember(&value);
            }
        }
    }
}

/// `text` with every remembered secret replaced by [`MASK`].
pub fn scrub(text: &str) -> Cow<'_, str> {
    match scrub_bytes(text.as_bytes()) {
        Cow::Borrowed(_) => Cow::Borrowed(text),
        // Masking whole UTF-8 secrets in UTF-8 text leaves it UTF-8.
        Cow::Owned(bytes) => Cow::Owned(String::from_utf8_lossy(&bytes).into_owned()),
    }
}

/// `bytes` with every remembered secret replaced by [`MASK`].
pub fn scrub_bytes(bytes: &[u8]) -> Cow<'_, [u8]> {
    let secrets = SECRETS.read().unwrap_or_else(PoisonError::into_inner);
    let mut text = Cow::Borrowed(bytes);
    for secret in secrets.iter() {
        let finder = memmem::Finder::new(secret.as_bytes());
        if finder.find(&text).is_none() {
            continue;
        }
        let mut masked = Vec::with_capacity(text.len());
        let mut rest: &[u8] = &text;
        while let Some(at) = finder.find(rest) {
            masked.extend_from_slice(&rest[..at]);
            masked.extend_from_slice(MASK.as_bytes());
            rest = &rest[at + secret.len()..];
        }
        masked.extend_from_slice(rest);
        text = Cow::Owned(masked);
    }
    text
}

/// A URL fit to show: the password in its user-info and the value of every `password`-like
/// query parameter replaced by [`MASK`]. Anything unparseable is hidden whole.
pub fn url(raw: &str) -> String {
    let Ok(mut url) = url::Url::parse(raw) else {
        return "<unparseable URL hidden>".to_string();
    };
    if url.password().is_some() {
        // Setting a password only fails on URLs that cannot have one.
        let _ = url.set_password(Some(MASK));
    }
    if url.query_pairs().any(|(key, _)| is_password_key(&key)) {
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .map(|(key, value)| {
                let value = match is_password_key(&key) {
                    true => MASK.to_string(),
                    false => value.into_owned(),
                };
                (key.into_owned(), value)
            })
            .collect();
        url.query_pairs_mut().clear().extend_pairs(pairs);
    }
    scrub(url.as_str()).into_owned()
}

/// `password`, `sslpassword` and any other parameter named for a password.
fn is_password_key(key: &str) -> bool {
    key.to_ascii_lowercase().contains("password")
}

fn percent_decode(text: &str) -> String {
    percent_encoding::percent_decode_str(text)
        .decode_utf8_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_urls_lose_their_passwords_in_every_form() {
        assert_eq!(
            url("postgres://u:hunter2secret@db/app"),
            "postgres://u:***@db/app"
        );
        assert_eq!(
            url("postgres://u@db/app?sslmode=require&password=hunter2&sslpassword=x"),
            "postgres://u@db/app?sslmode=require&password=***&sslpassword=***"
        );
        assert_eq!(url("not a url"), "<unparseable URL hidden>");
    }

    #[test]
    fn remembered_secrets_are_masked_in_text_and_bytes() {
        remember("s3cr3t-k3y/with-slash");
        let text = r#"{"echo":"s3cr3t-k3y\/with-slash","raw":"s3cr3t-k3y/with-slash"}"#;
        assert_eq!(scrub(text), r#"{"echo":"***","raw":"***"}"#);
        assert_eq!(scrub("nothing here"), "nothing here");
        remember("abc");
        assert_eq!(scrub("abc"), "abc", "too short to scrub");
    }
}
