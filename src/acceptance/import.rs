//! Import: pages through the orders waiting for acceptance at the marketplace and stores the
//! ones not seen before, each with a `pending_acceptance` row.
//!
//! It finishes before this run claims anything: OR11 pages by offset, and orders this run
//! accepted would leave the listing and shift the pages still to read.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use futures::{StreamExt, stream};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::{Context, RunError, Tally};
use crate::db::failures;
use crate::db::queue::{self, StoredOrder};
use crate::marketplace::{
    MarketplaceError, Order, OrderState, OrderTerms, OrdersPage, UnreadableOrder,
};

/// OR11's largest page.
const PAGE_SIZE: u64 = 100;

/// The lines and amounts the import read for the orders this run stored, for preflight. That read is
/// seconds old, so preflight does not read these orders again when this run is the first to
/// claim them: an order decided in between is caught by OR21's ORDER_INVALID_STATE and re-read
/// then.
#[derive(Default)]
pub struct FreshLines(Mutex<HashMap<String, OrderTerms>>);

impl FreshLines {
    pub(super) fn insert(&self, order_id: String, terms: OrderTerms) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(order_id, terms);
    }

    pub fn take(&self, order_id: &str) -> Option<OrderTerms> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(order_id)
    }
}

/// What the import did.
#[derive(Default)]
pub struct Imported {
    pub fresh: FreshLines,
    /// Why no page could be read, when none could: the run goes on with the orders already
    /// stored, and ends `degraded`.
    pub failed: Option<String>,
    /// Why the import stopped before the pages the marketplace announced, when it did.
    pub ended_early: Option<String>,
    /// Orders listed that cannot be read; each is in the inbox (once).
    pub unreadable: u64,
}

/// Why the import stops reading pages.
#[derive(Debug, Clone)]
enum Halt {
    Empty(u64),
    NothingNew(u64),
    Stopped,
}

impl Halt {
    fn describe(&self) -> String {
        match self {
            Halt::Empty(offset) => format!(
                "the page at offset {offset} listed no order although total_count announced more"
            ),
            Halt::NothingNew(offset) => format!(
                "the page at offset {offset} listed only orders already read by this import"
            ),
            Halt::Stopped => "a stop signal came: no further page was read".to_owned(),
        }
    }
}

/// The state the pages of one import share: what was read, and whether to read on.
#[derive(Default)]
struct Pages {
    seen: Mutex<HashSet<String>>,
    halt: Mutex<Option<Halt>>,
    unreadable: AtomicU64,
}

impl Pages {
    /// Notes the page's orders; false when it brought none this import had not read.
    fn brings_new(&self, page: &OrdersPage) -> bool {
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        let readable = page.orders.iter().map(|o| o.order_id.clone());
        let unreadable = page.unreadable.iter().map(|o| {
            o.order_id
                .clone()
                .unwrap_or_else(|| format!("raw:{}", o.raw))
        });
        let mut new = false;
        for key in readable.chain(unreadable) {
            new |= seen.insert(key);
        }
        new
    }

    fn halt(&self, why: Halt) {
        let mut halt = self.halt.lock().unwrap_or_else(PoisonError::into_inner);
        halt.get_or_insert(why);
    }

    fn halted(&self) -> bool {
        self.halt
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some()
    }
}

