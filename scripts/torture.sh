#!/usr/bin/env bash
# Crash torture through the command: N trials each of SIGKILL of the consumer
# and of the producer at a random moment mid-stream, checking every row.
#
#   scripts/torture.sh N [--bin PATH] [--rows R] [--seed S] [--keep]
#
# Each trial moves R rows (id, check) from a CSV file through a ring with a
# small arena (so that the producer waits on the consumer and kills land
# mid-stream) to CSV outputs, then checks:
#   consumer killed: the first consumer's complete lines are ids 0..a-1 in
#     order; the restarted consumer's are b..R-1 in order with b <= a (the
#     a-b rows it gets again are the at-least-once redelivery of what was read
#     but not released); every check value is right; the second output is
#     complete (exit 0, end of stream).
#   producer killed: a --follow consumer's lines are ids 0..k-1 (what the
#     killed producer committed, no gap) then 0..R-1 (a second producer's
#     whole stream); every check value is right; SIGTERM ends it with exit 0.
# A trial that hangs fails (every wait is bounded). Prints the figures.
set -uo pipefail

usage() { sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
[ $# -ge 1 ] || usage
trials=$1; shift
case $trials in '' | *[!0-9]*) usage ;; esac
bin=""
rows=1000000
seed=$RANDOM
keep=0
while [ $# -gt 0 ]; do
  case $1 in
    --bin) bin=$2; shift 2 ;;
    --rows) rows=$2; shift 2 ;;
    --seed) seed=$2; shift 2 ;;
    --keep) keep=1; shift ;;
    *) usage ;;
  esac
done
cd "$(dirname "$0")/.." || exit 1
if [ -z "$bin" ]; then
  timeout 1200 cargo build --release --quiet || exit 1
  bin=target/release/laminar-ring
fi
[ -x "$bin" ] || { echo "torture: no binary at $bin" >&2; exit 1; }
RANDOM=$seed

work=$(mktemp -d "${TMPDIR:-/tmp}/laminar-torture.XXXXXX")
export LAMINAR_RING_DIR=$work/rings
mkdir -p "$LAMINAR_RING_DIR"
cleanup() {
  jobs -p | xargs -r kill -9 2>/dev/null
  [ $keep = 1 ] && echo "torture: kept $work" >&2 || rm -rf "$work"
}
trap cleanup EXIT

# The check column is a hash of the id, so a torn or shifted row is caught.
awk -v n="$rows" 'BEGIN { print "id,check"; for (i = 0; i < n; i++) printf "%d,%d\n", i, (i * 48271) % 2147483647 }' \
  >"$work/input.csv"

# Complete lines of a CSV output (a killed writer may leave the last one
# torn), header dropped, as "id check" lines.
rows_of() {
  local f=$1
  [ -s "$f" ] || return 0
  if [ "$(tail -c 1 "$f" | od -An -c | tr -d ' ')" = '\n' ]; then
    tail -n +2 "$f"
  else
    tail -n +2 "$f" | sed '$d'
  fi | tr ',' ' '
}

# Checks that stdin's "id check" lines are ids $1, $1+1, ... with right
# checks; prints "first next" (next = one past the last id) or fails.
run_of() {
  awk -v first="$1" '
    { if ($1 != first + NR - 1) { printf "id %s at line %d, expected %d\n", $1, NR, first + NR - 1 > "/dev/stderr"; bad = 1; exit 1 }
      if ($2 != ($1 * 48271) % 2147483647) { printf "bad check for id %s\n", $1 > "/dev/stderr"; bad = 1; exit 1 } }
    END { if (!bad) printf "%d %d\n", first, first + NR }'
}

ring_drained() {
  "$bin" info "$1" --json 2>/dev/null | grep -q '"lag":0,'
}

# Waits up to $2 seconds for pid $1; returns its status, or 124 after
# killing it.
wait_for() {
  local pid=$1 secs=$2 i=0
  while kill -0 "$pid" 2>/dev/null; do
    i=$((i + 1))
    if [ $i -gt $((secs * 20)) ]; then kill -9 "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; return 124; fi
    sleep 0.05
  done
  wait "$pid"
}

# A random delay in seconds, 0 to $1 ms.
delay() { local ms=$(( (RANDOM * 32768 + RANDOM) % $1 )); printf '%d.%03d' $((ms / 1000)) $((ms % 1000)); }

geometry=(--arena 256KiB --slots 64)
batch_rows=200

# Calibrate: how long one whole pipe takes here, so that the kills land
# anywhere from before the first row to after the last.
"$bin" create calibrate "${geometry[@]}" >/dev/null || exit 1
t0=$(date +%s%N)
"$bin" produce calibrate -i "$work/input.csv" --batch-rows "$batch_rows" 2>/dev/null &
"$bin" consume calibrate -o "$work/calibrate.csv" --format csv 2>/dev/null || exit 1
wait
span_ms=$(( ($(date +%s%N) - t0) / 1000000 ))
[ "$span_ms" -ge 20 ] || span_ms=20
"$bin" rm calibrate >/dev/null
rm -f "$work/calibrate.csv"
fails=0
redelivered=0
redelivery_trials=0
max_redelivered=0
committed_rows=0
consumer_trials=0
producer_trials=0

fail() { echo "torture: trial $1: $2" >&2; fails=$((fails + 1)); }

