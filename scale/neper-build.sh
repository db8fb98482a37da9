#!/usr/bin/env bash
# Builds google/neper's tcp_crr outside this repository, at a pinned commit,
# for scale/crr-vs-neper.sh.
#
#   scale/neper-build.sh
#
# Environment:
#   NEPER_GIT     where the source comes from (default
#                 https://github.com/google/neper.git); any `git clone` URL or
#                 path, e.g. a local mirror of that repository
#   NEPER_COMMIT  the commit to build (default the pinned one below)
#   NEPER_DIR     where to build (default ../neper-build beside this checkout;
#                 a relative NEPER_DIR is taken from the caller's directory)
#
# Makes NEPER_DIR/src (a clone of NEPER_GIT checked out at NEPER_COMMIT,
# detached), builds only `tcp_crr` there with neper's own Makefile, and writes
# NEPER_DIR/SOURCE: the URL, the commit, the compiler and the time of the build.
# A NEPER_DIR/src left by an earlier run is reused (fetched from NEPER_GIT,
# checked out at NEPER_COMMIT, rebuilt); any other existing NEPER_DIR/src is
# refused, never overwritten (a clone of ours is marked by
# NEPER_DIR/.made-by-neper-build). Nothing outside NEPER_DIR is written, and
# nothing is deleted but neper's own build products (`make clean` in src).
# gcc and make are installed with apt-get only if missing.
# Prints the binary's path on the last line: `tcp_crr NEPER_DIR/src/tcp_crr`.
set -euo pipefail
caller=$PWD
root=$(cd "$(dirname "$0")/.." && pwd)
# The commit this project's comparison was written against: the head of
# google/neper's master of 2025-11-04 ("Merge pull request #96").
pinned=ea5890fe25abb349342ef48162fe90c4e6f39c35
url=${NEPER_GIT:-https://github.com/google/neper.git}
commit=${NEPER_COMMIT:-$pinned}
dir=${NEPER_DIR:-$root/../neper-build}
case $dir in /*) ;; *) dir="$caller/$dir" ;; esac
# A local path given as NEPER_GIT is the caller's too.
case $url in *://* | *@*:*) ;; /*) ;; *) [ -e "$caller/$url" ] && url="$caller/$url" ;; esac
case $commit in *[!0-9a-f]* | '') echo "neper-build.sh: NEPER_COMMIT must be a hex commit id, not '$commit'" >&2; exit 2 ;; esac

if ! command -v gcc >/dev/null || ! command -v make >/dev/null; then
  echo "neper-build.sh: installing gcc and make (apt-get)" >&2
  apt-get update -qq && apt-get install -y -qq gcc make libc6-dev >&2
fi

mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
case "$dir/" in "$root"/*) echo "neper-build.sh: NEPER_DIR must be outside this repository ($root), not $dir" >&2; exit 2 ;; esac
src="$dir/src"
if [ -e "$src" ]; then
  # Ours only if it is a clone we made: a git work tree with our marker.
  if ! git -C "$src" rev-parse --git-dir >/dev/null 2>&1 || [ ! -f "$dir/.made-by-neper-build" ]; then
    echo "neper-build.sh: $src exists and is not a clone this script made; move it or set NEPER_DIR" >&2
    exit 2
  fi
  echo "neper-build.sh: reusing $src, fetching $url" >&2
  git -C "$src" fetch -q "$url" "$commit" 2>/dev/null || git -C "$src" fetch -q "$url"
else
  echo "neper-build.sh: cloning $url into $src" >&2
  git clone -q --no-checkout "$url" "$src"
  : >"$dir/.made-by-neper-build"
fi
git -C "$src" -c advice.detachedHead=false checkout -q --detach "$commit"
got=$(git -C "$src" rev-parse HEAD)
[ "$got" = "$commit" ] || { echo "neper-build.sh: checked out $got, not $commit" >&2; exit 1; }

make -s -C "$src" clean >/dev/null 2>&1 || true
make -s -C "$src" -j"$(nproc)" tcp_crr >&2
[ -x "$src/tcp_crr" ] || { echo "neper-build.sh: make did not produce $src/tcp_crr" >&2; exit 1; }

tmp_source=$(mktemp "$dir/.SOURCE.XXXXXX")
{
  echo "url=$url"
  echo "upstream=https://github.com/google/neper"
  echo "commit=$got"
  echo "commit_date=$(git -C "$src" log -1 --format=%cI HEAD)"
  echo "commit_subject=$(git -C "$src" log -1 --format=%s HEAD)"
  echo "compiler=$(gcc --version | head -1)"
  echo "built=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "binary=$src/tcp_crr"
} >"$tmp_source"
mv "$tmp_source" "$dir/SOURCE"
echo "neper-build.sh: neper $got from $url (upstream google/neper), see $dir/SOURCE" >&2
echo "tcp_crr $src/tcp_crr"
