# Versions pvmm is tested with.  Sourced by lib.sh; install-deps.sh installs
# them.  The Rust toolchain is pinned in rust-toolchain.toml at the top.
# shellcheck shell=bash disable=SC2034 # for the scripts that source lib.sh

# Debian's linux-source-6.12 that the last full make check ran on.  Debian's
# security suite moves to newer 6.12.y builds and drops old ones after a
# while: install-deps.sh installs this one while apt offers it, and warns
# and takes the newest 6.12.y when it no longer does.
PVMM_LINUX_SOURCE_VERSION=6.12.117-1~deb12u1
# bindgen-cli from crates.io: Linux 6.12 needs at least 0.65.1, and Debian
# 12's bindgen is 0.60.  Installed into $PVMM_CACHE/tools, not ~/.cargo.
PVMM_BINDGEN_VERSION=0.73.2
# The oldest QEMU the guests are run with (Debian 12's own).
PVMM_QEMU_MIN_VERSION=1:7.2
