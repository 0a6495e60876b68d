//! Process-wide bookkeeping: which sockets are attached (for EALREADY), which muxes are alive
//! and the counters of muxes already destroyed (the kernel keeps both per network namespace,
//! `kcm-spec.md` §1.1, §7.3).

use std::collections::HashSet;
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError, Weak};

use kcm_core::stats::{ConnStats, MuxStats};

use crate::shared::Shared;

/// A socket's identity: (device, inode) of its inode, the same for every descriptor of it.
pub(crate) type SockId = (u64, u64);

#[derive(Default)]
pub(crate) struct Registry {
    pub(crate) attached: HashSet<SockId>,
    pub(crate) muxes: Vec<Weak<Shared>>,
    pub(crate) dead_mux: MuxStats,
    pub(crate) dead_conn: ConnStats,
}

static REGISTRY: OnceLock<Mutex<Registry>> = OnceLock::new();

pub(crate) fn lock() -> MutexGuard<'static, Registry> {
    // The registry holds plain data; a panic elsewhere cannot leave it half-updated.
    REGISTRY
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
}
