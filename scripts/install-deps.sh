#!/usr/bin/env bash
# Install what pvmm needs to build and test on a Debian 12 machine with
# rustup, from the apt sources the machine already has.  Each step is
# skipped when it is already satisfied, and a run that fails part way is
# finished by the next one.
#
# usage: scripts/install-deps.sh [x86_64] [arm64]
#   the guest architectures to provide for (default: $ARCH, else x86_64).
#   x86_64 needs nothing foreign.  arm64 adds qemu-system-arm, a cross C
#   library for the static selftests, and the arm64 guest userland (static
#   busybox, cyclictest and its libraries) unpacked from Debian's arm64
#   packages into the cache; for that, dpkg learns the arm64 architecture.
#
# Versions: rust-toolchain.toml and scripts/versions.sh.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

want_arm64=0
for a in "${@:-$PVMM_ARCH}"; do
	case "$a" in
	x86 | x86_64) ;;
	arm64 | aarch64) want_arm64=1 ;;
	*) die "usage: $0 [x86_64] [arm64]" ;;
	esac
done

# What the host needs for either guest.  Why each is there:
APT_PKGS=(
	make gcc libc6-dev patch file git	# build steps, static selftests
	perl		# checkpatch.pl (Term::ANSIColor, Encode: not in perl-base)
	clang lld llvm	# the kernel and its Rust, LLVM=1; clang for bindgen
	flex bison bc libelf-dev libssl-dev	# kernel build
	cpio xz-utils	# initramfs, the kernel source tarball
	busybox-static	# the guest userland
	rt-tests	# cyclictest: the latency cross-check in the guest
	ccache
	python3 python3-matplotlib	# series.py, make bench and its plots
	shellcheck	# make check lints scripts/
	qemu-system-x86
)
APT_PKGS_ARM64_HOST=(
	qemu-system-arm		# qemu-system-aarch64
	gcc-aarch64-linux-gnu libc6-dev-arm64-cross	# static arm64 selftests
)
# The arm64 guest's userland: unpacked, not installed (busybox-static:arm64
# conflicts with the native one).
ARM64_PKGS=(busybox-static rt-tests libnuma1 libc6)
LINUX_SOURCE=linux-source-6.12
APT_SOURCES_DIR=${PVMM_APT_SOURCES_DIR:-/etc/apt/sources.list.d}
codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")

# --- helpers -----------------------------------------------------------------
# Command output is captured whole before it is searched: under pipefail a
# reader that stops early (grep -q, head) kills its writer with SIGPIPE and
# fails the pipeline.

as_root() {
	if [ "$(id -u)" = 0 ]; then
		"$@"
	elif command -v sudo >/dev/null; then
		sudo "$@"
	else
		die "installing packages needs root: run as root, or install sudo"
	fi
}
# sudo resets the environment: apt's setting goes through env.
apt_get() { as_root env DEBIAN_FRONTEND=noninteractive apt-get "$@"; }

# installed PKG: its installed version, or nothing.
installed() {
	local s
	s=$(dpkg-query -W -f='${Status} ${Version}' "$1" 2>/dev/null) || true
	case "$s" in
	"install ok installed "*) echo "${s#install ok installed }" ;;
	esac
}

# offered PKG: "VERSION SUITE" per version apt's sources offer for PKG (as
# apt-cache policy lists them; the dpkg status file is no source).
offered() {
	local out line ver=
	# "     1:7.2+dfsg-7 500" (" *** " when installed), then its sources:
	# "        500 http://... bookworm/main amd64 Packages".
	local version_re='^ (\*\*\*|   ) ([^ ]+) -?[0-9]+$'
	local source_re='^        -?[0-9]+ [^ ]+ ([^ /]+)(/[^ ]*)? [^ ]+ Packages$'
	out=$(apt-cache policy "$1" 2>/dev/null) || true
	while IFS= read -r line; do
		if [[ $line =~ $version_re ]]; then
			ver=${BASH_REMATCH[2]}
		elif [ -n "$ver" ] && [[ $line =~ $source_re ]]; then
			echo "$ver ${BASH_REMATCH[1]}"
		fi
	done <<<"$out"
}

# candidate PKG: the version apt would install, or nothing.
candidate() {
	local out
	out=$(apt-cache policy "$1" 2>/dev/null) || true
	local re='Candidate: ([^[:space:]]+)'
	[[ $out =~ $re ]] && [ "${BASH_REMATCH[1]}" != "(none)" ] &&
		echo "${BASH_REMATCH[1]}"
	return 0
}

updated=0
update_lists() {
	[ "$updated" = 1 ] && return 0
	log "apt-get update"
	apt_get update -qq || die "apt-get update failed (see above); fix this machine's apt sources and run again"
	updated=1
}