consumer_trial() {
  local t=$1 name=c$1 d
  local c1=$work/$name.1.csv c2=$work/$name.2.csv
  "$bin" create "$name" "${geometry[@]}" >/dev/null || { fail "$t" "create"; return; }
  "$bin" consume "$name" -o "$c1" --format csv 2>"$work/$name.c1.err" &
  local cpid=$!
  "$bin" produce "$name" -i "$work/input.csv" --batch-rows "$batch_rows" 2>"$work/$name.p.err" &
  local ppid=$!
  d=$(delay $((span_ms * 6 / 5)))
  sleep "$d"
  kill -9 "$cpid" 2>/dev/null
  wait "$cpid" 2>/dev/null
  local first
  first=$(rows_of "$c1" | run_of 0) || { fail "$t" "first output out of order (killed after ${d}s)"; kill -9 $ppid; return; }
  local a=${first#* }
  local second="0 0" b
  # The restarted consumer resumes at the first unreleased row; if the first
  # one had released everything before it died, there is nothing to resume.
  if [ "$a" -lt "$rows" ] || ! ring_drained "$name"; then
    timeout 60 "$bin" consume "$name" -o "$c2" --format csv 2>"$work/$name.c2.err"
    local st=$?
    [ $st = 0 ] || { fail "$t" "restarted consumer exited $st: $(tail -n 1 "$work/$name.c2.err")"; kill -9 $ppid; return; }
    b=$(rows_of "$c2" | awk 'NR == 1 { print $1 }')
    second=$(rows_of "$c2" | run_of "${b:-$a}") || { fail "$t" "second output out of order"; kill -9 $ppid; return; }
  else
    b=$a
    second="$a $a"
  fi
  wait_for $ppid 60
  local pst=$?
  [ $pst = 0 ] || { fail "$t" "producer exited $pst: $(tail -n 1 "$work/$name.p.err")"; return; }
  b=${second% *}
  local end=${second#* }
  [ "$end" = "$rows" ] || { fail "$t" "rows end at $end, not $rows"; return; }
  [ "$b" -le "$a" ] || { fail "$t" "rows $a..$b lost (second consumer started at $b)"; return; }
  local dup=$((a - b))
  redelivered=$((redelivered + dup))
  [ $dup -gt 0 ] && redelivery_trials=$((redelivery_trials + 1))
  [ $dup -gt $max_redelivered ] && max_redelivered=$dup
  consumer_trials=$((consumer_trials + 1))
  [ $keep = 1 ] || rm -f "$c1" "$c2"
  "$bin" rm "$name" >/dev/null 2>&1
}

producer_trial() {
  local t=$1 name=p$1 d
  local out=$work/$name.csv
  "$bin" create "$name" "${geometry[@]}" >/dev/null || { fail "$t" "create"; return; }
  "$bin" consume "$name" -o "$out" --format csv --follow 2>"$work/$name.c.err" &
  local cpid=$!
  "$bin" produce "$name" -i "$work/input.csv" --batch-rows "$batch_rows" 2>"$work/$name.p1.err" &
  local ppid=$!
  d=$(delay $((span_ms * 6 / 5)))
  sleep "$d"
  kill -9 "$ppid" 2>/dev/null
  wait "$ppid" 2>/dev/null
  timeout 60 "$bin" produce "$name" -i "$work/input.csv" --batch-rows "$batch_rows" 2>"$work/$name.p2.err" ||
    { fail "$t" "second producer failed: $(tail -n 1 "$work/$name.p2.err")"; kill -9 $cpid; return; }
  local i=0
  until ring_drained "$name"; do
    i=$((i + 1))
    [ $i -gt 1200 ] && { fail "$t" "consumer never drained the ring"; kill -9 $cpid; return; }
    sleep 0.05
  done
  kill -TERM $cpid
  wait_for $cpid 30
  local st=$?
  [ $st = 0 ] || { fail "$t" "consumer exited $st: $(tail -n 1 "$work/$name.c.err")"; return; }
  # ids 0..k-1, then 0..R-1: split where the id drops back to 0.
  local k
  k=$(rows_of "$out" | awk 'NR > 1 && $1 == 0 { print NR - 1; found = 1; exit } END { if (!found) print -1 }')
  if [ "$k" = -1 ]; then
    # No restart at 0 inside the file: the first producer sent nothing
    # (k = 0) and the file is one whole stream.
    k=0
  fi
  rows_of "$out" | awk -v k="$k" 'NR <= k' | run_of 0 >/dev/null || { fail "$t" "killed producer's rows have a gap"; return; }
  local second
  second=$(rows_of "$out" | awk -v k="$k" 'NR > k' | run_of 0) || { fail "$t" "second stream out of order"; return; }
  [ "$second" = "0 $rows" ] || { fail "$t" "second stream is $second, not 0 $rows"; return; }
  committed_rows=$((committed_rows + k))
  producer_trials=$((producer_trials + 1))
  [ $keep = 1 ] || rm -f "$out"
  "$bin" rm "$name" >/dev/null 2>&1
}

start=$(date +%s)
for t in $(seq 1 "$trials"); do
  consumer_trial "$t"
  producer_trial "$t"
  if [ $((t % 25)) = 0 ]; then
    echo "torture: $t of $trials trials, $fails failed ($(( $(date +%s) - start )) s)" >&2
  fi
done

echo "torture: seed $seed, $rows rows per stream in batches of $batch_rows (a whole pipe took ${span_ms} ms), $(( $(date +%s) - start )) s"
echo "  consumer SIGKILLed: $consumer_trials of $trials trials passed; rows redelivered after a restart in $redelivery_trials trials (at most $max_redelivered, $redelivered in all); none lost, none out of order"
echo "  producer SIGKILLed: $producer_trials of $trials trials passed; $committed_rows committed rows delivered before the kills, none lost, none out of order"
echo "  failed trials: $fails"
[ $fails = 0 ]
