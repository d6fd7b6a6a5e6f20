//! `sample.echo.v1.Echo`: every streaming kind, chosen status codes, sized payloads, deadlines
//! and cancellation (see `proto/echo.proto`). Metadata echo lives in [`crate::call`].

use std::{pin::Pin, sync::Arc, time::Duration};

use futures_util::{Stream, stream};
use tokio::time::{Instant, sleep_until};
use tonic::{Code, Request, Response, Status, Streaming};

use crate::{
    call::Deadline,
    echo::{
        EchoRequest, EchoResponse,
        echo_server::{Echo, EchoServer},
    },
    stats::Stats,
    stream_plan::StreamPlan,
};

/// Largest message Echo accepts or is asked to send; both directions.
const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;
/// How long `Slow` sleeps when the request does not say.
const DEFAULT_SLOW: Duration = Duration::from_secs(10);
/// Response payloads repeat 0, 1, …, 250 (a prime length, so chunk borders show).
const PAYLOAD_PATTERN_LEN: usize = 251;

type EchoStream = Pin<Box<dyn Stream<Item = Result<EchoResponse, Status>> + Send>>;

/// The tonic service, ready to add to a router.
pub(crate) fn server(server_id: String, stats: Arc<Stats>) -> EchoServer<EchoService> {
    EchoServer::new(EchoService { server_id, stats })
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
}

/// See the module docs.
#[derive(Debug)]
pub(crate) struct EchoService {
    server_id: String,
    stats: Arc<Stats>,
}

/// The status a request asks for, if any.
fn requested_status(request: &EchoRequest) -> Option<Status> {
    (request.status_code != 0).then(|| {
        Status::new(
            Code::from(request.status_code),
            request.status_message.clone(),
        )
    })
}

/// `response_bytes` of pattern, refused past [`MAX_MESSAGE_BYTES`].
fn payload(response_bytes: u32) -> Result<Vec<u8>, Status> {
    let len = usize::try_from(response_bytes).unwrap_or(usize::MAX);
    if len > MAX_MESSAGE_BYTES {
        return Err(Status::invalid_argument(format!(
            "response_bytes {len} is over the limit of {MAX_MESSAGE_BYTES}"
        )));
    }
    Ok((0..len).map(|i| (i % PAYLOAD_PATTERN_LEN) as u8).collect())
}

// === impl EchoService ===

impl EchoService {
    /// The answer to one request: its status if it asks for one, else the echo.
    fn reply(&self, request: &EchoRequest, seq: u64) -> Result<EchoResponse, Status> {
        if let Some(status) = requested_status(request) {
            return Err(status);
        }
        Ok(EchoResponse {
            message: request.message.clone(),
            payload: payload(request.response_bytes)?,
            server_id: self.server_id.clone(),
            received_bytes: request.payload.len() as u64,
            seq,
        })
    }
}

#[tonic::async_trait]
impl Echo for EchoService {
    async fn unary(&self, request: Request<EchoRequest>) -> Result<Response<EchoResponse>, Status> {
        self.reply(request.get_ref(), 0).map(Response::new)
    }

    type ServerStreamStream = EchoStream;

    async fn server_stream(
        &self,
        request: Request<EchoRequest>,
    ) -> Result<Response<Self::ServerStreamStream>, Status> {
        let request = request.into_inner();
        let failure = match (requested_status(&request), request.fail_after) {
            // A status without fail_after fails the call before any message.
            (Some(status), 0) => return Err(status),
            (failure, _) => failure,
        };
        let response = EchoResponse {
            message: request.message,
            payload: payload(request.response_bytes)?,
            server_id: self.server_id.clone(),
            received_bytes: request.payload.len() as u64,
            seq: 0,
        };
        let plan = StreamPlan {
            count: u64::from(request.count.max(1)),
            interval: Duration::from_millis(u64::from(request.interval_ms)),
            fail_after: u64::from(request.fail_after),
            failure,
            make: move |seq| EchoResponse {
                seq,
                ..response.clone()
            },
            seq: 0,
        };
        Ok(Response::new(Box::pin(plan.into_stream())))
    }

    async fn client_stream(
        &self,
        request: Request<Streaming<EchoRequest>>,
    ) -> Result<Response<EchoResponse>, Status> {
        let mut inbound = request.into_inner();
        let mut messages = Vec::new();
        let mut received_bytes = 0u64;
        let mut response_bytes = 0;
        while let Some(request) = inbound.message().await? {
            if let Some(status) = requested_status(&request) {
                return Err(status);
            }
            received_bytes += request.payload.len() as u64;
            response_bytes = request.response_bytes;
            messages.push(request.message);
        }
        Ok(Response::new(EchoResponse {
            seq: messages.len() as u64,
            message: messages.join(","),
            payload: payload(response_bytes)?,
            server_id: self.server_id.clone(),
            received_bytes,
        }))
    }

    type BidiStreamStream = EchoStream;

    async fn bidi_stream(
        &self,
        request: Request<Streaming<EchoRequest>>,
    ) -> Result<Response<Self::BidiStreamStream>, Status> {
        let state = BidiState {
            service: EchoService {
                server_id: self.server_id.clone(),
                stats: self.stats.clone(),
            },
            inbound: request.into_inner(),
            seq: 0,
            done: false,
        };
        // One reply per inbound message as it arrives, so replies flow while the client sends.
        Ok(Response::new(Box::pin(stream::unfold(
            state,
            BidiState::next,
        ))))
    }

    async fn slow(&self, request: Request<EchoRequest>) -> Result<Response<EchoResponse>, Status> {
        let wait = match request.get_ref().interval_ms {
            0 => DEFAULT_SLOW,
            ms => Duration::from_millis(u64::from(ms)),
        };
        let done_at = Instant::now() + wait;
        match request.extensions().get::<Deadline>() {
            Some(&Deadline(deadline)) if deadline < done_at => {
                sleep_until(deadline).await;
                self.stats.record_deadline_exceeded();
                Err(Status::deadline_exceeded(
                    "deadline passed before Slow finished",
                ))
            }
            // A cancel drops this future mid-sleep; the call's guard counts it.
            _ => {
                sleep_until(done_at).await;
                self.reply(request.get_ref(), 0).map(Response::new)
            }
        }
    }
}

/// Where a `BidiStream` response stream is.
struct BidiState {
    service: EchoService,
    inbound: Streaming<EchoRequest>,
    seq: u64,
    done: bool,
}

impl BidiState {
    async fn next(mut self) -> Option<(Result<EchoResponse, Status>, Self)> {
        if self.done {
            return None;
        }
        let reply = match self.inbound.message().await {
            Ok(Some(request)) => self.service.reply(&request, self.seq),
            Ok(None) => return None,
            Err(status) => Err(status),
        };
        // A status, asked for or from the inbound stream, ends the call.
        self.done = reply.is_err();
        self.seq += 1;
        Some((reply, self))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_follows_the_pattern_and_limit() {
        let bytes = payload(300).expect("small payload");
        assert_eq!(bytes.len(), 300);
        assert_eq!(
            (bytes[0], bytes[250], bytes[251], bytes[299]),
            (0, 250, 0, 48)
        );
        assert!(payload(u32::MAX).is_err());
    }
}