# backports_suite: add "$codename-backports" to apt's sources, as a copy of
# the machine's own "$codename" main source (same archive, same keyring).
backports_suite() {
	local out line uri='' re="^ *-?[0-9]+ ([^ ]+) $codename/main [^ ]+ Packages\$"
	out=$(apt-cache policy)
	while IFS= read -r line; do
		[[ -z $uri && $line =~ $re ]] && uri=${BASH_REMATCH[1]}
	done <<<"$out"
	[ -n "$uri" ] || die "no apt source of this machine serves '$codename' main to copy"
	local f=$APT_SOURCES_DIR/pvmm-backports.sources tmp
	tmp=$(mktemp)
	printf '%s\n' "# Added by pvmm's scripts/install-deps.sh (PVMM_APT_BACKPORTS=1)." \
		"Types: deb" "URIs: $uri" "Suites: $codename-backports" "Components: main" \
		"Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg" >"$tmp"
	log "adding $codename-backports to apt's sources: $f"
	as_root install -m 0644 "$tmp" "$f"
	rm -f "$tmp"
	updated=0
	update_lists
}

# qemu_suite PKG: the suite that offers PKG at the version of the installed
# qemu-utils, if any.
qemu_suite() {
	local v s qutils
	qutils=$(installed qemu-utils)
	[ -n "$qutils" ] || return 0
	while read -r v s; do
		[ "$v" != "$qutils" ] || { echo "$s"; return 0; }
	done <<<"$(offered "$1")"
}

# install_qemu PKG...: QEMU's packages come from one release.  Where the
# machine has qemu-utils (some images carry it from backports), they come
# from the suite that offers that version; otherwise from apt's candidate,
# which must be at least the oldest QEMU pvmm runs with.  Nothing the
# machine has is removed for them.
install_qemu() {
	local qsuite qver qutils sim
	qsuite=$(qemu_suite "$1")
	qutils=$(installed qemu-utils)
	if [ -z "$qsuite" ] && [[ $qutils == *bpo* ]] &&
		! sim=$(apt-get -s -qq --no-remove install "$@" 2>&1); then
		if [ "${PVMM_APT_BACKPORTS:-0}" != 1 ]; then
			printf '%s\n' "$sim" >&2
			die "this machine's qemu-utils $qutils comes from $codename-backports, and" \
				"QEMU from the suites it offers would replace it (above). Enable" \
				"$codename-backports: add an entry with 'Suites: $codename-backports'" \
				"beside the '$codename' one in /etc/apt/sources.list.d/, or run again" \
				"with PVMM_APT_BACKPORTS=1 to have it added as a copy of that entry"
		fi
		backports_suite
		qsuite=$(qemu_suite "$1")
		[ -n "$qsuite" ] || die "$codename-backports does not offer $1 $qutils"
	fi
	if [ -n "$qsuite" ]; then
		log "installing $* from $qsuite, the suite of the installed qemu-utils $qutils"
		apt_get install -y -qq --no-install-recommends --no-remove -t "$qsuite" "$@"
		return
	fi
	qver=$(candidate "$1")
	if [ -z "$qver" ] || dpkg --compare-versions "$qver" lt "$PVMM_QEMU_MIN_VERSION"; then
		die "pvmm needs $1 $PVMM_QEMU_MIN_VERSION or later; this machine's apt" \
			"sources offer ${qver:-none}. Add '$codename' (Components: main) to" \
			"the sources in /etc/apt/sources.list.d/ and run again"
	fi
	log "installing $* $qver"
	apt_get install -y -qq --no-install-recommends --no-remove "$@"
}

# --- arm64: the architecture, before anything is installed ----------------------
# apt offers arm64 packages once dpkg knows the architecture and the lists
# were fetched since: decided from what apt offers, so that a run whose
# update failed is finished by the next.  A mirror without arm64 leaves the
# machine as it was: the architecture is dropped again, so that apt-get
# update keeps working for x86_64.
if [ "$want_arm64" = 1 ]; then
	added_arch=0
	if [[ $'\n'$(dpkg --print-foreign-architectures)$'\n' != *$'\n'arm64$'\n'* ]]; then
		log "dpkg --add-architecture arm64 (for the arm64 guest userland)"
		as_root dpkg --add-architecture arm64
		added_arch=1
	fi
	if [ -z "$(candidate busybox-static:arm64)" ]; then
		log "apt-get update (arm64)"
		apt_get update -qq || apt_get update -qq || {
			[ "$added_arch" = 0 ] || as_root dpkg --remove-architecture arm64
			apt_get update -qq || die "apt-get update fails, with and without arm64:" \
				"fix this machine's apt sources and run again"
			die "apt-get update fails with arm64 enabled and works without it: this" \
				"machine's apt sources offer no arm64 packages. arm64 guests need them;" \
				"x86_64 guests do not (run without ARCH=arm64)"
		}
		updated=1
	fi
	for p in "${ARM64_PKGS[@]}"; do
		[ -n "$(candidate "$p:arm64")" ] || {
			[ "$added_arch" = 0 ] || as_root dpkg --remove-architecture arm64
			die "this machine's apt sources do not offer $p:arm64, which arm64 guests" \
				"need; x86_64 guests do not (run without ARCH=arm64)"
		}
	done
fi

