#!/usr/bin/env bash
# Install everything pvmm needs to build and test on a bare Debian 12 machine
# with rustup.  Idempotent: each step is skipped when already satisfied.
# Packages come from the apt sources the machine already has.
#
# Both guest architectures are provided for: x86_64 natively, arm64 with a
# cross C library for the static selftests, qemu-system-arm, and the arm64
# userland of the guest (static busybox, cyclictest and the libraries it
# links) unpacked from Debian's arm64 packages into the cache.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

APT_PKGS=(
	linux-source-6.12
	clang lld llvm	
	flex bison bc	
	libelf-dev libssl-dev
	cpio xz-utils	
	busybox-static
	qemu-system-x86
	qemu-system-arm		# qemu-system-aarch64 for the arm64 guests
	gcc-aarch64-linux-gnu libc6-dev-arm64-cross	# static arm64 selftests
	ccache
	python3
	rt-tests		# cyclictest: the latency cross-check in the guest
	python3-matplotlib	# make bench's plots
)

# The arm64 guest's userland: unpacked, not installed (busybox-static:arm64
# conflicts with the native one).
ARM64_PKGS=(busybox-static rt-tests libnuma1 libc6)

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO=sudo
export DEBIAN_FRONTEND=noninteractive
need=()
for p in "${APT_PKGS[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || need+=("$p")
done
# apt learns the arm64 packages once dpkg knows the architecture.
updated=0
if ! dpkg --print-foreign-architectures | grep -qx arm64; then
	$SUDO dpkg --add-architecture arm64
	$SUDO apt-get update -qq
	updated=1
fi
if [ ${#need[@]} -gt 0 ]; then
	[ "$updated" = 1 ] || $SUDO apt-get update -qq

	if ! apt-cache policy linux-source-6.12 | grep -q 'Candidate:.*[0-9]'; then
		echo "linux-source-6.12 is in none of this machine's apt sources:" \
			"enable the suite's security or backports archive" >&2
		exit 1
	fi
	# QEMU packages must come from one suite: follow an installed
	# qemu-utils (some images carry it from backports).
	qsuite=()
	case "$(dpkg-query -W -f='${Version}' qemu-utils 2>/dev/null || true)" in
	*bpo*) qsuite=(-t "$(. /etc/os-release; echo "$VERSION_CODENAME")-backports") ;;
	esac
	rest=()
	for p in "${need[@]}"; do
		case "$p" in
		qemu-*) $SUDO apt-get install -y -qq --no-install-recommends "${qsuite[@]}" "$p" ;;
		*) rest+=("$p") ;;
		esac
	done
	[ ${#rest[@]} -eq 0 ] ||
		$SUDO apt-get install -y -qq --no-install-recommends "${rest[@]}"
fi

rustup component list --installed | grep -q '^rust-src' || rustup component add rust-src
command -v bindgen >/dev/null || cargo install --locked bindgen-cli

# arm64 userland for the guest initramfs, in $PVMM_CACHE/arm64-root: the
# packages' files as dpkg-deb unpacks them, refreshed when apt offers other
# versions.  scripts/initramfs.sh takes busybox, cyclictest and its
# libraries from there.
root=$PVMM_CACHE/arm64-root
want=$(for p in "${ARM64_PKGS[@]}"; do
	printf '%s ' "$p=$(apt-cache show --no-all-versions "$p:arm64" | sed -n 's/^Version: //p')"
done)
if [ "$(cat "$root/.pvmm-versions" 2>/dev/null)" != "$want" ]; then
	dl=$(mktemp -d)
	# apt downloads as _apt when it can.
	if [ "$(id -u)" -eq 0 ] && id _apt >/dev/null 2>&1; then
		chown _apt "$dl"
	fi
	(cd "$dl" && apt-get download -qq "${ARM64_PKGS[@]/%/:arm64}")
	rm -rf "$root"
	mkdir -p "$root"
	for deb in "$dl"/*.deb; do
		dpkg-deb -x "$deb" "$root"
	done
	rm -rf "$dl"
	echo "$want" >"$root/.pvmm-versions"
fi
