#!/usr/bin/env bash
# Runs the test suite under transformer-lens 4.x and 3.x at once, one torch thread each,
# then prints both logs and fails if either run failed.
set -u
venv4=$1
venv3=$2
logs=$(mktemp -d)
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 TL_CLT_TEST_THREADS=1
start=$(date +%s)
"$venv4/bin/python" -m pytest -q -p no:cacheprovider >"$logs/tl4.log" 2>&1 &
pid4=$!
"$venv3/bin/python" -m pytest -q -p no:cacheprovider >"$logs/tl3.log" 2>&1 &
pid3=$!
wait $pid4; rc4=$?
wait $pid3; rc3=$?
for major in tl4 tl3; do
  echo "================ transformer-lens ${major#tl}.x ================"
  cat "$logs/$major.log"
done
echo "suite wall time: $(( $(date +%s) - start )) s (tl4 rc=$rc4, tl3 rc=$rc3)"
rm -rf "$logs"
[ "$rc4" -eq 0 ] && [ "$rc3" -eq 0 ]
