//! A budget of bytes for what the dispatcher holds on behalf of requests
//! that are not finished yet (the submission queue, running jobs): each
//! holder takes its size up front and gives it back when dropped, so
//! memory stays bounded and the request that would exceed it is refused
//! at once, with a reason, instead of growing the heap.

use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

#[derive(Debug, Clone)]
pub struct ByteBudget {
    room: Arc<Semaphore>,
    max_bytes: usize,
}

/// Bytes taken from a [`ByteBudget`]; given back when dropped.
#[derive(Debug)]
pub struct Held {
    _room: OwnedSemaphorePermit,
}

impl ByteBudget {
    pub fn new(max_bytes: usize) -> ByteBudget {
        let max_bytes = max_bytes.min(Semaphore::MAX_PERMITS);
        ByteBudget {
            room: Arc::new(Semaphore::new(max_bytes)),
            max_bytes,
        }
    }

    /// Takes `bytes`, or `None` when they do not fit now.
    pub fn try_take(&self, bytes: usize) -> Option<Held> {
        let bytes = u32::try_from(bytes).ok()?;
        self.room
            .clone()
            .try_acquire_many_owned(bytes)
            .ok()
            .map(|room| Held { _room: room })
    }

    /// Bytes held now.
    pub fn used(&self) -> usize {
        self.max_bytes - self.room.available_permits()
    }

    pub fn max_bytes(&self) -> usize {
        self.max_bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_at_most_its_bytes_and_gets_them_back() {
        let budget = ByteBudget::new(100);
        let a = budget.try_take(60).expect("fits");
        assert!(budget.try_take(41).is_none());
        let b = budget.try_take(40).expect("fits exactly");
        assert_eq!(budget.used(), 100);
        drop(a);
        assert_eq!(budget.used(), 40);
        assert!(budget.try_take(60).is_some());
        drop(b);
        assert!(
            budget.try_take(101).is_none(),
            "more than the whole never fits"
        );
        assert!(budget.try_take(usize::MAX).is_none());
    }
}
