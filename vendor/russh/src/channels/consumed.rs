//! Channel windows opened as the application reads (Portcullis patch).
//!
//! Upstream russh opens a channel's receive window as soon as data arrives,
//! and queues that data for the application in a bounded queue that the
//! session loop waits on. A channel whose reader stalls while its peer keeps
//! sending therefore fills the queue and stops the whole connection.
//!
//! With this tracker, the reader counts what it takes from the queue, and
//! wakes the session loop, which opens the window by that much. A peer then
//! never has more in flight for a channel than the window allows, whether
//! or not its reader keeps up, and the other channels go on.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use tokio::sync::mpsc::UnboundedSender;

use crate::ChannelId;

/// What a channel's queue charges for one data message beyond its bytes, so
/// that a flood of tiny packets cannot queue more than the window in
/// bookkeeping.
pub(crate) const MESSAGE_COST: u64 = 64;

/// Shared by a channel's reader and its session.
#[derive(Debug, Default)]
pub(crate) struct Consumed {
    /// Cost taken from the queue and not yet seen by the session.
    taken: AtomicU64,
    /// Set by a session that opens this channel's window on consumption.
    session: OnceLock<(ChannelId, UnboundedSender<ChannelId>)>,
}

impl Consumed {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Makes `session` open this channel's window as the reader consumes.
    /// A channel is registered with one session, once.
    pub(crate) fn attach(&self, id: ChannelId, session: UnboundedSender<ChannelId>) {
        let _ = self.session.set((id, session));
    }

    pub(crate) fn is_attached(&self) -> bool {
        self.session.get().is_some()
    }

    /// The reader took a data message of `len` bytes.
    pub(crate) fn took(&self, len: usize) {
        let Some((id, session)) = self.session.get() else {
            return;
        };
        let cost = len as u64 + MESSAGE_COST;
        // Only the first unseen consumption wakes the session; it collects
        // the rest with it.
        if self.taken.fetch_add(cost, Ordering::AcqRel) == 0 {
            let _ = session.send(*id);
        }
    }

    /// What the reader took since the last call (for the session).
    pub(crate) fn collect(&self) -> u64 {
        self.taken.swap(0, Ordering::AcqRel)
    }
}

/// A session's end: the channels whose readers took data since it last
/// looked.
#[derive(Debug)]
pub(crate) struct ConsumedWindows {
    pub(crate) sender: UnboundedSender<ChannelId>,
    pub(crate) receiver: tokio::sync::mpsc::UnboundedReceiver<ChannelId>,
}

impl ConsumedWindows {
    pub(crate) fn new() -> Self {
        let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
        Self { sender, receiver }
    }
}
