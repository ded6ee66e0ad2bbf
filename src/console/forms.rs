//! Submitted forms as a list of fields, so a field may repeat (the lines ticked on a review).

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};

use super::error::ConsoleError;

/// The fields of an `application/x-www-form-urlencoded` body, in order.
#[derive(Debug, Default)]
pub struct Fields(Vec<(String, String)>);

impl Fields {
    pub fn parse(body: &[u8]) -> Self {
        Fields(url::form_urlencoded::parse(body).into_owned().collect())
    }

    /// The first value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    /// The first value of `name`, trimmed; `None` when absent or blank.
    pub fn text(&self, name: &str) -> Option<String> {
        self.get(name)
            .map(str::trim)
            .filter(|value| !value.is_empty())
            .map(str::to_string)
    }

    /// Every value of `name`, in order.
    pub fn all(&self, name: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(key, _)| key == name)
            .map(|(_, value)| value.clone())
            .collect()
    }
}

impl<S: Send + Sync> FromRequest<S> for Fields {
    type Rejection = ConsoleError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let body = Bytes::from_request(request, state).await.map_err(|err| {
            ConsoleError::BadInput(format!(
                "the form could not be read ({err}); nothing was changed. A note is at most a few thousand characters"
            ))
        })?;
        Ok(Fields::parse(&body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_fields_are_kept_in_order() {
        let fields = Fields::parse(b"lines=L1&note=+why+&lines=L%262&empty=");
        assert_eq!(fields.all("lines"), ["L1", "L&2"]);
        assert_eq!(fields.text("note").as_deref(), Some("why"));
        assert_eq!(fields.text("empty"), None);
        assert_eq!(fields.get("missing"), None);
    }
}
