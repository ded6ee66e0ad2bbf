//! Console accounts: roles, Argon2id password hashes, and the account operations shared by
//! `order-acceptance console user …` and the admin's users page.

use std::sync::OnceLock;

use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use sqlx::PgPool;

use crate::db::console::{self as store, ConsoleUser};

/// The shortest password accepted: long enough that the login limit makes guessing hopeless.
pub const MIN_PASSWORD_CHARS: usize = 12;
/// The longest: Argon2 hashes whatever it is given, so a megabyte would be a cheap way to burn CPU.
pub const MAX_PASSWORD_CHARS: usize = 1024;
const MAX_NAME_CHARS: usize = 64;

/// What an account may do. Oban Web's model: read-only, per action, forbidden.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Reads every page.
    Viewer,
    /// Also decides orders in review and works the failure inbox.
    Operator,
    /// Also manages accounts.
    Admin,
}

impl Role {
    pub fn parse(text: &str) -> Option<Role> {
        match text {
            "viewer" => Some(Role::Viewer),
            "operator" => Some(Role::Operator),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }

    /// Decides reviews and works the inbox.
    pub fn may_act(self) -> bool {
        self >= Role::Operator
    }

    pub fn may_manage_users(self) -> bool {
        self == Role::Admin
    }
}

impl clap::ValueEnum for Role {
    fn value_variants<'a>() -> &'a [Self] {
        &[Role::Viewer, Role::Operator, Role::Admin]
    }

    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        Some(clap::builder::PossibleValue::new(self.as_str()))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error(
        "the user name {0:?} is not usable: give 1 to {MAX_NAME_CHARS} characters, letters, digits, '.', '-', '_' or '@', no spaces"
    )]
    BadName(String),
    #[error(
        "the password is too short ({0} characters): give at least {MIN_PASSWORD_CHARS}; nothing was changed"
    )]
    PasswordTooShort(usize),
    #[error(
        "the password is too long ({0} characters): give at most {MAX_PASSWORD_CHARS}; nothing was changed"
    )]
    PasswordTooLong(usize),
    #[error("the two passwords differ; nothing was changed. Type the same password twice")]
    PasswordsDiffer,
    #[error(
        "user {0} already exists; nothing was changed. Change their password with `order-acceptance console user password {0}`"
    )]
    Exists(String),
    #[error("there is no user {0}; see the users with `order-acceptance console user list`")]
    NoSuchUser(String),
    #[error("hashing the password failed: {0}; nothing was changed")]
    Hash(String),
    #[error("reading the password failed: {0}; nothing was changed")]
    ReadPassword(std::io::Error),
    #[error(
        "{action} failed: {error}. Check that the database is reachable and up to date (`order-acceptance migrate`); nothing was changed"
    )]
    // Not a `source`: the message already carries it, and anyhow would print it twice.
    Database { action: String, error: sqlx::Error },
}

fn db_error(action: impl Into<String>) -> impl FnOnce(sqlx::Error) -> AccountError {
    move |error| AccountError::Database {
        action: action.into(),
        error,
    }
}

/// A user name as stored: trimmed, and plain enough to show anywhere.
pub fn check_name(name: &str) -> Result<String, AccountError> {
    let name = name.trim();
    let plain = name
        .chars()
        .all(|c| c.is_alphanumeric() || matches!(c, '.' | '-' | '_' | '@'));
    match !name.is_empty() && name.chars().count() <= MAX_NAME_CHARS && plain {
        true => Ok(name.to_string()),
        false => Err(AccountError::BadName(name.to_string())),
    }
}

pub fn check_password(password: &SecretString) -> Result<(), AccountError> {
    match password.expose_secret().chars().count() {
        n if n < MIN_PASSWORD_CHARS => Err(AccountError::PasswordTooShort(n)),
        n if n > MAX_PASSWORD_CHARS => Err(AccountError::PasswordTooLong(n)),
        _ => Ok(()),
    }
}

/// An Argon2id PHC string with a fresh random salt.
pub fn hash_password(password: &SecretString) -> Result<String, AccountError> {
    Argon2::default()
        .hash_password(password.expose_secret().as_bytes())
        .map(|hash| hash.to_string())
        .map_err(|err| AccountError::Hash(err.to_string()))
}

/// Whether `password` matches `stored` (a PHC string). A stored value that does not parse
/// matches nothing.
pub fn verify_password(password: &str, stored: &str) -> bool {
    PasswordHash::new(stored).is_ok_and(|hash| {
        Argon2::default()
            .verify_password(password.as_bytes(), &hash)
            .is_ok()
    })
}

