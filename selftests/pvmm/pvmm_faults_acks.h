/* SPDX-License-Identifier: GPL-2.0 */
/*
 * pvmm_faults: bogus completions (dup-ack, forged-ack).
 *
 * Part of pvmm_faults.c, which includes it once, after its helpers: the
 * harness allows one translation unit per program.
 */

/* ---- dup-ack, forged-ack ---- */

STORM_FIXTURE(extra_acks)

/* Every extra completion is rejected; the real ones still count once. */
TEST_F_TIMEOUT(extra_acks, rejected_and_counted, 300)
{
	uint64_t destroyed, created, bad;

	storm_drains(_metadata, self->res, &self->before, &self->after, false);
	destroyed = pvmm_delta(_metadata, &self->before, &self->after,
			       "spaces_destroyed");
	created = pvmm_delta(_metadata, &self->before, &self->after,
			     "spaces_created");
	bad = pvmm_delta(_metadata, &self->before, &self->after,
			 "bad_completions");
	ksft_print_msg("%llu creates, %llu teardowns, %llu bogus completions\n",
		       (unsigned long long)created,
		       (unsigned long long)destroyed, (unsigned long long)bad);
	EXPECT_EQ(pvmm_stat(_metadata, &self->after, "spaces_destroyed"),
		  pvmm_stat(_metadata, &self->after, "spaces_acked"));
	/* dup-ack doubles every completion; forged-ack adds one per CREATE. */
	EXPECT_GE(bad, strcmp(fault(), "dup-ack") ? created : created + destroyed);
}
