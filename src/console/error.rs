//! What a page says when something stops it, with the HTTP status that fits. Nothing here
//! panics: a database that does not answer is a 503 page, and the next request tries again.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};

use super::accounts::AccountError;
use super::templates;
use crate::inbox::InboxError;
use crate::review::ReviewError;

#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    /// No live session: the login page.
    #[error("log in to continue")]
    LoginNeeded,
    #[error("{0}")]
    Forbidden(String),
    #[error(
        "this form has expired or did not come from this console (its security token is missing or wrong); nothing was changed. Reload the page and try again"
    )]
    BadCsrf,
    #[error(
        "this form did not come from this console's own pages (its Origin is another site's or missing); nothing was changed. Open the console at its own address and try again"
    )]
    BadOrigin,
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    BadInput(String),
    /// Someone else acted first, or the thing is no longer in a state for this action.
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    TooManyLogins(String),
    #[error(
        "the database did not answer ({0}). Nothing was changed by this request. The console reconnects by itself: reload in a moment, and check the database if this persists"
    )]
    DatabaseDown(String),
    #[error("{0}")]
    Failed(String),
}

impl From<sqlx::Error> for ConsoleError {
    fn from(error: sqlx::Error) -> Self {
        ConsoleError::DatabaseDown(error.to_string())
    }
}

impl From<ReviewError> for ConsoleError {
    fn from(error: ReviewError) -> Self {
        let message = error.to_string();
        match error {
            ReviewError::OrderNotFound(_) => ConsoleError::NotFound(message),
            ReviewError::NotInReview { .. }
            | ReviewError::AlreadyDecided { .. }
            | ReviewError::DecidedMeanwhile { .. } => ConsoleError::Conflict(message),
            ReviewError::UnknownLines { .. } => ConsoleError::BadInput(message),
            ReviewError::Database { error, .. } => error.into(),
        }
    }
}

impl From<InboxError> for ConsoleError {
    fn from(error: InboxError) -> Self {
        let message = error.to_string();
        match error {
            InboxError::FailureNotFound(_)
            | InboxError::OrderNotFound(_)
            | InboxError::OrderNotInShop { .. } => ConsoleError::NotFound(message),
            InboxError::OrderInSeveralShops { .. } => ConsoleError::BadInput(message),
            InboxError::AlreadyResolved { .. }
            | InboxError::NotRetryable { .. }
            | InboxError::NoRelatedOrder(_)
            | InboxError::OrderHasNoStatus { .. } => ConsoleError::Conflict(message),
            InboxError::DurationOutOfRange { .. } => ConsoleError::BadInput(message),
            InboxError::Database { error, .. } => error.into(),
        }
    }
}

impl From<AccountError> for ConsoleError {
    fn from(error: AccountError) -> Self {
        let message = error.to_string();
        match error {
            AccountError::NoSuchUser(_) => ConsoleError::NotFound(message),
            AccountError::Exists(_) => ConsoleError::Conflict(message),
            AccountError::Database { error, .. } => error.into(),
            AccountError::Hash(_) | AccountError::ReadPassword(_) => ConsoleError::Failed(message),
            _ => ConsoleError::BadInput(message),
        }
    }
}

impl ConsoleError {
    pub fn status(&self) -> StatusCode {
        match self {
            ConsoleError::LoginNeeded => StatusCode::SEE_OTHER,
            ConsoleError::Forbidden(_) | ConsoleError::BadCsrf | ConsoleError::BadOrigin => {
                StatusCode::FORBIDDEN
            }
            ConsoleError::NotFound(_) => StatusCode::NOT_FOUND,
            ConsoleError::BadInput(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ConsoleError::Conflict(_) => StatusCode::CONFLICT,
            ConsoleError::TooManyLogins(_) => StatusCode::TOO_MANY_REQUESTS,
            ConsoleError::DatabaseDown(_) => StatusCode::SERVICE_UNAVAILABLE,
            ConsoleError::Failed(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn title(&self) -> &'static str {
        match self {
            ConsoleError::LoginNeeded => "Log in",
            ConsoleError::Forbidden(_) => "Not allowed",
            ConsoleError::BadCsrf | ConsoleError::BadOrigin => "Form refused",
            ConsoleError::NotFound(_) => "Not found",
            ConsoleError::BadInput(_) => "Check the form",
            ConsoleError::Conflict(_) => "Nothing was changed",
            ConsoleError::TooManyLogins(_) => "Too many failed logins",
            ConsoleError::DatabaseDown(_) => "The database is not answering",
            ConsoleError::Failed(_) => "Something failed",
        }
    }
}

impl IntoResponse for ConsoleError {
    fn into_response(self) -> Response {
        if let ConsoleError::LoginNeeded = self {
            return Redirect::to("/login").into_response();
        }
        if let ConsoleError::DatabaseDown(cause) = &self {
            tracing::warn!(cause = %cause, "console: the database did not answer");
        }
        let page = templates::message_page(self.title(), &self.to_string());
        (self.status(), page).into_response()
    }
}
