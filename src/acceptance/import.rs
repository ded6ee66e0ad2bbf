//! Import: pages through the orders waiting for acceptance at the marketplace and stores the
//! ones not seen before, each with a `pending_acceptance` row.
//!
//! It finishes before this run claims anything: OR11 pages by offset, and orders this run
//! accepted would leave the listing and shift the pages still to read.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use futures::{StreamExt, TryStreamExt, stream};

use super::{Context, RunError, Tally};
use crate::db::queue::{self, StoredOrder};
use crate::marketplace::{MarketplaceError, Order, OrderState, OrderTerms, OrdersPage};

/// OR11's largest page.
const PAGE_SIZE: u64 = 100;

/// Pages read and stored at once: storing one by one would hold up the run, and each page in
/// flight is a hundred parsed orders in memory.
const PAGES_AT_ONCE: usize = 4;

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

pub async fn import_waiting_orders(ctx: &Context, tally: &Tally) -> Result<FreshLines, RunError> {
    let fresh = FreshLines::default();
    let Some(first) = read_page(ctx, 0).await? else {
        return Ok(fresh);
    };
    let total = first.total_count;
    store_page(ctx, first, &fresh, tally).await?;

    // The first page tells how many there are; the rest are read and stored side by side.
    let offsets = (1..total.div_ceil(PAGE_SIZE)).map(|page| page * PAGE_SIZE);
    let fresh_ref = &fresh;
    stream::iter(offsets)
        .map(|offset| async move {
            match read_page(ctx, offset).await? {
                Some(page) => store_page(ctx, page, fresh_ref, tally).await,
                None => Ok(()),
            }
        })
        .buffer_unordered(PAGES_AT_ONCE)
        .try_collect::<()>()
        .await?;
    tracing::info!(waiting_at_marketplace = total, "import finished");
    Ok(fresh)
}

/// One page, or `None` when the marketplace cannot be read: the run goes on with the orders the
/// database already holds, and the next run imports again.
async fn read_page(ctx: &Context, offset: u64) -> Result<Option<OrdersPage>, RunError> {
    match ctx
        .client
        .orders_in_states_page(&[OrderState::WaitingAcceptance], offset)
        .await
    {
        Ok(page) => Ok(Some(page)),
        Err(err @ MarketplaceError::Unauthorized { .. }) => Err(RunError::Unauthorized(err)),
        Err(err) => {
            tracing::error!(
                offset,
                error = %err,
                "import could not read the orders waiting for acceptance; this run goes on with the orders already stored and the next run imports again"
            );
            Ok(None)
        }
    }
}

async fn store_page(
    ctx: &Context,
    page: OrdersPage,
    fresh: &FreshLines,
    tally: &Tally,
) -> Result<(), RunError> {
    let stored: Vec<StoredOrder> = page.orders.iter().map(stored_order).collect();
    let new_ids = queue::insert_new_orders(&ctx.pool, &stored)
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

pub fn stored_order(order: &Order) -> StoredOrder<'_> {
    StoredOrder {
        order_id: &order.order_id,
        raw: &order.raw,
        placed_at: order.created_date,
    }
}
