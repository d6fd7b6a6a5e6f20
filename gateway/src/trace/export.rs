//! Span export: finished spans go into a bounded queue (full: dropped and
//! counted, the request path never waits) that one task drains in batches
//! to an OTLP/gRPC collector through `opentelemetry-otlp`. The task is not
//! parked on the queue, so queuing a span wakes no one: it drains every
//! `export_delay_ms`, or at once when a batch's worth is waiting.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    time::Duration,
};

use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::{
    Resource,
    trace::{SpanData, SpanExporter as _},
};
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::config::trace::TracingConfig;

/// What span export did, for the metrics.
#[derive(Debug, Default)]
pub struct ExportCounters {
    /// Spans dropped because the export queue was full.
    pub dropped: AtomicU64,
    /// Spans the collector accepted.
    pub exported: AtomicU64,
    /// Spans whose export call failed or timed out.
    pub failed: AtomicU64,
}

/// Where finished spans go.
#[derive(Clone)]
pub(crate) struct SpanSink {
    tx: mpsc::Sender<SpanData>,
    /// Rung when a full batch is waiting.
    full: Arc<Notify>,
    max_batch: usize,
    counters: Arc<ExportCounters>,
}

impl SpanSink {
    /// Builds the OTLP exporter for `endpoint` and starts the export task
    /// (ended by `shutdown`, after a last flush).
    pub(crate) fn start(
        cfg: &TracingConfig,
        endpoint: &str,
        counters: Arc<ExportCounters>,
        shutdown: CancellationToken,
    ) -> Result<Self, String> {
        let timeout = Duration::from_millis(cfg.export_timeout_ms);
        let mut exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint)
            .with_timeout(timeout)
            .build()
            .map_err(|e| format!("OTLP exporter for `{endpoint}`: {e}"))?;
        exporter.set_resource(
            &Resource::builder_empty()
                .with_service_name(cfg.service_name.clone())
                .build(),
        );
        let (tx, rx) = mpsc::channel(cfg.max_queued_spans);
        let full = Arc::new(Notify::new());
        tokio::spawn(run(
            exporter,
            counters.clone(),
            rx,
            full.clone(),
            cfg.max_export_batch,
            Duration::from_millis(cfg.export_delay_ms),
            timeout,
            shutdown,
        ));
        Ok(Self {
            tx,
            full,
            max_batch: cfg.max_export_batch,
            counters,
        })
    }

    /// Queues spans for export; drops them when the queue is full.
    pub(crate) fn send(&self, spans: impl IntoIterator<Item = SpanData>) {
        for span in spans {
            if self.tx.try_send(span).is_err() {
                let n = self.counters.dropped.fetch_add(1, Relaxed);
                if n.is_power_of_two() {
                    warn!(dropped = n + 1, "Span export queue full; spans dropped");
                }
            }
        }
        if self.tx.max_capacity() - self.tx.capacity() >= self.max_batch {
            self.full.notify_one();
        }
    }
}

/// Drains the queue every `delay`, or when a full batch waits, in batches
/// of `max_batch`; whatever is queued goes out on shutdown.
#[allow(clippy::too_many_arguments)]
async fn run(
    exporter: opentelemetry_otlp::SpanExporter,
    counters: Arc<ExportCounters>,
    mut rx: mpsc::Receiver<SpanData>,
    full: Arc<Notify>,
    max_batch: usize,
    delay: Duration,
    timeout: Duration,
    shutdown: CancellationToken,
) {
    let mut batch = Vec::with_capacity(max_batch);
    loop {
        let stop = tokio::select! {
            () = tokio::time::sleep(delay) => false,
            () = full.notified() => false,
            () = shutdown.cancelled() => true,
        };
        while let Ok(span) = rx.try_recv() {
            batch.push(span);
            if batch.len() == max_batch {
                export(&exporter, &counters, &mut batch, timeout).await;
            }
        }
        export(&exporter, &counters, &mut batch, timeout).await;
        if stop {
            break;
        }
    }
}

async fn export(
    exporter: &opentelemetry_otlp::SpanExporter,
    counters: &ExportCounters,
    batch: &mut Vec<SpanData>,
    timeout: Duration,
) {
    if batch.is_empty() {
        return;
    }
    let n = batch.len();
    let spans = std::mem::replace(batch, Vec::with_capacity(n));
    match tokio::time::timeout(timeout, exporter.export(spans)).await {
        Ok(Ok(())) => {
            counters.exported.fetch_add(n as u64, Relaxed);
            debug!(spans = n, "Spans exported");
        }
        Ok(Err(error)) => {
            counters.failed.fetch_add(n as u64, Relaxed);
            warn!(spans = n, %error, "Span export failed");
        }
        Err(_) => {
            counters.failed.fetch_add(n as u64, Relaxed);
            warn!(spans = n, ?timeout, "Span export timed out");
        }
    }
}
