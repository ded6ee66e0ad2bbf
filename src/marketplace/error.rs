//! How a marketplace call can fail. Each variant leads to one decision for the caller (retry
//! later, stop the run, record the order's real state, fail the order), so the variants follow
//! those decisions rather than HTTP status codes.

use std::fmt;

/// The Mirakl API a call used, as written to `api_calls.endpoint`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// List orders.
    OR11,
    /// Accept or refuse order lines.
    OR21,
    /// Shop account.
    A01,
}

impl Endpoint {
    pub const ALL: [Endpoint; 3] = [Endpoint::OR11, Endpoint::OR21, Endpoint::A01];

    /// The endpoint named `name` (as [`Endpoint::as_str`] writes it).
    pub fn parse(name: &str) -> Option<Endpoint> {
        Endpoint::ALL
            .into_iter()
            .find(|endpoint| endpoint.as_str() == name)
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            Endpoint::OR11 => "OR11",
            Endpoint::OR21 => "OR21",
            Endpoint::A01 => "A01",
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MarketplaceError {
    /// Connect error, timeout, 5xx or 429, after the retries allowed for it.
    #[error(
        "{endpoint}{} failed with a temporary error: {detail}. {}",
        for_order(.order_id),
        transient_advice(*.may_have_taken_effect)
    )]
    Transient {
        endpoint: Endpoint,
        order_id: Option<String>,
        detail: String,
        /// True when the request may have reached the marketplace and changed something (an
        /// OR21 that timed out or got a 500/502/504): re-read before sending it again.
        may_have_taken_effect: bool,
    },

    /// 401 or 403: a configuration problem no retry fixes. The key itself is never printed.
    #[error("{endpoint} was refused with HTTP {status}: {}", unauthorized_advice(*.endpoint, *.status, shop))]
    Unauthorized {
        endpoint: Endpoint,
        status: u16,
        /// The shop whose key was refused: the advice names its settings.
        shop: String,
    },

    /// 400 `ORDER_INVALID_STATE`: the order is no longer waiting for acceptance.
    #[error(
        "OR21 for order {order_id}: the marketplace says the order is no longer waiting for \
         acceptance ({code}: {message}). Do not re-send it; re-read the order (OR11) and record \
         its real state (accepted elsewhere, refused or cancelled)"
    )]
    InvalidState {
        order_id: String,
        code: String,
        message: String,
    },

    /// 404.
    #[error(
        "{endpoint}{} found nothing (HTTP 404{}): {message}. Check the order id, marketplace.url \
         and marketplace.shop_id",
        for_order(.order_id),
        with_code(.code)
    )]
    NotFound {
        endpoint: Endpoint,
        order_id: Option<String>,
        code: Option<String>,
        message: String,
    },

    /// Any other 4xx: the request itself is wrong for this order; retrying sends the same thing.
    #[error(
        "{endpoint}{} was rejected with HTTP {status}{}: {message}. Retrying will not help: fix \
         the order or the request (see api_calls for the exact exchange), then retry it by hand",
        for_order(.order_id),
        with_code(.code)
    )]
    Rejected {
        endpoint: Endpoint,
        order_id: Option<String>,
        status: u16,
        code: Option<String>,
        message: String,
    },

    /// An order id that cannot be sent in a URL path as itself: nothing was sent.
    #[error(
        "order {order_id:?} was not sent to the marketplace: {reason}. Accept or refuse it in the seller portal, then resolve this failure"
    )]
    Unsendable { order_id: String, reason: String },

    /// A 2xx whose body is not the JSON expected: an HTML page, truncated JSON, over the size
    /// cap. `body` keeps the start of it for diagnosis.
    #[error(
        "{endpoint}{} returned a response that is not the JSON expected: {detail}. An HTML page \
         usually means this host's IP is not allow-listed or marketplace.url does not point at \
         the API; the body is kept in api_calls",
        for_order(.order_id)
    )]
    Malformed {
        endpoint: Endpoint,
        order_id: Option<String>,
        detail: String,
        body: String,
    },

    /// Not sent: the caller's fence closed (the run can no longer prove it holds the order).
    #[error(
        "{endpoint}{} was not sent: {reason}. The order is left to the run that holds it now",
        for_order(.order_id)
    )]
    Fenced {
        endpoint: Endpoint,
        order_id: Option<String>,
        reason: String,
    },
}

impl MarketplaceError {
    /// True when the request may have changed something on the marketplace although it failed:
    /// the caller must re-read the order before sending OR21 again.
    pub fn may_have_taken_effect(&self) -> bool {
        match self {
            MarketplaceError::Transient {
                may_have_taken_effect,
                ..
            } => *may_have_taken_effect,
            // A 2xx came back, yet not the 204 OR21 answers: nobody can say what happened, so
            // take the safe reading and re-check.
            MarketplaceError::Malformed { endpoint, .. } => *endpoint == Endpoint::OR21,
            _ => false,
        }
    }

    /// True when the same request may succeed later.
    pub fn is_transient(&self) -> bool {
        matches!(self, MarketplaceError::Transient { .. })
    }
}

fn for_order(order_id: &Option<String>) -> String {
    order_id
        .as_deref()
        .map(|id| format!(" for order {id}"))
        .unwrap_or_default()
}

fn with_code(code: &Option<String>) -> String {
    code.as_deref()
        .map(|code| format!(", code {code}"))
        .unwrap_or_default()
}

fn transient_advice(may_have_taken_effect: bool) -> &'static str {
    if may_have_taken_effect {
        "The request may have reached the marketplace: re-read the order (OR11) before sending it \
         again"
    } else {
        "Nothing was changed on the marketplace; the call can be tried again later"
    }
}

/// The settings of `shop`'s key, URL and shop id, as people set them.
fn shop_settings(shop: &str) -> (String, String, String) {
    match shop {
        crate::config::ShopName::DEFAULT => (
            "marketplace.api_key (MARKETPLACE_API_KEY)".to_owned(),
            "marketplace.url".to_owned(),
            "marketplace.shop_id".to_owned(),
        ),
        shop => (
            format!(
                "shops.{shop}.api_key (ORDER_ACCEPTANCE__SHOPS__{}__API_KEY, or shops.{shop}.api_key_file)",
                shop.to_uppercase()
            ),
            format!("shops.{shop}.url"),
            format!("shops.{shop}.shop_id"),
        ),
    }
}

fn unauthorized_advice(endpoint: Endpoint, status: u16, shop: &str) -> String {
    let (key, url, shop_id) = shop_settings(shop);
    if status == 401 {
        format!(
            "the marketplace does not accept the API key of shop {shop}. Check {key} and {url}; \
             retrying will not help"
        )
    } else {
        let role = match endpoint {
            Endpoint::OR21 => "ROLE_SHOP_ADMIN or ROLE_PARTNER_ORDER_ACCEPT",
            Endpoint::OR11 => "ROLE_SHOP_ADMIN or ROLE_PARTNER_ORDER_READ",
            Endpoint::A01 => "a shop role",
        };
        format!(
            "the API key of shop {shop} lacks the role {endpoint} needs ({role}), or {shop_id} \
             names a shop it cannot reach. Give the key that role or configure another {key}; \
             retrying will not help"
        )
    }
}
