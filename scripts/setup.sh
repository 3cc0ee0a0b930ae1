#!/usr/bin/env bash
# Idempotent set-up for a fresh Debian 12 machine, as root: the Debian packages strata's tests and
# demo use, `npm ci` when node_modules is missing or older than the lock file, and the build.
set -euo pipefail
cd "$(dirname "$0")/.."

# nix-bin: real Nix 2.8, the reference for interop tests. squashfs-tools: the demo's disk image.
# nginx-light: the benchmark floor for serving. fuse-overlayfs: rootless layered stores.
# xz-utils, zstd, bzip2, sqlite3: oracles in tests. util-linux: mount, unshare, flock, losetup.
packages=(nix-bin squashfs-tools nginx-light fuse-overlayfs xz-utils zstd bzip2 sqlite3 util-linux openssl ca-certificates ceph-mon ceph-mgr ceph-osd radosgw ceph-common)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing Debian packages: ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Native addons (better-sqlite3, zstd-napi, node-liblzma, fs-ext, and strata's own native/)
# compile from source here.
if [[ ! -d node_modules || package-lock.json -nt node_modules/.package-lock.json ]]; then
  echo "setup: npm ci (compiles native addons; a few minutes)" >&2
  JOBS=max npm ci --no-audit --no-fund
fi
# native/ is part of the checkout: rebuilt when its source changed since its last build.
native_stale() {
  local built=native/build/Release/strata_native.node f
  [[ -e $built ]] || return 0
  for f in native/*.c native/*.h native/binding.gyp; do [[ $f -nt $built ]] && return 0; done
  return 1
}
if native_stale; then
  echo "setup: building native/" >&2
  npm rebuild strata-native --no-audit --no-fund >/dev/null
fi

npm run --silent build
