//! Sessions and who is asking: random tokens in an HttpOnly, SameSite=Strict cookie (Secure
//! behind https), stored only as their SHA-256; idle and absolute timeouts; the client's
//! address; and the checks every form passes (its Origin and its CSRF token).

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::HeaderMap;
use axum::http::header;
use axum::http::request::Parts;
use sha2::{Digest, Sha256};

use super::ConsoleState;
use super::accounts::Role;
use super::error::ConsoleError;
use crate::db::console as store;

pub const SESSION_COOKIE: &str = "oa_session";
/// Carries the login form's CSRF token before there is a session.
pub const LOGIN_COOKIE: &str = "oa_login";

/// Failed logins counted over this window.
pub const LOGIN_WINDOW: Duration = Duration::from_secs(15 * 60);
/// More failures than this for one name within the window, and the name must wait.
pub const MAX_FAILURES_PER_NAME: i64 = 5;
/// More failures than this from one address within the window, and the address must wait.
pub const MAX_FAILURES_PER_ADDRESS: i64 = 20;

/// 32 random bytes as hex: a session token or a CSRF token.
pub fn new_token() -> String {
    rand::random::<[u8; 32]>()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

pub fn token_digest(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// Compares without stopping at the first difference, so the time taken tells nothing.
pub fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |diff, (x, y)| diff | (x ^ y))
            == 0
}

/// A `Set-Cookie` value: HttpOnly and SameSite=Strict always, Secure when served over https.
pub fn cookie(name: &str, value: &str, max_age: Duration, secure: bool) -> String {
    format!(
        "{name}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{}",
        max_age.as_secs(),
        if secure { "; Secure" } else { "" }
    )
}

pub fn expired_cookie(name: &str, secure: bool) -> String {
    cookie(name, "", Duration::ZERO, secure)
}

/// The value of cookie `name`, if the request has it.
pub fn read_cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.to_string())
}

/// The logged-in person behind a request. Pages that take it need a live session; without one
/// the request is sent to the login page.
#[derive(Debug, Clone)]
pub struct User {
    pub name: String,
    pub role: Role,
    pub csrf_token: String,
    pub token_sha256: Vec<u8>,
    pub address: String,
}

impl User {
    /// Operators and admins decide reviews and work the inbox; a viewer is refused (403).
    pub fn must_act(&self) -> Result<(), ConsoleError> {
        match self.role.may_act() {
            true => Ok(()),
            false => Err(ConsoleError::Forbidden(format!(
                "{} is a viewer: viewers read, operators and admins act. Ask an admin for the operator role",
                self.name
            ))),
        }
    }

    pub fn must_manage_users(&self) -> Result<(), ConsoleError> {
        match self.role.may_manage_users() {
            true => Ok(()),
            false => Err(ConsoleError::Forbidden(format!(
                "{} is not an admin: only admins manage users",
                self.name
            ))),
        }
    }

    /// A form's CSRF token must be this session's.
    pub fn check_csrf(&self, given: Option<&str>) -> Result<(), ConsoleError> {
        match given {
            Some(token) if same_secret(token, &self.csrf_token) => Ok(()),
            _ => Err(ConsoleError::BadCsrf),
        }
    }
}

impl FromRequestParts<ConsoleState> for User {
    type Rejection = ConsoleError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &ConsoleState,
    ) -> Result<Self, Self::Rejection> {
        let token = read_cookie(&parts.headers, SESSION_COOKIE).ok_or(ConsoleError::LoginNeeded)?;
        let digest = token_digest(&token);
        let found = store::touch_session(
            &state.pool,
            &digest,
            state.config.session_idle.as_secs_f64(),
            state.config.session_absolute.as_secs_f64(),
        )
        .await?
        .ok_or(ConsoleError::LoginNeeded)?;
        let role = Role::parse(&found.role).ok_or(ConsoleError::LoginNeeded)?;
        Ok(User {
            name: found.name,
            role,
            csrf_token: found.csrf_token,
            token_sha256: digest,
            address: client_address(parts, state.config.trust_forwarded_for),
        })
    }
}