/// Spends the time of one verification against a hash nobody has, so an unknown or disabled
/// name answers as slowly as a wrong password and the timing tells no one which names exist.
pub fn verify_nothing(password: &str) {
    static DUMMY: OnceLock<String> = OnceLock::new();
    let dummy = DUMMY.get_or_init(|| {
        let random = SecretString::from(format!("{:032x}", rand::random::<u128>()));
        hash_password(&random).unwrap_or_default()
    });
    let _ = verify_password(password, dummy);
}

pub async fn add_user(
    pool: &PgPool,
    name: &str,
    role: Role,
    password: &SecretString,
) -> Result<ConsoleUser, AccountError> {
    let name = check_name(name)?;
    check_password(password)?;
    let hash = hash_password(password)?;
    store::insert_user(pool, &name, role.as_str(), &hash)
        .await
        .map_err(|error| match &error {
            sqlx::Error::Database(db) if db.is_unique_violation() => {
                AccountError::Exists(name.clone())
            }
            _ => db_error(format!("adding user {name}"))(error),
        })
}

pub async fn list_users(pool: &PgPool) -> Result<Vec<ConsoleUser>, AccountError> {
    store::list_users(pool)
        .await
        .map_err(db_error("listing the console users"))
}

/// Disables the account and ends its sessions at once.
pub async fn disable_user(pool: &PgPool, name: &str) -> Result<(), AccountError> {
    match store::disable_user(pool, name)
        .await
        .map_err(db_error(format!("disabling user {name}")))?
    {
        true => Ok(()),
        false => Err(AccountError::NoSuchUser(name.to_string())),
    }
}

/// Sets a new password and ends the account's sessions.
pub async fn change_password(
    pool: &PgPool,
    name: &str,
    password: &SecretString,
) -> Result<(), AccountError> {
    check_password(password)?;
    let hash = hash_password(password)?;
    match store::set_password(pool, name, &hash)
        .await
        .map_err(db_error(format!("changing the password of {name}")))?
    {
        true => Ok(()),
        false => Err(AccountError::NoSuchUser(name.to_string())),
    }
}

/// `console user list` as a table.
pub fn users_table(users: &Vec<ConsoleUser>) -> String {
    let mut table = comfy_table::Table::new();
    table.load_style(comfy_table::presets::UTF8_FULL_CONDENSED);
    table.set_header(["NAME", "ROLE", "CREATED", "PASSWORD CHANGED", "STATE"]);
    for user in users {
        let stamp = |t: chrono::DateTime<chrono::Utc>| t.format("%Y-%m-%d %H:%M").to_string();
        table.add_row([
            user.name.clone(),
            user.role.clone(),
            stamp(user.created_at),
            stamp(user.password_changed_at),
            user.disabled_at.map_or_else(
                || "active".to_string(),
                |t| format!("disabled {}", stamp(t)),
            ),
        ]);
    }
    match users.is_empty() {
        true => "no console users yet: add one with `order-acceptance console user add NAME --role admin`".to_string(),
        false => table.to_string(),
    }
}

/// A new password for the CLI: asked twice at a terminal, else the first line of stdin (for
/// scripts: `printf '%s\n' "$PASSWORD" | order-acceptance console user add …`).
pub fn read_new_password(name: &str) -> Result<SecretString, AccountError> {
    use std::io::IsTerminal;
    if !std::io::stdin().is_terminal() {
        let mut line = String::new();
        std::io::stdin()
            .read_line(&mut line)
            .map_err(AccountError::ReadPassword)?;
        return Ok(SecretString::from(
            line.trim_end_matches(['\r', '\n']).to_string(),
        ));
    }
    let first = rpassword::prompt_password(format!("Password for {name}: "))
        .map_err(AccountError::ReadPassword)?;
    let second =
        rpassword::prompt_password("Same password again: ").map_err(AccountError::ReadPassword)?;
    match first == second {
        true => Ok(SecretString::from(first)),
        false => Err(AccountError::PasswordsDiffer),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_verifies_its_password_only() {
        let password = SecretString::from("correct horse battery".to_string());
        let hash = hash_password(&password).expect("hash");
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        assert!(verify_password("correct horse battery", &hash));
        assert!(!verify_password("correct horse battery!", &hash));
        assert!(!verify_password(
            "correct horse battery",
            "not a phc string"
        ));
    }

    #[test]
    fn names_are_plain_and_bounded() {
        assert_eq!(check_name("  alice ").expect("ok"), "alice");
        assert!(check_name("a.b-c_d@shop").is_ok());
        for bad in ["", "two words", "<script>", &"x".repeat(65)] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn roles_order_their_rights() {
        assert!(!Role::Viewer.may_act());
        assert!(Role::Operator.may_act() && !Role::Operator.may_manage_users());
        assert!(Role::Admin.may_act() && Role::Admin.may_manage_users());
        assert_eq!(Role::parse("operator"), Some(Role::Operator));
        assert_eq!(Role::parse("root"), None);
    }
}
