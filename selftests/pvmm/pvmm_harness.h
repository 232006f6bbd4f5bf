/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The kselftest harness, as the pvmm test programs include it.  The harness
 * defines global symbols and so can only be part of one translation unit per
 * program: the helpers that use its EXPECT/ASSERT macros (they take a
 * _metadata argument) are static inline in headers for that reason.
 */
#ifndef PVMM_HARNESS_H
#define PVMM_HARNESS_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

/*
 * -Wextra finds an unused parameter in the 6.12 harness, and a variable its
 * TEST_F() wrapper keeps across setjmp(); neither is ours to fix.
 */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-parameter"
#include "kselftest_harness.h"
#pragma GCC diagnostic pop
#pragma GCC diagnostic ignored "-Wclobbered"

#endif /* PVMM_HARNESS_H */