/// Where a request comes from, for the audit and the per-address login limit: the peer, or
/// behind a trusted proxy the last `X-Forwarded-For` entry (the one the proxy added).
pub fn client_address(parts: &Parts, trust_forwarded_for: bool) -> String {
    let forwarded = trust_forwarded_for
        .then(|| parts.headers.get("x-forwarded-for"))
        .flatten()
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.rsplit(',').next())
        .map(str::trim)
        .filter(|value| value.parse::<std::net::IpAddr>().is_ok());
    match forwarded {
        Some(address) => address.to_string(),
        None => parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map_or_else(|| "unknown".to_string(), |info| info.0.ip().to_string()),
    }
}

/// The client's address, as an extractor for handlers without a session (the login).
pub struct ClientAddress(pub String);

impl FromRequestParts<ConsoleState> for ClientAddress {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &ConsoleState,
    ) -> Result<Self, Self::Rejection> {
        Ok(ClientAddress(client_address(
            parts,
            state.config.trust_forwarded_for,
        )))
    }
}

/// A form must come from the console's own pages: its `Origin` (or, without one, its
/// `Referer`) must be the console's origin, `console.public_url`'s or, without one, the
/// `Host` the request was sent to over plain http.
pub fn check_origin(
    headers: &HeaderMap,
    public_url: Option<&url::Url>,
) -> Result<(), ConsoleError> {
    let expected = match public_url {
        Some(url) => url.origin().ascii_serialization(),
        None => {
            let host = headers
                .get(header::HOST)
                .and_then(|value| value.to_str().ok())
                .ok_or(ConsoleError::BadOrigin)?;
            format!("http://{host}")
        }
    };
    let origin = headers
        .get(header::ORIGIN)
        .and_then(|value| value.to_str().ok())
        .map(str::to_string)
        .or_else(|| {
            headers
                .get(header::REFERER)
                .and_then(|value| value.to_str().ok())
                .and_then(|value| url::Url::parse(value).ok())
                .map(|url| url.origin().ascii_serialization())
        });
    match origin {
        Some(origin) if origin == expected => Ok(()),
        _ => Err(ConsoleError::BadOrigin),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_hex_and_stored_as_digests() {
        let (a, b) = (new_token(), new_token());
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
        assert_eq!(token_digest(&a).len(), 32);
        assert_ne!(token_digest(&a), a.as_bytes());
    }

    #[test]
    fn cookies_are_strict_and_secure_over_https() {
        let plain = cookie("s", "v", Duration::from_secs(60), false);
        assert_eq!(plain, "s=v; Path=/; HttpOnly; SameSite=Strict; Max-Age=60");
        assert!(cookie("s", "v", Duration::from_secs(60), true).ends_with("; Secure"));
    }

    #[test]
    fn a_cookie_is_found_among_others() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            "a=1; oa_session=abc; b=2".parse().expect("h"),
        );
        assert_eq!(
            read_cookie(&headers, SESSION_COOKIE).as_deref(),
            Some("abc")
        );
        assert_eq!(read_cookie(&headers, "c"), None);
    }

    #[test]
    fn the_origin_must_be_the_consoles() {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, "127.0.0.1:8088".parse().expect("h"));
        assert!(check_origin(&headers, None).is_err(), "no origin at all");
        headers.insert(header::ORIGIN, "http://127.0.0.1:8088".parse().expect("h"));
        assert!(check_origin(&headers, None).is_ok());
        headers.insert(header::ORIGIN, "http://evil.example".parse().expect("h"));
        assert!(check_origin(&headers, None).is_err());
        let public = url::Url::parse("https://orders.example.com/").expect("url");
        headers.insert(
            header::ORIGIN,
            "https://orders.example.com".parse().expect("h"),
        );
        assert!(check_origin(&headers, Some(&public)).is_ok());
        headers.remove(header::ORIGIN);
        headers.insert(
            header::REFERER,
            "https://orders.example.com/review".parse().expect("h"),
        );
        assert!(check_origin(&headers, Some(&public)).is_ok());
    }
}
