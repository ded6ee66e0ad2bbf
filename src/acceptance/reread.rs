//! Re-read: orders whose OR21 answer left their state unclear (a timeout, a 5xx, a 2xx that is
//! not a 204, a 400) are read back with OR11 before anything else is decided or sent, in
//! batched calls of at most 100 ids.
//!
//! Each request says how long to wait first: the back-off of the order's OR21 retries. The
//! stage reads when the earliest request is due, and every request due within two
//! `marketplace.retry_initial_delay` of it joins that read, so a burst of unclear answers costs
//! one OR11 call per 100 orders, not one per order, while an order backing off longer keeps its
//! wait.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use super::{Context, RunError};
use crate::marketplace::{MarketplaceError, Order};

/// What a re-read found.
#[derive(Debug)]
pub enum Reread {
    Found(Order),
    /// OR11 did not return the order.
    Missing,
    /// The marketplace could not be read; the text says why.
    Failed(String),
}

/// Where the accept stage asks for re-reads. Dropping it (when the accept stage ends) ends the
/// re-read stage.
pub struct Rereads(mpsc::UnboundedSender<Request>);

pub struct Request {
    order_id: String,
    due: Instant,
    reply: oneshot::Sender<Reread>,
}

pub fn channel() -> (Rereads, mpsc::UnboundedReceiver<Request>) {
    let (requests, incoming) = mpsc::unbounded_channel();
    (Rereads(requests), incoming)
}

impl Rereads {
    /// Reads the order in the first batch read at least `after` from now.
    pub async fn read(&self, order_id: &str, after: Duration) -> Reread {
        let (reply, answer) = oneshot::channel();
        let request = Request {
            order_id: order_id.to_owned(),
            due: Instant::now() + after,
            reply,
        };
        // The stage goes away only when the run stops on an error, which the run reports.
        let stopped = || Reread::Failed("the run stopped before the order was re-read".into());
        if self.0.send(request).is_err() {
            return stopped();
        }
        answer.await.unwrap_or_else(|_| stopped())
    }
}

pub async fn reread_all(
    ctx: &Context,
    mut incoming: mpsc::UnboundedReceiver<Request>,
) -> Result<(), RunError> {
    // Requests due within two first back-offs of the earliest join its read: the jitter of first
    // retries spans one, and answers a little apart the rest. Requests due later keep their
    // back-off.
    let join_window = ctx.settings.marketplace.retry.initial_delay * 2;
    let mut waiting: Vec<Request> = Vec::new();
    loop {
        let Some(due) = waiting.iter().map(|r| r.due).min() else {
            match incoming.recv().await {
                Some(request) => waiting.push(request),
                None => return Ok(()),
            }
            continue;
        };
        tokio::select! {
            request = incoming.recv() => match request {
                Some(request) => waiting.push(request),
                // Nobody is left to wait for an answer.
                None => return Ok(()),
            },
            () = tokio::time::sleep_until(due.into()) => {
                let (now_due, later): (Vec<Request>, Vec<Request>) = std::mem::take(&mut waiting)
                    .into_iter()
                    .partition(|r| r.due <= due + join_window);
                waiting = later;
                read_batch(ctx, now_due).await?;
            }
        }
    }
}

/// One OR11 read (split by the client into calls of at most 100 ids) for every waiting request.
async fn read_batch(ctx: &Context, batch: Vec<Request>) -> Result<(), RunError> {
    let ids: Vec<String> = batch.iter().map(|r| r.order_id.clone()).collect();
    tracing::info!(
        orders = ids.len(),
        "re-reading orders whose OR21 answer was unclear"
    );
    match ctx.client.orders_by_ids(&ids).await {
        Ok(orders) => {
            let mut by_id: HashMap<String, Order> = orders
                .into_iter()
                .map(|o| (o.order_id.clone(), o))
                .collect();
            for request in batch {
                let found = match by_id.remove(&request.order_id) {
                    Some(order) => Reread::Found(order),
                    None => Reread::Missing,
                };
                // A requester that went away (the run stopping) needs no answer.
                let _ = request.reply.send(found);
            }
        }
        Err(err @ MarketplaceError::Unauthorized { .. }) => {
            return Err(RunError::Unauthorized(err));
        }
        Err(err) => {
            tracing::warn!(orders = ids.len(), error = %err, "re-read failed");
            let text = err.to_string();
            for request in batch {
                let _ = request.reply.send(Reread::Failed(text.clone()));
            }
        }
    }
    Ok(())
}
