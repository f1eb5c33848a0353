//! Finalized blocks, in order, into the chain: the one place a validator commits.
//!
//! Marshal delivers every finalized block exactly in height order, at least once (again after
//! a restart, from the last one acknowledged), each with an acknowledgement it waits for. A
//! block is acknowledged only once [`pipe_chain::Chain::finalize`] has committed it durably,
//! so a crash between the two delivers it again, and a block at or below the chain's head is
//! acknowledged at once. A finalized block this node never verified (it was down, or missed
//! the proposal) is replayed first, without the results check: a quorum certified it.

use commonware_actor::Feedback;
use commonware_consensus::{Reporter, marshal::Update};
use commonware_cryptography::Digested;
use commonware_runtime::{Clock, Spawner};
use commonware_utils::{Acknowledgement, acknowledgement::Exact};
use futures::{StreamExt, channel::mpsc};
use tracing::{error, warn};

use crate::{app::Verifier, block::Block};

/// Marshal's reporter: hands each finalized block to [`run`].
#[derive(Clone, Debug)]
pub struct Finalizer {
    blocks: mpsc::UnboundedSender<(Digested<Block>, Exact)>,
}

/// The receiving end, for [`run`].
pub type Finalized = mpsc::UnboundedReceiver<(Digested<Block>, Exact)>;

impl Finalizer {
    pub fn new() -> (Self, Finalized) {
        let (blocks, rx) = mpsc::unbounded();
        (Self { blocks }, rx)
    }
}

impl Reporter for Finalizer {
    type Activity = Update<Block>;

    fn report(&mut self, activity: Update<Block>) -> Feedback {
        match activity {
            Update::Block(block, ack) => {
                // Never block here: the commit happens in `run`.
                if self.blocks.unbounded_send((block, ack)).is_err() {
                    return Feedback::Closed;
                }
                Feedback::Ok
            }
            Update::Tip(..) => Feedback::Ok,
        }
    }
}

/// Commits finalized blocks until marshal stops.
pub async fn run(clock: impl Clock + Spawner, verifier: Verifier, mut blocks: Finalized) {
    while let Some((block, ack)) = blocks.next().await {
        let chain = verifier.chain().clone();
        let number = block.inner().number();
        if number <= chain.head().number() {
            ack.acknowledge();
            continue;
        }
        let hash = block.inner().hash();
        if chain.pending(&hash).is_none() && !verifier.verify_one(&clock, block.inner(), true).await
        {
            // A certified block that does not replay here: this node's state or code differs
            // from the quorum's. Committing past it would fork; stop and say so.
            error!(target: "pipe::consensus", number, %hash, "a finalized block does not verify on this node: stopping");
            return;
        }
        let mut wait = 100;
        loop {
            // A durable commit (fsync): on the runtime's blocking pool.
            let committing = chain.clone();
            let done = clock
                .child("commit")
                .shared(true)
                .spawn(move |_| async move { committing.finalize(hash).map(|_| ()) })
                .await;
            match done {
                Ok(Ok(())) => break,
                Ok(Err(e)) => {
                    warn!(target: "pipe::consensus", number, error = %e, "finalization failed: retrying");
                    clock.sleep(std::time::Duration::from_millis(wait)).await;
                    wait = (wait * 2).min(5_000);
                }
                // Stopped (shutdown): the block is delivered again after the restart.
                Err(_) => return,
            }
        }
        ack.acknowledge();
    }
}
