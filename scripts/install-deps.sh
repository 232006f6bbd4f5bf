#!/usr/bin/env bash
# Install everything pvmm needs to build and test on a bare Debian 12 machine
# with rustup.  Idempotent: each step is skipped when already satisfied.
# Packages come from the apt sources the machine already has.
set -euo pipefail

APT_PKGS=(
	linux-source-6.12
	clang lld llvm	
	flex bison bc	
	libelf-dev libssl-dev
	cpio xz-utils	
	busybox-static
	qemu-system-x86
	ccache
	python3
	rt-tests		# cyclictest: the latency cross-check in the guest
	python3-matplotlib	# make bench's plots
)

need=()
for p in "${APT_PKGS[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
	SUDO=""
	[ "$(id -u)" -eq 0 ] || SUDO=sudo
	export DEBIAN_FRONTEND=noninteractive
	$SUDO apt-get update -qq

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
