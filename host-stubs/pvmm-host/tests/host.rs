// SPDX-License-Identifier: GPL-2.0

//! Host behaviour a guest relies on beyond the plain request path: tag
//! checks, objects dropped with the guest, the reset handshake, the cost
//! clamp and the release audit.

mod common;

use common::{req, Rig};
use pvmm_wire::*;

#[test]
fn destroy_with_another_tag_is_stale_and_keeps_the_object() {
    let mut r = Rig::new();
    let old = tag(1, 5);
    let new = tag(2, 5);
    r.submit(&[req(Op::Create, new, 7, 0), req(Op::Destroy, old, 7, 0)]);
    r.process();
    let c = r.ok_completions();
    assert_eq!(
        (c[1].op, c[1].status, c[1].tag),
        (Op::Destroy, Status::StaleTag, old)
    );
    assert_eq!(r.host.live_objects(), 1, "the live object is kept");
    r.submit(&[req(Op::Destroy, new, 7, 0)]);
    r.process();
    assert_eq!(r.ok_completions()[0].status, Status::Ok);
    let s = r.counters.snapshot();
    assert_eq!((s.stale_tags, s.destroys, s.live_objects), (1, 1, 0));
}

#[test]
fn objects_are_dropped_when_the_guest_goes_away() {
    let mut r = Rig::new();
    r.submit(&[req(Op::Create, 1, 7, 0), req(Op::Create, 2, 8, 0)]);
    r.process();
    assert_eq!(r.host.live_objects(), 2);
    let Rig { host, counters, .. } = r;
    host.disconnect();
    let s = counters.snapshot();
    assert_eq!((s.objects_dropped, s.live_objects), (2, 0));
}
