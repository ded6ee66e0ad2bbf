//! The console in a real browser: headless Chromium driven over WebDriver (Debian's `chromium`
//! and `chromium-driver`, which `scripts/test` installs when missing). One pass through an
//! order desk's morning: log in, see an order in review, refuse one line with a note, see the
//! decision queued, work a failure, log out. Screenshots land in target/console-screenshots/.

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use chrono::Utc;
use common::console::{
    PASSWORD, add_user, hours_before, seed_failed, seed_in_review, spawn_console,
};
use fantoccini::{Client, ClientBuilder, Locator};
use order_acceptance::console::accounts::Role;
use sqlx::PgPool;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// chromedriver on a free loopback port, stopped when dropped.
struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start_driver() -> Driver {
    assert!(
        std::path::Path::new(CHROMEDRIVER).exists() && std::path::Path::new(CHROMIUM).exists(),
        "the browser test needs Debian's chromium and chromium-driver: run it through scripts/test, which installs them, or `apt-get install chromium chromium-driver`"
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port();
    let child = Command::new(CHROMEDRIVER)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromedriver");
    let driver = Driver {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    // Ready when /status answers; chromedriver starts in well under a second, but a cold,
    // loaded host may take far longer.
    let http = reqwest::Client::new();
    for _ in 0..600 {
        if http
            .get(format!("{}/status", driver.url))
            .send()
            .await
            .is_ok()
        {
            return driver;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("chromedriver did not answer on {} within 30 s", driver.url);
}

async fn browser(driver: &Driver) -> Client {
    let mut capabilities = serde_json::Map::new();
    capabilities.insert(
        "goog:chromeOptions".to_string(),
        serde_json::json!({
            "binary": CHROMIUM,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1280,1000"],
        }),
    );
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(capabilities)
        .connect(&driver.url)
        .await
        .expect("a Chromium session")
}

fn screenshots_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/console-screenshots");
    std::fs::create_dir_all(&dir).expect("screenshots dir");
    dir
}

async fn screenshot(browser: &Client, name: &str) {
    let png = browser.screenshot().await.expect("screenshot");
    std::fs::write(screenshots_dir().join(format!("{name}.png")), png).expect("write screenshot");
}

/// The text of the first element matching `css` once `ready` holds for it. A click that loads a
/// page can leave the old page's element in place for a moment, or replace it between finding
/// and reading it (a stale element), so it is read again until the new page shows; WebDriver has
/// no event to await for that, only polling, as its own waits do.
async fn text_when(browser: &Client, css: &str, ready: impl Fn(&str) -> bool) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let text = match browser.find(Locator::Css(css)).await {
            Ok(element) => element.text().await.ok(),
            Err(_) => None,
        };
        match text {
            Some(text) if ready(&text) => return text,
            last if std::time::Instant::now() > deadline => {
                panic!("{css} never showed what the step waits for; last seen: {last:?}")
            }
            _ => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
        }
    }
}

#[sqlx::test]
async fn an_order_desk_works_the_queue_and_the_inbox_in_chromium(pool: PgPool) {
    seed_in_review(&pool, "BB-1001-A", hours_before(Utc::now(), 22), 2).await;
    seed_in_review(&pool, "BB-1002-A", hours_before(Utc::now(), 6), 1).await;
    let failure = seed_failed(&pool, "BB-0999-A", "OR21").await;
    add_user(&pool, "olga", Role::Operator).await;
    let app = spawn_console(pool.clone(), &[]).await;
    let driver = start_driver().await;
    let browser = browser(&driver).await;

    browser.goto(&format!("{}/", app.url)).await.expect("open");
    assert!(
        browser
            .current_url()
            .await
            .expect("url")
            .path()
            .ends_with("/login")
    );
    browser
        .find(Locator::Css("#name"))
        .await
        .expect("name")
        .send_keys("olga")
        .await
        .expect("type");
    browser
        .find(Locator::Css("#password"))
        .await
        .expect("password")
        .send_keys(PASSWORD)
        .await
        .expect("type");
    screenshot(&browser, "1-login").await;
    browser
        .find(Locator::Css("button[type=submit]"))
        .await
        .expect("log in")
        .click()
        .await
        .expect("click");
    assert_eq!(
        text_when(&browser, "main h1", |t| t == "Overview").await,
        "Overview"
    );
    screenshot(&browser, "2-overview").await;

    browser
        .find(Locator::LinkText("Review queue"))
        .await
        .expect("nav")
        .click()
        .await
        .expect("click");
    let first = text_when(&browser, "section.order-card h2", |t| t.contains("BB-10")).await;
    assert!(
        first.contains("BB-1001-A") && first.contains("left"),
        "oldest first: {first}"
    );
    screenshot(&browser, "3-review-queue").await;
    browser
        .find(Locator::Css(r#"input[name="lines"][value="BB-1001-A-1"]"#))
        .await
        .expect("line checkbox")
        .click()
        .await
        .expect("tick");
    browser
        .find(Locator::Css(r#"textarea[id="note-BB-1001-A"]"#))
        .await
        .expect("note")
        .send_keys("SKU-1 is discontinued")
        .await
        .expect("type");
    let card = browser
        .find(Locator::Css("section.order-card"))
        .await
        .expect("card");
    card.find(Locator::Css(r#"button[value="refuse"]"#))
        .await
        .expect("refuse")
        .click()
        .await
        .expect("click");
    let done = text_when(&browser, "div.notice", |t| t.contains("refuse")).await;
    assert!(
        done.contains("refuse lines BB-1001-A-1") && done.contains("carries it out"),
        "{done}"
    );

    browser
        .goto(&format!("{}/review", app.url))
        .await
        .expect("queue");
    let queued = text_when(&browser, "p.queued", |t| t.contains("Queued")).await;
    assert!(
        queued.contains("Queued: refuse lines BB-1001-A-1") && queued.contains("by olga"),
        "{queued}"
    );
    screenshot(&browser, "4-decision-queued").await;

    browser
        .find(Locator::LinkText("Failure inbox"))
        .await
        .expect("nav")
        .click()
        .await
        .expect("click");
    screenshot(&browser, "5-failure-inbox").await;
    browser
        .find(Locator::LinkText(&format!("#{failure}")))
        .await
        .expect("failure")
        .click()
        .await
        .expect("click");
    browser
        .find(Locator::Css("#note"))
        .await
        .expect("note")
        .send_keys("Re-sent by hand in the Mirakl back office")
        .await
        .expect("type");
    browser
        .find(Locator::Css(r#"form[action="/failures/resolve"] button"#))
        .await
        .expect("resolve")
        .click()
        .await
        .expect("click");
    assert!(
        text_when(&browser, "div.notice", |t| t.contains("resolved"))
            .await
            .contains("is resolved")
    );

    browser
        .find(Locator::Css("form.logout button"))
        .await
        .expect("log out")
        .click()
        .await
        .expect("click");
    browser
        .wait()
        .for_element(Locator::Css("#password"))
        .await
        .expect("back at the login");
    browser
        .goto(&format!("{}/review", app.url))
        .await
        .expect("queue");
    assert!(
        browser
            .current_url()
            .await
            .expect("url")
            .path()
            .ends_with("/login"),
        "logged out"
    );
    browser.close().await.expect("close");

    let decided: (String, Option<Vec<String>>, String) = sqlx::query_as(
        "SELECT action, lines, decided_by FROM review_decisions WHERE order_id = 'BB-1001-A'",
    )
    .fetch_one(&pool)
    .await
    .expect("decision");
    assert_eq!(
        decided,
        (
            "refuse".to_string(),
            Some(vec!["BB-1001-A-1".to_string()]),
            "olga".to_string()
        )
    );
    let resolved_by: Option<String> =
        sqlx::query_scalar("SELECT resolved_by FROM process_failures WHERE failure_id = $1")
            .bind(failure)
            .fetch_one(&pool)
            .await
            .expect("failure");
    assert_eq!(resolved_by.as_deref(), Some("olga"));
}
