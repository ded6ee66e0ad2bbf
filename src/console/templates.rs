//! The page frame and the small pieces every page uses. maud escapes every value it is given,
//! so an order id, a note or a payload from the marketplace is shown as text, never as markup.

use chrono::{DateTime, Utc};
use maud::{DOCTYPE, Markup, html};

use super::session::User;

/// A page with the console's header: the sections, the search by order id, who is logged in.
/// `refresh`: the page reloads itself every so many seconds while its tab is visible and
/// nothing has been typed into it (see `console.js`).
pub fn page(title: &str, user: &User, refresh: Option<u32>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head { (head(title)) }
            body data-refresh=[refresh] {
                header {
                    nav {
                        a.brand href="/" { "Order acceptance" }
                        a href="/" { "Overview" }
                        a href="/review" { "Review queue" }
                        a href="/failures" { "Failure inbox" }
                        a href="/audit" { "Audit" }
                        @if user.role.may_manage_users() { a href="/users" { "Users" } }
                    }
                    form.search method="get" action="/search" {
                        input type="search" name="order_id" placeholder="Order id" aria-label="Search by order id" required;
                        button type="submit" { "Find" }
                    }
                    form.logout method="post" action="/logout" {
                        (csrf_field(user))
                        span.who { (user.name) " · " (user.role.as_str()) }
                        button type="submit" { "Log out" }
                    }
                }
                main { h1 { (title) } (body) }
            }
        }
    }
}

/// A page without a session: the login page and error pages.
pub fn bare_page(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head { (head(title)) }
            body.bare {
                main { h1 { (title) } (body) }
            }
        }
    }
}

/// An error or a refusal: what happened and what to do, with the way back.
pub fn message_page(title: &str, message: &str) -> Markup {
    bare_page(
        title,
        html! {
            p.message { (message) }
            p { a href="/" { "Back to the overview" } }
        },
    )
}

fn head(title: &str) -> Markup {
    html! {
        meta charset="utf-8";
        meta name="viewport" content="width=device-width, initial-scale=1";
        title { (title) " · order-acceptance" }
        link rel="stylesheet" href="/static/console.css";
        script src="/static/console.js" defer {}
    }
}

pub fn csrf_field(user: &User) -> Markup {
    html! { input type="hidden" name="csrf" value=(user.csrf_token); }
}

/// A link to an order's page; the id is encoded into the URL and escaped in the text.
/// A link to an order's page, its shop in the address (two marketplaces may use the same id), and
/// beside the id when it is not the default shop.
pub fn order_link(shop: &str, order_id: &str) -> Markup {
    html! {
        a.order href={ (order_path(shop, order_id)) } { (order_id) }
        @if shop != crate::config::ShopName::DEFAULT { " " span.shop { (shop) } }
    }
}

/// The address of an order's page.
pub fn order_path(shop: &str, order_id: &str) -> String {
    format!("/order?id={}&shop={}", encode(order_id), encode(shop))
}

/// Percent-encodes a query-string value.
pub fn encode(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

pub fn at(time: DateTime<Utc>) -> String {
    time.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

pub fn optional_at(time: Option<DateTime<Utc>>) -> String {
    time.map_or_else(|| "-".to_string(), at)
}

/// "3 h 12 min", "12 min", "45 s"; "overdue by …" once negative.
pub fn duration_words(seconds: i64) -> String {
    let magnitude = seconds.unsigned_abs();
    let text = match magnitude {
        s if s >= 86_400 => format!("{} d {} h", s / 86_400, s % 86_400 / 3600),
        s if s >= 3600 => format!("{} h {} min", s / 3600, s % 3600 / 60),
        s if s >= 60 => format!("{} min", s / 60),
        s => format!("{s} s"),
    };
    match seconds < 0 {
        true => format!("overdue by {text}"),
        false => text,
    }
}

/// Under this much time left, a deadline is shown in red.
pub const URGENT_SECONDS: i64 = 2 * 3600;

/// Time left to a deadline, red when under two hours.
pub fn time_left(seconds: i64) -> Markup {
    html! {
        span class=(if seconds < URGENT_SECONDS { "left urgent" } else { "left" }) {
            (duration_words(seconds))
        }
    }
}

pub fn or_dash(value: Option<impl std::fmt::Display>) -> String {
    value.map_or_else(|| "-".to_string(), |v| v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_words() {
        assert_eq!(duration_words(45), "45 s");
        assert_eq!(duration_words(12 * 60 + 5), "12 min");
        assert_eq!(duration_words(3 * 3600 + 12 * 60), "3 h 12 min");
        assert_eq!(duration_words(-90), "overdue by 1 min");
        assert_eq!(duration_words(2 * 86_400 + 3600), "2 d 1 h");
    }

    #[test]
    fn order_ids_are_encoded_in_links_and_escaped_in_text() {
        let link = order_link("default", "<script>alert(1)</script>&x").into_string();
        assert!(!link.contains("<script>"), "{link}");
        assert!(link.contains("&lt;script&gt;"), "{link}");
        assert!(link.contains("id=%3Cscript%3E"), "{link}");
    }
}
