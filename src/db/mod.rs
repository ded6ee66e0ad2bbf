//! The database: connection pool, migrations, and the queries each part of the worker needs,
//! grouped by table.

pub mod api_calls;
pub mod failures;
pub mod orders;
pub mod outcomes;
pub mod queue;
pub mod runs;

use secrecy::ExposeSecret;
use sqlx::PgPool;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::config::DatabaseSettings;

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
