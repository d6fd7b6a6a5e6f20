//! `CodenameCreator`, the service of the HAProxy gRPC demo: "Adjective Animal" codenames whose
//! adjective list depends on the requested category.

use std::time::Duration;

use rand::seq::IndexedRandom as _;
use tokio::{
    sync::mpsc,
    time::{MissedTickBehavior, interval},
};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::codename::{
    NameRequest, NameResult,
    codename_creator_server::{CodenameCreator, CodenameCreatorServer},
};

/// Codenames buffered towards a slow client before the stream task waits.
const STREAM_BUFFER: usize = 4;

const DEFAULT_ADJECTIVES: &[&str] = &[
    "Bold", "Brave", "Cheerful", "Clever", "Daring", "Eager", "Fearless", "Gentle", "Happy",
    "Jolly", "Lively", "Mighty", "Nimble", "Proud", "Quiet", "Swift", "Witty", "Zesty",
];
const SCIENCE_ADJECTIVES: &[&str] = &[
    "Atomic",
    "Binary",
    "Catalytic",
    "Entropic",
    "Ionic",
    "Kinetic",
    "Magnetic",
    "Neural",
    "Photonic",
    "Quantum",
    "Relativistic",
    "Thermal",
];
const SPACE_ADJECTIVES: &[&str] = &[
    "Astral",
    "Celestial",
    "Cosmic",
    "Galactic",
    "Interstellar",
    "Lunar",
    "Nebular",
    "Orbital",
    "Solar",
    "Stellar",
];
const COLOR_ADJECTIVES: &[&str] = &[
    "Amber", "Azure", "Crimson", "Emerald", "Golden", "Indigo", "Scarlet", "Silver", "Teal",
    "Violet",
];
const ANIMALS: &[&str] = &[
    "Badger", "Coyote", "Falcon", "Heron", "Koala", "Lynx", "Marmot", "Narwhal", "Otter", "Panda",
    "Quokka", "Raccoon", "Walrus", "Yak", "Zebra",
];

/// The adjective list for a category; unknown categories get the default list.
fn adjectives(category: &str) -> &'static [&'static str] {
    match category.trim().to_ascii_lowercase().as_str() {
        "science" => SCIENCE_ADJECTIVES,
        "space" => SPACE_ADJECTIVES,
        "colors" | "colours" => COLOR_ADJECTIVES,
        _ => DEFAULT_ADJECTIVES,
    }
}

/// A random "Adjective Animal" codename flavoured by `category`.
fn codename(category: &str) -> String {
    let mut rng = rand::rng();
    let adjective = adjectives(category).choose(&mut rng).unwrap_or(&"Nameless");
    let animal = ANIMALS.choose(&mut rng).unwrap_or(&"Creature");
    format!("{adjective} {animal}")
}

/// The tonic service, ready to add to a router.
pub(crate) fn server(interval: Duration) -> CodenameCreatorServer<CodenameService> {
    CodenameCreatorServer::new(CodenameService { interval })
}

/// See the module docs.
#[derive(Debug)]
pub(crate) struct CodenameService {
    interval: Duration,
}

#[tonic::async_trait]
impl CodenameCreator for CodenameService {
    async fn get_codename(
        &self,
        request: Request<NameRequest>,
    ) -> Result<Response<NameResult>, Status> {
        let name = codename(&request.into_inner().category);
        Ok(Response::new(NameResult { name }))
    }

    type KeepGettingCodenamesStream = ReceiverStream<Result<NameResult, Status>>;

    async fn keep_getting_codenames(
        &self,
        request: Request<Streaming<NameRequest>>,
    ) -> Result<Response<Self::KeepGettingCodenamesStream>, Status> {
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        // The task ends when the client half-closes, fails or goes away (the response stream,
        // and so `rx`, is dropped), so it never outlives the call.
        tokio::spawn(stream_codenames(request.into_inner(), tx, self.interval));
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// Sends a codename every `period` for the latest category received, from the first request
/// on, until the inbound stream ends or the client is gone.
async fn stream_codenames(
    mut inbound: Streaming<NameRequest>,
    tx: mpsc::Sender<Result<NameResult, Status>>,
    period: Duration,
) {
    let mut category = tokio::select! {
        _ = tx.closed() => return,
        first = inbound.message() => match first {
            Ok(Some(request)) => request.category,
            // Half-closed without asking, or the client failed: nothing to send.
            Ok(None) | Err(_) => return,
        },
    };
    let mut ticks = interval(period.max(Duration::from_millis(1)));
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        // Every branch is cancel-safe: `closed`, `Streaming::message` (its state lives in the
        // stream) and `Interval::tick`.
        tokio::select! {
            _ = tx.closed() => return,
            next = inbound.message() => match next {
                Ok(Some(request)) => category = request.category,
                Ok(None) | Err(_) => return,
            },
            _ = ticks.tick() => {
                let result = NameResult { name: codename(&category) };
                // Fails only once the response stream is gone.
                if tx.send(Ok(result)).await.is_err() {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codename_is_adjective_animal_for_the_category() {
        for (category, list) in [
            ("science", SCIENCE_ADJECTIVES),
            ("Space", SPACE_ADJECTIVES),
            ("animals", DEFAULT_ADJECTIVES),
            ("no such category", DEFAULT_ADJECTIVES),
        ] {
            let name = codename(category);
            let (adjective, animal) = name.split_once(' ').expect("two words");
            assert!(list.contains(&adjective), "{category}: {name}");
            assert!(ANIMALS.contains(&animal), "{category}: {name}");
        }
    }
}
