//! Transactions between validators: each one a node admits is sent to every other validator,
//! so whoever leads next has it, and every validator's PIPE pre-computes its inference.
//!
//! A node sends what its pool admitted; a receiver hands the bytes to its own admission,
//! whose pool sends them on only if they are new to it, so a transaction crosses each link
//! at most twice and the flood ends by itself.

use commonware_cryptography::ed25519::PublicKey;
use commonware_p2p::{Receiver, Recipients, Sender};
use futures::{StreamExt, channel::mpsc};
use tracing::debug;

/// Runs until either side closes: `outbound` (raw transactions this node admitted) goes to
/// every peer; what peers send goes to `inbound`.
pub async fn run<S, R>(
    mut sender: S,
    mut receiver: R,
    mut outbound: mpsc::UnboundedReceiver<Vec<u8>>,
    inbound: impl Fn(PublicKey, Vec<u8>) + Send + 'static,
) where
    S: Sender<PublicKey = PublicKey>,
    R: Receiver<PublicKey = PublicKey>,
{
    loop {
        commonware_macros::select! {
            raw = outbound.next() => {
                let Some(raw) = raw else { return };
                sender.send(Recipients::All, raw, false);
            },
            message = receiver.recv() => {
                match message {
                    Ok((from, bytes)) => inbound(from, bytes.as_ref().to_vec()),
                    Err(e) => {
                        debug!(target: "pipe::consensus", error = %e, "transaction gossip closed");
                        return;
                    }
                }
            },
        }
    }
}
