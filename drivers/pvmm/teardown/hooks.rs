// SPDX-License-Identifier: GPL-2.0

//! The mm hooks: CREATE at `pgd_alloc` (waited for, in `create`), DESTROY at
//! `exit_mmap`, and `pgd_free` parked until the host acknowledges; and the throttling
//! of creation at the caps.

use core::sync::atomic::{
    AtomicBool,
    Ordering::{Acquire, Relaxed},
};
use kernel::{
    mm_hooks::{AddressSpace, MmHooks, PageDirectory},
    prelude::*,
    rbtree::RBTreeNode,
    sync::{Arc, ArcBorrow, CondVarTimeoutResult},
    time::{msecs_to_jiffies, Ktime},
};

use super::{create::elapsed_us, Inner, InnerGuard, Teardown};
use crate::{
    notify::Doorbell,
    settings::{Mode, Setting},
    space::{Space, State},
    stats::count_problem,
    sync::{self, Awaited},
    wire::{self, Op, SharedMemory, Why},
};

impl<M: SharedMemory + Send + Sync + 'static, B: Doorbell + 'static> Teardown<M, B> {
    /// Whether the host has acknowledged nothing for `host_timeout_ms` while it owes
    /// work: a submission it has not taken, or a DESTROY not acknowledged, in flight
    /// or in the backlog (which a host that takes nothing keeps there). Such a host is
    /// reported once and no longer throttles creation: its parked page directories
    /// stay parked (one page per exited process) until it answers or the driver
    /// detaches, because a host that is only slow may still read them.
    pub(super) fn host_is_dead(&self, inner: &mut Inner) -> bool {
        if inner.host_dead {
            return true;
        }
        let limit_ms = i64::try_from(self.settings.get(Setting::HostTimeoutMs)).unwrap_or(i64::MAX);
        if !self.host_owes(inner) || (Ktime::ktime_get() - inner.last_progress).to_ms() < limit_ms {
            return false;
        }
        inner.host_dead = true;
        if count_problem(&self.stats().host_declared_dead) {
            pr_err!(
                "host acknowledged nothing for {limit_ms} ms with {} teardowns outstanding; \
                 no longer throttling\n",
                inner.outstanding.spaces
            );
        }
        self.progress.notify_all();
        true
    }

    /// Waits at the cap before a new address space is created. Fails with `EINTR` when
    /// killed and `ENOMEM` when the host makes no room within `throttle_timeout_ms`.
    /// A host taken for dead ([`Self::host_is_dead`]) throttles nothing.
    fn throttle(&self, guard: &mut InnerGuard<'_>) -> Result {
        let pass = |this: &Self, inner: &mut Inner| {
            !inner.outstanding.at_cap(this.settings)
                || !inner.hooks_active
                || inner.broken
                || this.host_is_dead(inner)
        };
        if pass(self, guard) {
            return Ok(());
        }
        self.stats().throttle_events.fetch_add(1, Relaxed);
        let start = Ktime::ktime_get();
        let limit_us = self
            .settings
            .get(Setting::ThrottleTimeoutMs)
            .saturating_mul(1000);
        guard.throttled += 1;
        let result = loop {
            if pass(self, guard) {
                break Ok(());
            }
            let waited = elapsed_us(start);
            if waited >= limit_us {
                self.stats().throttle_timeouts.fetch_add(1, Relaxed);
                break Err(ENOMEM);
            }
            let left_ms = u32::try_from((limit_us - waited).div_ceil(1000)).unwrap_or(u32::MAX);
            // Bounded steps: completions come through the interrupt thread and the poll.
            let step = msecs_to_jiffies(left_ms.min(100));
            if let CondVarTimeoutResult::Signal { .. } =
                self.progress.wait_killable_timeout(guard, step)
            {
                break Err(EINTR);
            }
        };
        guard.throttled -= 1;
        self.stats()
            .throttle_wait_us
            .fetch_add(elapsed_us(start), Relaxed);
        result
    }
}

impl<M: SharedMemory + Send + Sync + 'static, B: Doorbell + 'static> MmHooks for Teardown<M, B> {
    fn pgd_alloc(this: ArcBorrow<'_, Self>, space: &AddressSpace) -> Result {
        if this.settings.mode() == Mode::Off {
            this.stats().spaces_untracked.fetch_add(1, Relaxed);
            return Ok(());
        }
        let id = space.id();
        let record = Space::new(wire::tag(this.epoch, this.next_seq.fetch_add(1, Relaxed)))?;
        let node = RBTreeNode::new(id, record, GFP_KERNEL)?;
        let mut guard = this.await_reset(this.inner.lock())?;
        this.throttle(&mut guard)?;
        let inner = &mut *guard;
        if !inner.hooks_active {
            return Ok(());
        }
        if inner.broken || this.host_is_dead(inner) {
            // No host can create it now (the ring stopped for good, or the host does
            // not answer): it runs without one, as in `off`.
            drop(guard);
            this.stats().spaces_hostless.fetch_add(1, Relaxed);
            return Ok(());
        }
        if let Some(old) = inner.spaces.get(&id) {
            // Ids are unique while tracked, so this is a driver bug; recover.
            pr_warn!(
                "replacing stale record of space {id:#x} (tag {})\n",
                old.tag
            );
            drop(inner.untrack(id));
        }
        inner.spaces.insert(node);
        inner.spaces_live += 1;
        this.stats().spaces_created.fetch_add(1, Relaxed);
        let n = u32::from(this.submit(inner, id, Op::Create));
        this.publish(inner, n);
        this.note_busy(inner);
        drop(guard);
        if n != 0 {
            // Not batched: the fork or exec waits for the answer.
            this.notifier.notify_create(&this.stats);
        }
        Self::poll_while_busy(this);
        this.await_creation(id)
    }

