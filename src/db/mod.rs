//! The database: connection pool, migrations, and the queries each part of the worker needs,
//! grouped by table.

pub mod api_calls;
pub mod console;
pub mod decisions;
pub mod failures;
pub mod orders;
pub mod outcomes;
pub mod queue;
pub mod rate_gates;
pub mod review;
pub mod runs;
pub mod stock;

use secrecy::ExposeSecret;
use serde::Serialize;
use sqlx::PgPool;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::config::DatabaseSettings;

/// An order's identity: two marketplaces may send the same order id, so the shop is part of it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct OrderKey {
    pub shop: String,
    pub order_id: String,
}

/// The shops and ids of `keys` as two arrays, for `unnest($1::text[], $2::text[])`.
fn key_columns(keys: &[OrderKey]) -> (Vec<&str>, Vec<&str>) {
    keys.iter()
        .map(|key| (key.shop.as_str(), key.order_id.as_str()))
        .unzip()
}

/// Migrations are compiled into the binary so a container needs no files beside it.
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error(
        "cannot connect to PostgreSQL at {url}: {cause}. Check database.url (DATABASE_URL) and that the server is running"
    )]
    Connect { url: String, cause: sqlx::Error },
    #[error("database.url is not a usable PostgreSQL URL: {0}")]
    BadUrl(sqlx::Error),
    #[error(
        "applying migrations to {url} failed: {cause}. Fix the cause and run `order-acceptance migrate` again: every step is safe to repeat"
    )]
    Migrate {
        url: String,
        cause: sqlx::migrate::MigrateError,
    },
}

/// Opens a pool and checks that the database answers, so a wrong URL fails at start-up.
pub async fn connect(settings: &DatabaseSettings) -> Result<PgPool, DbError> {
    let options: PgConnectOptions = settings
        .url
        .expose_secret()
        .parse()
        .map_err(DbError::BadUrl)?;
    PgPoolOptions::new()
        .max_connections(settings.max_connections)
        .acquire_timeout(settings.connect_timeout)
        .connect_with(options.application_name("order-acceptance"))
        .await
        .map_err(|cause| DbError::Connect {
            url: settings.redacted_url(),
            cause,
        })
}

/// Applies pending migrations; a database already up to date is left as it is.
pub async fn migrate(pool: &PgPool, settings: &DatabaseSettings) -> Result<(), DbError> {
    MIGRATOR.run(pool).await.map_err(|cause| DbError::Migrate {
        url: settings.redacted_url(),
        cause,
    })
}

/// How the migrations applied to a database compare with the ones compiled into this binary.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MigrationState {
    /// Versions this binary has that the database has not applied.
    pub pending: Vec<i64>,
    /// Versions whose last attempt failed partway (`success = false`).
    pub failed: Vec<i64>,
    /// Versions applied from a different file than the one compiled in (checksum differs).
    pub changed: Vec<i64>,
    /// Versions the database has that this binary does not know: a newer release migrated it.
    pub unknown: Vec<i64>,
}

impl MigrationState {
    pub fn is_current(&self) -> bool {
        *self == MigrationState::default()
    }
}

/// Compares `_sqlx_migrations` with [`MIGRATOR`]; a database never migrated has everything
/// pending. Reads only: nothing is created.
pub async fn migration_state(pool: &PgPool) -> Result<MigrationState, sqlx::Error> {
    let table_exists: bool =
        sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
            .fetch_one(pool)
            .await?;
    let applied: Vec<(i64, bool, Vec<u8>)> = if table_exists {
        sqlx::query_as("SELECT version, success, checksum FROM _sqlx_migrations ORDER BY version")
            .fetch_all(pool)
            .await?
    } else {
        Vec::new()
    };
    let known: Vec<_> = MIGRATOR
        .iter()
        .filter(|migration| !migration.migration_type.is_down_migration())
        .collect();
    let mut state = MigrationState::default();
    for migration in &known {
        match applied
            .iter()
            .find(|(version, ..)| *version == migration.version)
        {
            None => state.pending.push(migration.version),
            Some((_, false, _)) => state.failed.push(migration.version),
            Some((_, true, checksum)) if checksum.as_slice() != &*migration.checksum => {
                state.changed.push(migration.version)
            }
            Some(_) => {}
        }
    }
    state.unknown = applied
        .iter()
        .map(|(version, ..)| *version)
        .filter(|version| !known.iter().any(|migration| migration.version == *version))
        .collect();
    Ok(state)
}
