#!/usr/bin/env bash
# make search, its command wrapped by benchmarks/busy_cores.py (cores busy over the whole command).
# Usage (from the repository root): benchmarks/make_search.sh N [reuse]   (run N in /tmp/msN from a fresh clone; "reuse": in /tmp/ms1, its venv kept, stores removed)
set -u
i=$1; mode=${2:-fresh}
log=${LOG_DIR:-/tmp}/make_search_$i.log
start=$(date +%s.%N)
if [ "$mode" = reuse ]; then
  cd /tmp/ms1 && rm -rf mlruns/*.db mlruns/*.journal mlruns/artifacts
  echo "run $i in /tmp/ms1 (set-up done by run 1), stores removed" > $log
else
  rm -rf /tmp/ms$i && git clone -q "${REPO:-$PWD}" /tmp/ms$i && cd /tmp/ms$i || exit 1
  { time make setup ; } > $log 2>&1
fi
args=$(make -s --no-print-directory -f Makefile print-search-args)  # what `make search` runs, after the set-up
{ time .venv/bin/python benchmarks/busy_cores.py -- best $args --store $PWD/mlruns ; } >> $log 2>&1
end=$(date +%s.%N)
echo "make search equivalent ($mode): $(echo "$end - $start" | bc) s" >> $log
