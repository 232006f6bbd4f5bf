# SPDX-License-Identifier: GPL-2.0
#
# pvmm top level.
#
#   make demo            build everything, boot a guest, run a teardown storm
#                        (ARCH=arm64: an arm64 guest on QEMU's virt board)
#   make check           run every test; ends with "N passed, N failed"
#   make check-full      make check, plus the debug kernel once more with KASAN
#                        (a third kernel build: about twice as long)
#   make bench           latency per mode and host cost, with plots
#                        (PRESET=quick, about 15 minutes; PRESET=full, about
#                        80; PRESET=smoke, a few, to check the pipeline;
#                        BENCH_ARGS='--seconds N --repeats N' override the preset)
#   make bench-reference make bench, PRESET=full unless given; its report,
#                        results and plots go to Documentation/bench-reference
#   make KDIR=<tree>     build drivers/pvmm out of tree against a built
#                        6.12 kernel that has kernel/patches applied
#                        (ARCH=arm64 for an arm64 tree; found from its
#                        .config when not given)
#   make host            build the host stub
#   make fuzz            the host's fuzz body on FUZZ_EXECS random scripts
#                        (default 10 million, a few minutes; not in check)
#
# Kbuild (next to this file) is what the kernel build reads for M=.

KDIR ?=
LLVM ?= 1
# A build directory does not record its ARCH: take it from the command line
# or the environment, else from the tree's .config (arm64), else the host's.
KARCH := $(or $(patsubst aarch64,arm64,$(filter-out x86_64,$(ARCH))),$(if $(KDIR),$(shell \
	grep -qs '^CONFIG_ARM64=y' $(KDIR)/.config && echo arm64)))
KARGS := M=$(CURDIR) LLVM=$(LLVM) $(if $(KARCH),ARCH=$(KARCH))
FUZZ_EXECS ?= 10000000

.PHONY: default module clippy demo check check-full bench bench-reference host fuzz deps \
	clean distclean

default:
ifneq ($(KDIR),)
	$(MAKE) module
else
	@sed -n '3,21p' Makefile
endif

module:
	$(MAKE) -C $(KDIR) $(KARGS) modules

clippy:
	$(MAKE) -C $(KDIR) $(KARGS) CLIPPY=1 modules

deps:
	scripts/install-deps.sh

host:
	cargo build --release --manifest-path host-stubs/Cargo.toml

# Inputs that panic are kept in host-stubs/target/fuzz-crashes; the last
# lines give the totals and how to replay them.
fuzz:
	cargo run --profile fuzz --manifest-path host-stubs/Cargo.toml -p pvmm-host \
		--example fuzz -- --execs $(FUZZ_EXECS) \
		--crash-dir host-stubs/target/fuzz-crashes

demo:
	scripts/demo.sh

check:
	scripts/check.sh

check-full:
	PVMM_CHECK_FULL=1 scripts/check.sh

bench:
	scripts/bench.sh $(BENCH_ARGS)

# PRESET=full unless given: the script's default, not bench.sh's.
bench-reference:
	scripts/bench-reference.sh $(BENCH_ARGS)

# Module objects only: the test runner cleans between builds and must keep
# the host stub.
clean:
	@if [ -n "$(KDIR)" ]; then $(MAKE) -C $(KDIR) $(KARGS) clean; fi

distclean: clean
	cargo clean --manifest-path host-stubs/Cargo.toml
