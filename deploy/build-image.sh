#!/usr/bin/env bash
# Builds the netpol-nflog container image without any container registry: the release binaries
# built here, exactly the shared libraries they load (from ldd) and the few files the daemon reads
# at run time, on an empty base, with deploy/Containerfile's `prebuilt` target. Needs cargo, ldd,
# strip and podman (or buildah), all from Debian's packages but cargo. The image reference is
# printed on the last line of standard output; everything else goes to standard error.
#
# Usage: deploy/build-image.sh [--tag REF] [--no-cargo]
#   --tag REF    image reference (default localhost/netpol-nflog:VERSION, the DaemonSet's image)
#   --no-cargo   use target/release as it is, without `cargo build --release --bins`
#
# The binaries: `cargo build --release --bins` runs first; when target/release is up to date (as
# after .ci/test's build) cargo only checks that and returns in a second, so nothing is rebuilt.
#
# With registry access, `podman build -f deploy/Containerfile .` compiles in the Rust image and
# uses the distroless base instead (see the Containerfile): the same binaries and settings on a
# larger base (distroless also has libssl, os-release and the like, which nothing here reads).
set -euo pipefail
umask 022
cd "$(dirname "$0")/.."

tag=""
cargo_build=1
while [ $# -gt 0 ]; do
    case "$1" in
        --tag) tag="${2:?--tag needs an image reference}"; shift 2 ;;
        --tag=*) tag="${1#--tag=}"; shift ;;
        --no-cargo) cargo_build=0; shift ;;
        -h|--help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "build-image.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done

missing() {
    echo "build-image.sh: $1 not found: $2" >&2
    exit 2
}
command -v cargo >/dev/null || missing cargo "install Rust with rustup (https://rustup.rs), as .ci/setup does"
command -v ldd >/dev/null || missing ldd "apt-get install libc-bin"
command -v strip >/dev/null || missing strip "apt-get install binutils"
if command -v podman >/dev/null; then
    builder=(podman build)
elif command -v buildah >/dev/null; then
    builder=(buildah build)
else
    missing "podman (or buildah)" "apt-get install podman (.ci/setup installs it)"
fi

version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
[ -n "$tag" ] || tag="localhost/netpol-nflog:${version}"

target_dir=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
[ -n "$target_dir" ] || { echo "build-image.sh: cannot find cargo's target directory" >&2; exit 1; }
if [ "$cargo_build" = 1 ]; then
    cargo build --release --bins >&2
fi
bins=(netpol-nflogd nflog-tail)
for b in "${bins[@]}"; do
    [ -x "$target_dir/release/$b" ] ||
        { echo "build-image.sh: $target_dir/release/$b is missing (run without --no-cargo)" >&2; exit 1; }
done

# The build context: only what the image holds (never the repository, whose target/ is GBs).
ctx=$(mktemp -d "$target_dir/image-context.XXXXXX")
trap 'rm -rf "$ctx"' EXIT
mkdir -p "$ctx/bin" "$ctx/rootfs"

# Debug info out (the release profile keeps line tables: ~160 MB), symbols kept for backtraces.
for b in "${bins[@]}"; do
    strip --strip-debug -o "$ctx/bin/$b" "$target_dir/release/$b"
    chmod 0755 "$ctx/bin/$b"
done

root="$ctx/rootfs"
# Shared libraries: every path ldd resolves (libc, libm, libgcc_s) plus the program interpreter,
# each copied (not linked) to the path the loader looks at. ldd follows the whole dependency tree.
libs=$(for b in "${bins[@]}"; do ldd "$ctx/bin/$b"; done |
    awk '/=>/ { if ($3 ~ /^\//) print $3; next } $1 ~ /^\// { print $1 }' | sort -u)
if for b in "${bins[@]}"; do ldd "$ctx/bin/$b"; done | grep -q 'not found'; then
    echo "build-image.sh: a shared library of the binaries is not found:" >&2
    for b in "${bins[@]}"; do ldd "$ctx/bin/$b"; done >&2
    exit 1
fi
for lib in $libs; do
    install -D -m 0755 "$(readlink -f "$lib")" "$root$lib"
done

# What the daemon reads at run time:
# - /etc/ssl/certs/ca-certificates.crt: the system roots (rustls-native-certs), used by the syslog
#   sink's TLS transport without tls_ca_file and by a kubeconfig without a CA (in a pod the API's
#   CA comes from the service account volume instead).
# - /usr/share/zoneinfo: the zone named by $TZ (syslogemu times are local time, as ulogd2's; with
#   neither TZ nor a mounted /etc/localtime they are UTC).
# - /etc/passwd, /etc/group: root (the DaemonSet's runAsUser 0) and nobody, for tools that look
#   the names up; /etc/nsswitch.conf: host name lookups (a syslog sink's host) use files, then DNS.
ca=/etc/ssl/certs/ca-certificates.crt
[ -s "$ca" ] || missing "$ca" "apt-get install ca-certificates"
install -D -m 0644 "$ca" "$root$ca"
if [ -d /usr/share/zoneinfo/Etc ]; then
    mkdir -p "$root/usr/share/zoneinfo"
    # The zones only: right/ (leap seconds) and posix/ (duplicates) are not read.
    (cd /usr/share/zoneinfo && tar --exclude=./right --exclude=./posix -cf - .) |
        tar -C "$root/usr/share/zoneinfo" -xf -
else
    missing /usr/share/zoneinfo "apt-get install tzdata"
fi
mkdir -p "$root/etc"
printf 'root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n' >"$root/etc/passwd"
printf 'root:x:0:\nnobody:x:65534:\n' >"$root/etc/group"
printf 'passwd: files\ngroup: files\nhosts: files dns\n' >"$root/etc/nsswitch.conf"
chmod 0644 "$root/etc/passwd" "$root/etc/group" "$root/etc/nsswitch.conf"
# Mount points of the DaemonSet's volumes (the root filesystem is read-only there).
mkdir -p "$root/run" "$root/var/log/ulog" "$root/etc/netpol-nflog"

# deploy/Containerfile, target `prebuilt` on the base `scratch-runtime` (both stages read the
# context made above); no stage that pulls runs. --layers=false: no intermediate images left.
"${builder[@]}" --layers=false --pull=never \
    -f deploy/Containerfile \
    --build-arg RUNTIME_IMAGE=scratch-runtime \
    --target prebuilt \
    -t "$tag" "$ctx" >&2

echo "$tag"