/// Reads the waiting orders page by page and stores the new ones. It ends at the last page
/// announced, at an empty page, at a page that brings nothing new, at `import.max_orders`, or
/// at a stop signal (between pages), whichever comes first: a marketplace that announces a
/// million orders and sends empty or repeating pages cannot keep a run from claiming.
pub async fn import_waiting_orders(
    ctx: &Context,
    stop: &CancellationToken,
    tally: &Tally,
) -> Result<Imported, RunError> {
    let mut imported = Imported::default();
    if stop.is_cancelled() {
        imported.ended_early = Some(Halt::Stopped.describe());
        return Ok(imported);
    }
    let first = match read_page(ctx, 0).await? {
        Ok(page) => page,
        Err(err) => {
            imported.failed = Some(err.to_string());
            return Ok(imported);
        }
    };
    let total = first.total_count;
    let announced = total.div_ceil(PAGE_SIZE);
    let cap = ctx.settings.import.max_pages();
    let pages = Pages::default();
    let first_empty = first.orders.is_empty() && first.unreadable.is_empty();
    pages.brings_new(&first);
    store_page(ctx, first, &imported.fresh, &pages, tally).await?;
    if first_empty && announced > 1 {
        pages.halt(Halt::Empty(0));
    }

    // The first page tells how many there are; the rest follow, `import.parallel_pages` read at
    // once (each page in flight is a hundred parsed orders in memory), until something says
    // stop. A page is stored while the next one is read: the marketplace still sees no more
    // requests at once, and the import no longer waits for the database between them.
    let pages = &pages;
    let fresh = &imported.fresh;
    let offsets = (1..announced.min(cap))
        .map(|page| page * PAGE_SIZE)
        .take_while(|_| {
            if stop.is_cancelled() {
                pages.halt(Halt::Stopped);
            }
            !pages.halted()
        });
    let (to_store, mut stored) = tokio::sync::mpsc::channel::<OrdersPage>(1);
    let read = async move {
        let mut reads = stream::iter(offsets)
            .map(|offset| async move { (offset, read_page(ctx, offset).await) })
            .buffer_unordered(ctx.settings.import.parallel_pages as usize);
        while let Some((offset, page)) = reads.next().await {
            let Ok(page) = page? else { continue };
            if page.orders.is_empty() && page.unreadable.is_empty() {
                pages.halt(Halt::Empty(offset));
            } else if !pages.brings_new(&page) {
                pages.halt(Halt::NothingNew(offset));
            } else if to_store.send(page).await.is_err() {
                break;
            }
        }
        Ok::<(), RunError>(())
    };
    let store = async {
        while let Some(page) = stored.recv().await {
            store_page(ctx, page, fresh, pages, tally).await?;
        }
        Ok::<(), RunError>(())
    };
    tokio::try_join!(read, store)?;

    let halt = pages
        .halt
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take();
    imported.ended_early = match halt {
        Some(halt) => Some(halt.describe()),
        None if announced > cap => Some(format!(
            "it read {cap} pages, the cap import.max_orders ({}) sets, of the {announced} that total_count ({total}) announced; the next run reads on",
            ctx.settings.import.max_orders
        )),
        None => None,
    };
    imported.unreadable = pages.unreadable.load(Ordering::Relaxed);
    match &imported.ended_early {
        Some(why) => tracing::warn!(
            waiting_at_marketplace = total,
            unreadable = imported.unreadable,
            "import ended early: {why}"
        ),
        None => tracing::info!(
            waiting_at_marketplace = total,
            unreadable = imported.unreadable,
            "import finished"
        ),
    }
    Ok(imported)
}

/// One page, or the error when the marketplace cannot be read: the run goes on with the orders
/// the database already holds, and the next run imports again.
async fn read_page(
    ctx: &Context,
    offset: u64,
) -> Result<Result<OrdersPage, MarketplaceError>, RunError> {
    match ctx
        .client
        .orders_in_states_page(&[OrderState::WaitingAcceptance], offset)
        .await
    {
        Err(err @ MarketplaceError::Unauthorized { .. }) => Err(RunError::Unauthorized(err)),
        Err(err) => {
            tracing::error!(
                offset,
                error = %err,
                "import could not read the orders waiting for acceptance; this run goes on with the orders already stored and the next run imports again"
            );
            Ok(Err(err))
        }
        Ok(page) => Ok(Ok(page)),
    }
}

async fn store_page(
    ctx: &Context,
    page: OrdersPage,
    fresh: &FreshLines,
    pages: &Pages,
    tally: &Tally,
) -> Result<(), RunError> {
    for order in &page.unreadable {
        report_unreadable(ctx, order).await?;
        pages.unreadable.fetch_add(1, Ordering::Relaxed);
    }
    let stored: Vec<StoredOrder> = page.orders.iter().map(stored_order).collect();
    let new_ids = queue::insert_new_orders(&ctx.pool, ctx.shop(), &stored)
        .await
        .map_err(RunError::database("storing imported orders"))?;
    Tally::add(&tally.imported, new_ids.len());
    let mut by_id: HashMap<&str, &Order> = page
        .orders
        .iter()
        .map(|o| (o.order_id.as_str(), o))
        .collect();
    for id in new_ids {
        // An order listed without lines is read again by preflight.
        if let Some(terms) = by_id
            .remove(id.as_str())
            .map(Order::terms)
            .filter(|terms| !terms.lines.is_empty())
        {
            fresh.insert(id, terms);
        }
    }
    Ok(())
}

/// An order the worker cannot read is not stored (nothing could be done with it) but goes to
/// the inbox with its JSON, once: later imports that list it again add no row while that one
/// is open.
async fn report_unreadable(ctx: &Context, order: &UnreadableOrder) -> Result<(), RunError> {
    let which = order.order_id.as_deref().map_or_else(
        || "An order without a usable order_id".to_owned(),
        |id| format!("Order {id}"),
    );
    let details = format!(
        "{which} is listed as waiting for acceptance but cannot be read: {}. It was not imported, and every other order was. Accept or refuse it in the seller portal before its deadline (or have the marketplace fix it; the import reads it again each run), then resolve this failure.",
        order.reason
    );
    let payload = json!({"stage": "import", "error": order.reason, "order": order.raw});
    let recorded = failures::record_unreadable_once(
        &ctx.pool,
        ctx.shop(),
        order.order_id.as_deref(),
        &details,
        &payload,
    )
    .await
    .map_err(RunError::database("recording an unreadable order"))?;
    if recorded {
        tracing::warn!(order_id = order.order_id.as_deref(), reason = %order.reason, "unreadable order listed by OR11; it is in the inbox");
    }
    Ok(())
}

pub fn stored_order(order: &Order) -> StoredOrder<'_> {
    StoredOrder {
        order_id: &order.order_id,
        raw: &order.raw,
    }
}