    fn exit_mmap(this: ArcBorrow<'_, Self>, space: &AddressSpace) {
        let id = space.id();
        let pages = space.rss_pages();
        let mode = this.settings.mode();
        let blocking = matches!(mode, Mode::Sync | Mode::Chunked);
        // A blocking teardown's flag, allocated before the lock, under which nothing is
        // allocated. Without it the teardown goes asynchronous.
        let waiter = if blocking {
            Arc::new(AtomicBool::new(false), GFP_KERNEL).ok()
        } else {
            None
        };
        let mut guard = this.inner.lock();
        let inner = &mut *guard;
        let Some(s) = inner.spaces.get_mut(&id) else {
            drop(guard);
            let c = if mode == Mode::Off {
                &this.stats().teardowns_off
            } else {
                &this.stats().untracked_exits
            };
            c.fetch_add(1, Relaxed);
            return;
        };
        if s.state != State::Live {
            return;
        }
        if inner.broken {
            // The host is being reset, which forgets this space too; its page
            // directory waits for that like any other.
            s.state = State::Destroying;
            s.pages = pages;
            inner.outstanding.add(pages);
            drop(guard);
            this.stats().fallback_exits.fetch_add(1, Relaxed);
            return;
        }
        let c = match mode {
            Mode::Sync => &this.stats().teardowns_sync,
            Mode::Chunked => &this.stats().teardowns_chunked,
            // A space registered before the switch to `off` still has a host object,
            // which is destroyed as in `async`.
            Mode::Off => &this.stats().teardowns_off,
            Mode::Async => &this.stats().teardowns_async,
        };
        c.fetch_add(1, Relaxed);
        let tag = s.tag;
        match &waiter {
            Some(w) => s.waiter = Some(w.clone()),
            None if blocking => {
                this.stats().sync_fallbacks.fetch_add(1, Relaxed);
            }
            None => {}
        }
        let n = u32::from(this.start_destroy(inner, id, pages));
        let Some(waiter) = waiter else {
            return Self::publish_and_notify(this, guard, n);
        };
        // The blocking call rings itself, and must not spin under the lock.
        this.publish(inner, n);
        drop(guard);
        if n == 0 {
            // Queued behind a full ring (or nothing to do): completes asynchronously.
            if !waiter.load(Acquire) {
                this.stats().sync_fallbacks.fetch_add(1, Relaxed);
            }
            return;
        }
        sync::wait_for_ack(
            &this.notifier,
            &this.stats,
            &this.maxima,
            this.settings,
            &this.layout,
            Awaited {
                waiter: &waiter,
                id,
                tag,
            },
            mode,
        );
        // Consume the acknowledgment now rather than at the next interrupt.
        this.process_completions();
        Self::poll_while_busy(this);
    }

    fn pgd_free(this: ArcBorrow<'_, Self>, pgd: PageDirectory) {
        let id = pgd.id();
        let mut guard = this.inner.lock();
        let inner = &mut *guard;
        let Some(mut state) = inner.spaces.get(&id).map(|s| s.state) else {
            // Not tracked: nothing on the host refers to it.
            return drop(pgd);
        };
        let mut n = 0;
        if state == State::Live {
            if inner.broken {
                // Freed without exit_mmap while the ring is stopped: wait for the
                // reset, which forgets the host's object.
                if let Some(s) = inner.spaces.get_mut(&id) {
                    s.state = State::Destroying;
                    // A live space's pages are 0: only exits set them.
                    inner.outstanding.add(s.pages);
                }
            } else {
                // Freed without exit_mmap (fork or exec failed after pgd_alloc): the
                // host still has its object, so destroy it now.
                n = u32::from(this.start_destroy(inner, id, 0));
            }
            state = inner.spaces.get(&id).map_or(State::Acked, |s| s.state);
        }
        match (state, inner.spaces.get_mut(&id)) {
            (State::Destroying, Some(s)) if inner.reset.is_some() || !inner.broken => {
                s.pgd = Some(pgd);
                inner.pgds_pending += 1;
                this.stats().pgds_parked.fetch_add(1, Relaxed);
            }
            (State::Destroying, Some(_)) => {
                // A stopped ring that no reset can restart: nothing will ever
                // acknowledge this space.
                let tag = inner.untrack(id).map_or(0, |s| s.tag);
                if this.release_forced(inner, id, tag, pgd) {
                    pr_warn!("released a page directory the host never acknowledged\n");
                }
                this.stats().pgds_returned.fetch_add(1, Relaxed);
            }
            _ => {
                // The host is already done (or never heard of it): release now.
                match inner.untrack(id) {
                    Some(Space { tag, forgotten, .. }) => {
                        let why = if forgotten { Why::Reset } else { Why::Acked };
                        this.release(inner, id, tag, pgd, why);
                    }
                    None => {
                        drop(pgd);
                        this.stats().pgds_released.fetch_add(1, Relaxed);
                    }
                }
                this.stats().pgds_returned.fetch_add(1, Relaxed);
            }
        }
        Self::publish_and_notify(this, guard, n);
    }
}
