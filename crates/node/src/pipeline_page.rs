//! The live pipeline page: `GET /` is one static HTML file (built into the binary, no build
//! step, no dependencies), `GET /events` a server-sent-event stream of JSON snapshots.
//!
//! One sampler task reads the pipeline ([`Pipe::pipeline`]), the recent blocks' inference
//! price and load, and the model store, five times a second, and publishes a snapshot only
//! when it differs from the last; it does nothing while nobody watches. Each open page holds
//! a receiver of that one snapshot, so a hundred viewers cost what one does, and a slow
//! viewer only misses intermediate snapshots (it always gets the newest).

use std::{
    collections::VecDeque,
    convert::Infallible,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::{
    Router,
    http::header,
    response::{
        Html,
        sse::{Event, KeepAlive, Sse},
    },
    routing::get,
};
use pipe_inference_pool::{Pipe, view::PipelineView};
use pipe_primitives::{InferenceFields, SealedBlock, Tasks};
use pipe_rpc::ModelRegistry;
use pipe_storage::Store;
use serde::Serialize;
use tokio::sync::watch;

/// The page, served as is.
const PAGE: &str = include_str!("pipeline.html");
/// Blocks whose inference price the page charts.
const PRICE_BLOCKS: usize = 64;
/// How often the sampler looks.
const SAMPLE: Duration = Duration::from_millis(200);

/// What the page shows.
#[derive(Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
struct Snapshot {
    head: u64,
    /// The inference gas price and the cost units charged, per recent block, oldest first.
    prices: Vec<PricePoint>,
    models: Vec<ModelRow>,
    pipeline: PipelineView,
}

#[derive(Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
struct PricePoint {
    number: u64,
    price: u64,
    units: u64,
}

#[derive(Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
struct ModelRow {
    name: String,
    id: String,
    cost_units: u64,
}

/// What the sampler reads.
pub struct Sources {
    pub pipe: Arc<Pipe>,
    pub store: Arc<Store>,
    pub head: watch::Receiver<Arc<SealedBlock>>,
    pub models: Arc<dyn ModelRegistry>,
}

/// Serves the page on `addr` as tasks of `tasks` until `shutdown` flips; the bound address.
pub async fn serve(
    addr: SocketAddr,
    sources: Sources,
    tasks: &Tasks,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<SocketAddr> {
    let (publish, snapshots) = watch::channel(Arc::new(String::new()));
    let watchers = Arc::new(AtomicUsize::new(0));
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tasks.spawn(sample(sources, publish, watchers.clone(), shutdown.clone()));
    let app = Router::new()
        .route(
            "/",
            get(|| async { ([(header::CACHE_CONTROL, "no-store")], Html(PAGE)) }),
        )
        .route(
            "/events",
            get(move || {
                let watcher = Watcher::new(snapshots.clone(), watchers.clone());
                async move { Sse::new(stream(watcher)).keep_alive(KeepAlive::default()) }
            }),
        );
    crate::metrics_server::spawn_http(listener, app, tasks, shutdown);
    Ok(bound)
}

/// One open page: counted while its stream lives, so the sampler knows someone watches.
struct Watcher {
    rx: watch::Receiver<Arc<String>>,
    watchers: Arc<AtomicUsize>,
}

impl Watcher {
    fn new(mut rx: watch::Receiver<Arc<String>>, watchers: Arc<AtomicUsize>) -> Self {
        watchers.fetch_add(1, Ordering::SeqCst);
        // The current snapshot goes out at once (empty while nobody watched: the sampler
        // publishes one within a tick).
        rx.mark_changed();
        Self { rx, watchers }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.watchers.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Each new snapshot, as an event.
fn stream(watcher: Watcher) -> impl futures::Stream<Item = Result<Event, Infallible>> {
    futures::stream::unfold(watcher, |mut w| async move {
        loop {
            w.rx.changed().await.ok()?;
            let data = w.rx.borrow_and_update().clone();
            if !data.is_empty() {
                return Some((Ok(Event::default().data(data.as_str())), w));
            }
        }
    })
}

/// Publishes a snapshot whenever the pipeline changes, while anyone watches.
async fn sample(
    sources: Sources,
    publish: watch::Sender<Arc<String>>,
    watchers: Arc<AtomicUsize>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut prices: VecDeque<PricePoint> = VecDeque::new();
    let mut tick = tokio::time::interval(SAMPLE);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tick.tick() => {}
        }
        if watchers.load(Ordering::SeqCst) == 0 {
            // Forget the last snapshot, so a page that opens next gets one at once even if
            // nothing changed meanwhile.
            publish.send_replace(Arc::new(String::new()));
            continue;
        }
        let head = sources.head.borrow().clone();
        let number = head.header.number;
        follow_prices(&mut prices, &sources.store, &head);
        let snapshot = Snapshot {
            head: number,
            prices: prices.iter().cloned().collect(),
            models: sources
                .models
                .list()
                .into_iter()
                .map(|m| ModelRow {
                    name: m.name,
                    id: m.id.to_string(),
                    cost_units: m.cost_units,
                })
                .collect(),
            pipeline: sources.pipe.pipeline(),
        };
        let Ok(json) = serde_json::to_string(&snapshot) else {
            continue;
        };
        publish.send_if_modified(|current| {
            if **current == json {
                return false;
            }
            *current = Arc::new(json);
            true
        });
    }
}

/// Brings the price series up to `head`: the blocks after the newest known, read once each.
fn follow_prices(prices: &mut VecDeque<PricePoint>, store: &Store, head: &SealedBlock) {
    let newest = prices.back().map(|p| p.number);
    if newest == Some(head.header.number) {
        return;
    }
    let from = newest
        .map(|n| n + 1)
        .unwrap_or(0)
        .max(head.header.number.saturating_sub(PRICE_BLOCKS as u64 - 1));
    for n in from..=head.header.number {
        let header = if n == head.header.number {
            Some(head.header.clone())
        } else {
            store.header(n).ok().flatten()
        };
        // Genesis carries no inference fields: there is no price to chart for it.
        let Some(fields) = header.and_then(|h| InferenceFields::decode(&h.extra_data).ok()) else {
            continue;
        };
        prices.push_back(PricePoint {
            number: n,
            price: fields.gas_price,
            units: fields.units,
        });
        while prices.len() > PRICE_BLOCKS {
            prices.pop_front();
        }
    }
}