# --- Debian packages -------------------------------------------------------------
need=()
for p in "${APT_PKGS[@]}"; do
	[ -n "$(installed "$p")" ] || need+=("$p")
done
if [ "$want_arm64" = 1 ]; then
	for p in "${APT_PKGS_ARM64_HOST[@]}"; do
		[ -n "$(installed "$p")" ] || need+=("$p")
	done
fi

# The kernel source: the tested version while apt offers it.
ksrc_have=$(installed "$LINUX_SOURCE")
ksrc_want=
if [ "$ksrc_have" != "$PVMM_LINUX_SOURCE_VERSION" ]; then
	[ ${#need[@]} -eq 0 ] && [ -n "$ksrc_have" ] || update_lists
	ksrc_offered=$(offered "$LINUX_SOURCE")
	if [[ $'\n'$ksrc_offered =~ $'\n'"$PVMM_LINUX_SOURCE_VERSION " ]]; then
		ksrc_want="$LINUX_SOURCE=$PVMM_LINUX_SOURCE_VERSION"
	elif [ -n "$ksrc_have" ]; then
		warn "$LINUX_SOURCE $ksrc_have is installed; pvmm is tested with" \
			"$PVMM_LINUX_SOURCE_VERSION, which this machine's apt sources no longer offer"
	elif [ -n "$ksrc_offered" ]; then
		ksrc_want=$LINUX_SOURCE
		warn "pvmm is tested with $LINUX_SOURCE $PVMM_LINUX_SOURCE_VERSION, which this" \
			"machine's apt sources no longer offer; installing $(candidate "$LINUX_SOURCE")"
	else
		die "$LINUX_SOURCE is offered by none of this machine's apt sources." \
			"Debian 12 ships it in its security suite: add '$codename-security'" \
			"(Components: main) to the sources in /etc/apt/sources.list.d/ and run again"
	fi
fi

if [ ${#need[@]} -gt 0 ] || [ -n "$ksrc_want" ]; then
	update_lists
	qemu=()
	rest=()
	for p in "${need[@]}"; do
		case "$p" in
		qemu-*) qemu+=("$p") ;;
		*) rest+=("$p") ;;
		esac
	done
	[ ${#qemu[@]} -eq 0 ] || install_qemu "${qemu[@]}"
	[ -z "$ksrc_want" ] || rest+=("$ksrc_want")
	if [ ${#rest[@]} -gt 0 ]; then
		log "installing ${rest[*]}"
		apt_get install -y -qq --no-install-recommends --no-remove --allow-downgrades \
			"${rest[@]}"
	fi
fi

# --- Rust: the pinned toolchain, the kernel's rust-src, bindgen ----------------
tc=$PVMM_RUST_TOOLCHAIN
toolchains=$(rustup toolchain list)
if [[ $'\n'$toolchains != *$'\n'"$tc"-* ]]; then
	log "installing Rust $tc (rust-toolchain.toml)"
	rustup toolchain install "$tc" --profile minimal --component rust-src,rustfmt,clippy
fi
components=$(rustup component list --installed --toolchain "$tc")
for c in rust-src rustfmt clippy; do
	have=0
	while read -r line; do
		[ "$line" = "$c" ] || [[ $line == "$c"-* ]] && have=1
	done <<<"$components"
	[ "$have" = 1 ] || rustup component add --toolchain "$tc" "$c"
done
bindgen=$(bindgen --version 2>/dev/null) || true
if [ "$bindgen" != "bindgen $PVMM_BINDGEN_VERSION" ]; then
	log "installing bindgen-cli $PVMM_BINDGEN_VERSION into $PVMM_TOOLS"
	cargo install --locked --quiet --root "$PVMM_TOOLS" \
		--version "$PVMM_BINDGEN_VERSION" bindgen-cli
fi

[ "$want_arm64" = 1 ] || exit 0

# --- arm64 guest userland -----------------------------------------------------------
# Unpacked into $PVMM_CACHE/arm64-root as dpkg-deb unpacks them, and
# refreshed when apt offers other versions.  scripts/initramfs.sh takes
# busybox, cyclictest and its libraries from there.
root=$PVMM_CACHE/arm64-root
want=
for p in "${ARM64_PKGS[@]}"; do
	want+="$p=$(candidate "$p:arm64") "
done
if [ "$(cat "$root/.pvmm-versions" 2>/dev/null)" != "$want" ]; then
	log "unpacking the arm64 guest userland into $root"
	dl=$(mktemp -d)
	trap 'rm -rf "$dl"' EXIT
	# apt downloads as _apt when it can.
	if [ "$(id -u)" -eq 0 ] && id _apt >/dev/null 2>&1; then
		chown _apt "$dl"
	fi
	(cd "$dl" && apt-get download -qq "${ARM64_PKGS[@]/%/:arm64}")
	rm -rf "$root" "$root.tmp"
	mkdir -p "$root.tmp"
	for deb in "$dl"/*.deb; do
		dpkg-deb -x "$deb" "$root.tmp"
	done
	echo "$want" >"$root.tmp/.pvmm-versions"
	mv "$root.tmp" "$root"
fi
