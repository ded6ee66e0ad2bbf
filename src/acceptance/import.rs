//! Import: pages through the orders waiting for acceptance at the marketplace and stores the
//! ones not seen before, each with a `pending_acceptance` row.

use std::collections::HashMap;

use futures::{StreamExt, TryStreamExt, stream};

use super::outcome::line_ids;
use super::{Context, RunError, Tally};
use crate::db::queue::{self, StoredOrder};
use crate::marketplace::{MarketplaceError, Order, OrderState, OrdersPage};

/// OR11's largest page.
const PAGE_SIZE: u64 = 100;

/// Orders this run stored, with the line ids the import just read. The marketplace state of
/// these orders is seconds old, so preflight does not read them again when this run is the
/// first to claim them: an order decided in between is caught by OR21's ORDER_INVALID_STATE
/// and re-read then.
#[derive(Default)]
pub struct Imported {
    pub fresh_lines: HashMap<String, Vec<String>>,
}

pub async fn import_waiting_orders(ctx: &Context, tally: &Tally) -> Result<Imported, RunError> {
    let mut imported = Imported::default();
    let first = match read_page(ctx, 0).await? {
        Some(page) => page,
        None => return Ok(imported),
    };
    let total = first.total_count;
    store_page(ctx, first, &mut imported, tally).await?;

    // The first page tells how many there are; the rest are read side by side.
    let offsets = (1..total.div_ceil(PAGE_SIZE)).map(|page| page * PAGE_SIZE);
    let mut pages = stream::iter(offsets)
        .map(|offset| read_page(ctx, offset))
        .buffered(ctx.settings.acceptance.concurrency as usize);
    while let Some(page) = pages.try_next().await? {
        match page {
            Some(page) => store_page(ctx, page, &mut imported, tally).await?,
            None => break,
        }
    }
    tracing::info!(
        waiting_at_marketplace = total,
        imported = imported.fresh_lines.len(),
        "import finished"
    );
    Ok(imported)
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
    imported: &mut Imported,
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
        let lines = by_id.remove(id.as_str()).map(line_ids).unwrap_or_default();
        // An order listed without lines is read again by preflight.
        if !lines.is_empty() {
            imported.fresh_lines.insert(id, lines);
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
