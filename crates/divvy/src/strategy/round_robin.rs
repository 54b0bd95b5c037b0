//! Plain round robin.

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use crate::backend::Backend;
use crate::context::Context;
use crate::error::UpdateError;
use crate::strategy::{scan_from, Strategy};
use crate::view::View;

/// Each backend in turn, ignoring weights. Unavailable backends are skipped: the pick goes to the
/// next available one in order, so over `n` consecutive picks with a stable set every available
/// backend is chosen.
///
/// Cost: one atomic add, O(1); O(n) only while backends are unavailable.
#[derive(Clone, Copy, Debug, Default)]
pub struct RoundRobin;

impl RoundRobin {
    /// Round robin.
    pub const fn new() -> Self {
        RoundRobin
    }
}

/// The shared cursor of a round-robin set.
#[derive(Debug, Default)]
pub struct Cursor(AtomicUsize);

impl Strategy for RoundRobin {
    type Prepared = Cursor;

    fn name(&self) -> &'static str {
        "round-robin"
    }

    fn prepare(&self, _backends: &[Backend]) -> Result<Cursor, UpdateError> {
        Ok(Cursor::default())
    }

    #[inline]
    fn pick(&self, cursor: &Cursor, _ctx: &Context<'_>, view: &View<'_>) -> Option<usize> {
        let n = view.len();
        let i = cursor.0.fetch_add(1, Relaxed) % n;
        if view.is_available(i) {
            return Some(i);
        }
        scan_from(view, i)
    }
}
