//! An OTLP/gRPC trace sink in this process, for runs whose gateway exports
//! spans (`{otlp}` in `--gateway-config` / `--baseline-config`): it accepts
//! every export and counts the spans, so the gateway's tracing cost is
//! measured against a collector that answers at once.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
};

use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
    trace_service_server::{TraceService, TraceServiceServer},
};

/// The running sink.
#[derive(Clone, Default)]
pub(crate) struct OtlpSink {
    spans: Arc<AtomicU64>,
}

#[tonic::async_trait]
impl TraceService for OtlpSink {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let n: usize = request
            .get_ref()
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .map(|s| s.spans.len())
            .sum();
        self.spans.fetch_add(n as u64, Relaxed);
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

impl OtlpSink {
    /// Serves on a loopback port; returns the sink and its address.
    pub(crate) async fn start() -> anyhow::Result<(Self, SocketAddr)> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let sink = Self::default();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(TraceServiceServer::new(sink.clone()))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        Ok((sink, addr))
    }

    /// Spans received so far.
    pub(crate) fn spans(&self) -> u64 {
        self.spans.load(Relaxed)
    }
}
