#!/usr/bin/env bash
# Builds the libFuzzer targets of fuzz/ with clang and runs each for a bounded time.
#
#   fuzz/run.sh [SECONDS_PER_TARGET]      (default 20; CTest's fuzz_decoders passes 15)
#
# Every target first replays the reproducers of fuzz/crashes/<target>/ (bugs found before: they
# must not come back), then fuzzes for SECONDS_PER_TARGET on a temporary copy of its seed corpus
# fuzz/corpus/<target>/ (the checked-in corpus is never modified). Any crash, sanitizer report,
# failed FUZZ_CHECK, timeout (-timeout=5), leak or out-of-memory (-rss_limit_mb=2048) fails the
# run: the report is printed and the reproducer kept in <build>/findings/<target>/.
# The build directory is $TESSERA_FUZZ_BUILD_DIR, by default build-fuzz/ at the top of the repo;
# the compiler is $TESSERA_FUZZ_CXX, by default clang++-14 (scripts/setup.sh installs it).
# Exits 0 only when every target ran clean; the last line says which.
set -euo pipefail

secs="${1:-20}"
if ! [[ "$secs" =~ ^[0-9]+$ ]] || [ "$secs" -lt 1 ]; then
  echo "usage: $0 [SECONDS_PER_TARGET]" >&2
  exit 2
fi

fuzz_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)"
root="$(dirname "$fuzz_dir")"
build="${TESSERA_FUZZ_BUILD_DIR:-$root/build-fuzz}"
cxx="${TESSERA_FUZZ_CXX:-}"
if [ -z "$cxx" ]; then
  cxx="$(command -v clang++-14 || command -v clang++ || true)"
fi
if [ -z "$cxx" ]; then
  echo "fuzz_decoders: FAIL: no clang++ (run scripts/setup.sh: clang-14 libclang-rt-14-dev)" >&2
  exit 1
fi

mkdir -p "$build"
# One run at a time per build directory (two ctest invocations would race on the build).
exec 9>"$build/.run.lock"
flock 9

t0=$SECONDS
generator=()
if [ ! -f "$build/CMakeCache.txt" ] && command -v ninja >/dev/null; then generator=(-G Ninja); fi
if ! cmake -S "$fuzz_dir" -B "$build" "${generator[@]}" -DCMAKE_CXX_COMPILER="$cxx" \
    >"$build/configure.log" 2>&1; then
  cat "$build/configure.log" >&2
  echo "fuzz_decoders: FAIL: cmake configure of fuzz/ failed" >&2
  exit 1
fi
if ! cmake --build "$build" -j "$(nproc)" >"$build/build.log" 2>&1; then
  tail -n 60 "$build/build.log" >&2
  echo "fuzz_decoders: FAIL: build of the fuzz targets failed (log: $build/build.log)" >&2
  exit 1
fi
echo "fuzz: built the targets with $cxx in $((SECONDS - t0)) s"

symbolizer=/usr/lib/llvm-14/bin/llvm-symbolizer
if [ -x "$symbolizer" ]; then export ASAN_SYMBOLIZER_PATH="$symbolizer"; fi
export UBSAN_OPTIONS="print_stacktrace=1:${UBSAN_OPTIONS:-}"

work="$(mktemp -d "${TMPDIR:-/tmp}/tessera-fuzz.XXXXXX")"
trap 'rm -rf "$work"' EXIT

targets=()
for src in "$fuzz_dir"/*_fuzzer.cc; do
  name="$(basename "$src" _fuzzer.cc)"
  targets+=("$name")
done

failed=()
for name in "${targets[@]}"; do
  bin="$build/${name}_fuzzer"
  findings="$build/findings/$name"
  rm -rf "$findings"
  mkdir -p "$work/$name/artifacts" "$work/$name/corpus"
  if [ -d "$fuzz_dir/corpus/$name" ]; then cp -r "$fuzz_dir/corpus/$name/." "$work/$name/corpus/"; fi

  # Known crashers first: each input runs once.
  if compgen -G "$fuzz_dir/crashes/$name/*" >/dev/null; then
    if ! "$bin" -timeout=5 -rss_limit_mb=2048 "$fuzz_dir/crashes/$name"/* >"$work/$name/replay.log" 2>&1; then
      echo "fuzz: $name: FAIL: a reproducer in fuzz/crashes/$name/ still crashes:"
      grep -E "Running: |runtime error|ERROR: |FUZZ_CHECK|SUMMARY|^ +#[0-9] " "$work/$name/replay.log" | head -n 24
      failed+=("$name")
      continue
    fi
  fi

  t1=$SECONDS
  rc=0
  "$bin" -max_total_time="$secs" -timeout=5 -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="$work/$name/artifacts/" "$work/$name/corpus" >"$work/$name/fuzz.log" 2>&1 || rc=$?
  if [ "$rc" -ne 0 ] || compgen -G "$work/$name/artifacts/*" >/dev/null; then
    mkdir -p "$findings"
    cp "$work/$name/fuzz.log" "$findings/"
    cp -r "$work/$name/artifacts/." "$findings/" 2>/dev/null || true
    echo "fuzz: $name: FAIL (exit $rc) after $((SECONDS - t1)) s; reproducer and log in $findings/"
    # The sanitizer or FUZZ_CHECK report, without libFuzzer's progress lines.
    grep -vE '^#[0-9]+[[:space:]]|^INFO: |^MS: [0-9]|^[[:space:]]+NEW_FUNC' "$work/$name/fuzz.log" | tail -n 60
    failed+=("$name")
    continue
  fi
  runs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$work/$name/fuzz.log")"
  cov="$(grep -oE 'cov: [0-9]+' "$work/$name/fuzz.log" | tail -n 1)"
  echo "fuzz: $name: ok, ${runs:-?} inputs in $((SECONDS - t1)) s, $cov"
done

if [ ${#failed[@]} -ne 0 ]; then
  echo "fuzz_decoders: FAIL: ${#failed[@]} of ${#targets[@]} targets crashed: ${failed[*]}"
  exit 1
fi
echo "fuzz_decoders: PASS: ${#targets[@]} targets, ${secs} s each, no crash ($((SECONDS - t0)) s in all)"
