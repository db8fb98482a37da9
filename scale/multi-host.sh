#!/usr/bin/env bash
# Several load hosts, one result, with plain ssh: starts loadgen on every host
# with one --start-at, brings each result back over the ssh connection, and
# merges them with `loadgen merge`.
#
#   scale/multi-host.sh [OPTIONS] HOST... -- LOADGEN_ARGS...
#     HOST           what the ssh command takes: `client1`, `user@10.0.0.5`
#     LOADGEN_ARGS   loadgen's flags for every host, the target included
#                    (e.g. `10.0.0.1:7000 --conns 50000 --duration 30s`);
#                    not --start-at, --out or --json, which this script sets
#   Options:
#     --out-dir DIR        where client-N.json, client-N.err, hosts.txt and
#                          merged.json go (default: a new temp dir); a relative
#                          DIR is taken from the caller's directory. Refused if
#                          it already holds any of those names.
#     --start-in SECONDS   how far ahead the common start is (default 10): long
#                          enough for ssh and every host's connects
#     --ssh-cmd CMD        runs `CMD HOST COMMAND_STRING`, as ssh does
#                          (default `ssh -o BatchMode=yes`); CMD is split on
#                          spaces. Tests use scale/netns-ssh.sh.
#     --remote-loadgen P   loadgen on the hosts (default `loadgen`, on their PATH)
#     --loadgen P          loadgen here, for the merge (default this checkout's
#                          target/release/loadgen if built, else `loadgen`)
#
# Each host's loadgen writes its result JSON to stdout (`--out -`), which ssh
# carries back into OUT_DIR/client-N.json, so nothing is copied afterwards and
# nothing is left on the hosts; its report and progress go to client-N.err.
# Host N is the N-th HOST (hosts.txt lists them). Exit code: 0 when every host
# and the merge exited 0; 1 when a host failed (its result, if any, is still
# merged, and the merge keeps its `failures`) or wrote no result; 2 for bad
# arguments; 130/143 on Ctrl-C/SIGTERM, after stopping the local ssh processes.
# A remote loadgen outlives a killed ssh only until its own end (--start-at +
# warm-up + duration + a few seconds: loadgen bounds its run).
# Prints the merged result's path on the last line: `merged OUT_DIR/merged.json`.
set -euo pipefail
caller=$PWD
root=$(cd "$(dirname "$0")/.." && pwd)
from_caller() { case $1 in /*) echo "$1" ;; *) echo "$caller/$1" ;; esac; }
usage() { echo "usage: scale/multi-host.sh [OPTIONS] HOST... -- LOADGEN_ARGS..." >&2; exit 2; }

out_dir=""
start_in=10
ssh_cmd="ssh -o BatchMode=yes"
remote_loadgen=loadgen
if [ -x "$root/target/release/loadgen" ]; then local_loadgen=$root/target/release/loadgen; else local_loadgen=loadgen; fi
hosts=()
while [ $# -gt 0 ]; do
  case $1 in
    --out-dir) out_dir=$(from_caller "${2:?--out-dir needs a directory}"); shift 2 ;;
    --start-in) start_in=${2:?--start-in needs seconds}; shift 2 ;;
    --ssh-cmd) ssh_cmd=${2:?--ssh-cmd needs a command}; shift 2 ;;
    --remote-loadgen) remote_loadgen=${2:?--remote-loadgen needs a path}; shift 2 ;;
    --loadgen) local_loadgen=$(from_caller "${2:?--loadgen needs a path}"); shift 2 ;;
    --) shift; break ;;
    -*) echo "multi-host.sh: unknown option $1" >&2; usage ;;
    *) hosts+=("$1"); shift ;;
  esac
done
lg_args=("$@")
[ ${#hosts[@]} -gt 0 ] || { echo "multi-host.sh: no HOST given" >&2; usage; }
[ ${#lg_args[@]} -gt 0 ] || { echo "multi-host.sh: no LOADGEN_ARGS after --" >&2; usage; }
case $start_in in '' | *[!0-9]*) echo "multi-host.sh: --start-in must be whole seconds, got $start_in" >&2; exit 2 ;; esac
for a in "${lg_args[@]}"; do
  case $a in --start-at | --start-at=* | --out | --out=* | --json)
    echo "multi-host.sh: $a is set by the script; leave it out of LOADGEN_ARGS" >&2; exit 2 ;;
  esac
done
read -r -a ssh_argv <<<"$ssh_cmd"

# Never overwrite a file this run did not write.
if [ -n "$out_dir" ]; then
  mkdir -p "$out_dir"
  for f in "$out_dir"/client-*.json "$out_dir"/client-*.err "$out_dir/hosts.txt" "$out_dir/merged.json"; do
    [ -e "$f" ] && { echo "multi-host.sh: $f exists; give an empty --out-dir" >&2; exit 2; }
  done
else
  out_dir=$(mktemp -d "${TMPDIR:-/tmp}/multi-host-XXXXXX")
fi

pids=()
stop() {
  trap - INT TERM
  for p in "${pids[@]}" $(jobs -p); do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}" $(jobs -p); do wait "$p" 2>/dev/null || true; done
  exit "$1"
}
trap 'stop 130' INT
trap 'stop 143' TERM

# One instant for every host, in whole seconds of UTC (RFC 3339).
start_at=$(date -u -d "@$(($(date +%s) + start_in))" +%Y-%m-%dT%H:%M:%SZ)
echo "multi-host.sh: ${#hosts[@]} hosts start at $start_at; files in $out_dir" >&2
: >"$out_dir/hosts.txt"
for i in "${!hosts[@]}"; do
  n=$((i + 1))
  host=${hosts[$i]}
  printf 'client-%s %s\n' "$n" "$host" >>"$out_dir/hosts.txt"
  # One shell command string, quoted for the remote shell, as ssh expects;
  # `exec` so that stopping the remote shell stops loadgen.
  remote="exec $(printf '%q ' "$remote_loadgen" "${lg_args[@]}" --start-at "$start_at" --out -)"
  "${ssh_argv[@]}" "$host" "$remote" >"$out_dir/client-$n.json" 2>"$out_dir/client-$n.err" </dev/null &
  pids+=($!)
done

status=0
inputs=()
for i in "${!hosts[@]}"; do
  n=$((i + 1))
  rc=0
  wait "${pids[$i]}" || rc=$?
  if [ "$rc" -ne 0 ]; then
    status=1
    echo "multi-host.sh: ${hosts[$i]} (client-$n) exited $rc:" >&2
    tail -n 3 "$out_dir/client-$n.err" >&2
  fi
  if [ -s "$out_dir/client-$n.json" ]; then
    inputs+=("$out_dir/client-$n.json")
  else
    status=1
    echo "multi-host.sh: ${hosts[$i]} (client-$n) wrote no result" >&2
    rm -f "$out_dir/client-$n.json"
  fi
done
pids=()
[ ${#inputs[@]} -gt 0 ] || { echo "multi-host.sh: no host wrote a result; nothing to merge" >&2; exit 1; }
"$local_loadgen" merge "${inputs[@]}" --out "$out_dir/merged.json" || status=1
echo "merged $out_dir/merged.json"
exit "$status"
