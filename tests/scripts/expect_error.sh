# expect_error.sh - sourced by the bad-input test scripts (test_cli_errors.sh, test_hostile_inputs.sh,
# test_t5_bad_input.sh). expect_error PATTERN ARGS... runs "$bin" ARGS within $EXPECT_LIMIT seconds
# (default 60) and requires what every bad input must give: a non-zero exit, no timeout, and exactly one
# stderr line "error: ...PATTERN...". It counts $cases and $fails; the caller sets $bin and $work.
cases=0 fails=0
expect_error() {
  local pat=$1; shift
  cases=$((cases + 1))
  timeout -k 5 "${EXPECT_LIMIT:-60}" "$bin" "$@" >"$work/out" 2>"$work/err"
  local rc=$? lines
  lines=$(wc -l <"$work/err")
  if [ $rc -eq 0 ] || [ $rc -ge 124 ] || [ "$lines" -ne 1 ] || ! grep -q -- "^error: .*$pat" "$work/err"; then
    echo "FAIL (rc=$rc, $lines stderr lines, want /$pat/): scalekv $*"
    sed 's/^/  stderr: /' "$work/err" | head -5
    fails=$((fails + 1))
  else
    echo "ok: $(cut -c1-220 "$work/err")"
  fi
}
