#!/usr/bin/env bash
# Run a solution.pyz the way the LPCVC 2023 referee does, then score it.
#
#   evaluation/evaluate.bash SOLUTION.pyz [DATA_DIR]
#
# DATA_DIR holds IMG/ (inputs) and GT/ (label PNGs, same names); default evaluation/test.
# Environment:
#   PYTHON      interpreter for the solution and the scorer (default: the repository's .venv/bin/python
#               when this folder sits in a lowpower checkout, else python3; python3.6 on the device)
#   TIMEOUT     seconds before the run is stopped (default REFEREE_TIMEOUT of contract.py: 900, the referee's limit)
#   OUTPUT_DIR  where NAME.json and NAME/ (predictions, stdout, stderr log) go (default evaluation/output)
#
# The run is `timeout $TIMEOUT $PYTHON FLAGS SOLUTION.pyz -i IMG -o PRED` in its own working folder,
# PRED created (empty) beforehand as the referee does, with stderr kept in OUTPUT_DIR/NAME/stderr.log
# (the referee throws it away). FLAGS is INTERPRETER_FLAGS of contract.py (-I -W ignore; why -I: see
# there), and PRED is made by `contract.py --prepare-output`: the same flags, default timeout and
# output-folder rule as lowpower.ship.runner.run_pyz. Unlike the referee, the
# solution's exit status is never lost and the image count is never assumed.
#
# Exit status: 0 scored, 1 failed, 2 timed out. Every case writes OUTPUT_DIR/NAME.json with
# "status" and a one-line "reason", and prints the reason.
set -u

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# In a checkout, the environment `make setup` made (torch, numpy, OpenCV, Pillow), as compress.sh does;
# a bare evaluation/ folder (the scoring machine) uses python3.
if [ -z "${PYTHON:-}" ] && [ -x "$HERE/../.venv/bin/python" ]; then
    PYTHON="$HERE/../.venv/bin/python"
fi
PYTHON="${PYTHON:-python3}"
OUTPUT_DIR="${OUTPUT_DIR:-$HERE/output}"

usage() {  # the comment block at the top of this file
    awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"
}

if [ $# -lt 1 ] || [ $# -gt 2 ] || [ "$1" = "-h" ] || [ "$1" = "--help" ]; then
    usage
    [ $# -ge 1 ] && { [ "$1" = "-h" ] || [ "$1" = "--help" ]; } && exit 0
    exit 1
fi

SOLUTION="$1"
DATA_DIR="${2:-$HERE/test}"
NAME="$(basename "$SOLUTION")"
NAME="${NAME%.pyz}"
[ -n "$NAME" ] && [ "$NAME" != "." ] && [ "$NAME" != ".." ] || NAME=solution
mkdir -p "$OUTPUT_DIR"
OUTPUT_DIR="$(cd "$OUTPUT_DIR" && pwd)"
JSON="$OUTPUT_DIR/$NAME.json"
RUN_DIR="$OUTPUT_DIR/$NAME"
rm -f "$JSON"

json_string() {  # a JSON string literal of $1 (backslashes, quotes, control characters escaped)
    printf '%s' "$1" | sed -e 's/\\/\\\\/g' -e 's/"/\\"/g' -e 's/\t/\\t/g' -e 's/\r/\\r/g' \
        | awk 'BEGIN { ORS = "" } NR > 1 { print "\\n" } { print }' | sed 's/^/"/; s/$/"/'
}

fail() {  # fail REASON: write a minimal report and exit 1 (nothing was scored: the figures are null)
    {
        printf '{\n "name": %s,\n "status": "failed",\n' "$(json_string "$NAME")"
        printf ' "reason": %s,\n "problems": [%s],\n' "$(json_string "$1")" "$(json_string "$1")"
        printf ' "mean_dice": null,\n "miou": null,\n "score": null,\n "score_wall": null,\n'
        printf ' "solution": %s,\n "data_dir": %s\n}\n' "$(json_string "$SOLUTION")" "$(json_string "$DATA_DIR")"
    } > "$JSON"
    echo "FAILED: $1" >&2
    echo "report: $JSON" >&2
    exit 1
}

[ -f "$SOLUTION" ] || fail "no such file: $SOLUTION"
[ -d "$DATA_DIR/IMG" ] || fail "no IMG/ folder in $DATA_DIR (expected DATA_DIR/IMG and DATA_DIR/GT)"
[ -d "$DATA_DIR/GT" ] || fail "no GT/ folder in $DATA_DIR (expected DATA_DIR/IMG and DATA_DIR/GT)"
command -v "$PYTHON" > /dev/null 2>&1 || fail "interpreter not found: PYTHON=$PYTHON"
case "$PYTHON" in  # absolute, since the solution runs in its own folder (symlinks kept: venvs)
    */*) PYTHON="$(cd "$(dirname "$PYTHON")" && pwd)/$(basename "$PYTHON")" ;;
    *) PYTHON="$(command -v "$PYTHON")" ;;
esac
# The run's rules (the default timeout, the interpreter flags) from contract.py, their one home:
# it prints `REFEREE_TIMEOUT=900` and `INTERPRETER_FLAGS=(-I -W ignore)`, shell-quoted.
REFEREE_TIMEOUT=
INTERPRETER_FLAGS=()
CONTRACT="$("$PYTHON" -I "$HERE/contract.py" --shell)" \
    || fail "could not read the run's rules: $PYTHON -I $HERE/contract.py --shell failed"
eval "$CONTRACT"
[ -n "$REFEREE_TIMEOUT" ] || fail "no REFEREE_TIMEOUT from $PYTHON -I $HERE/contract.py --shell"
TIMEOUT="${TIMEOUT:-$REFEREE_TIMEOUT}"
case "$TIMEOUT" in
    ''|*[!0-9.]*) fail "TIMEOUT must be a number of seconds, got '$TIMEOUT'" ;;
esac

SOLUTION_ABS="$(cd "$(dirname "$SOLUTION")" && pwd)/$(basename "$SOLUTION")"
DATA_ABS="$(cd "$DATA_DIR" && pwd)"
rm -rf "$RUN_DIR"
mkdir -p "$RUN_DIR"
# PRED as the referee prepares it (created before the run), by the contract's rule, run_pyz's too.
"$PYTHON" -I "$HERE/contract.py" --prepare-output "$RUN_DIR/pred" \
    || fail "could not prepare the output folder: $PYTHON -I $HERE/contract.py --prepare-output $RUN_DIR/pred failed"
NIMAGES="$(find "$DATA_ABS/IMG" -maxdepth 1 -type f -iname '*.png' | wc -l | tr -d ' ')"

echo "running $NAME on $NIMAGES images from $DATA_ABS/IMG (timeout ${TIMEOUT}s, $PYTHON)" >&2
echo "command: timeout $TIMEOUT $PYTHON ${INTERPRETER_FLAGS[*]:-} $SOLUTION_ABS -i $DATA_ABS/IMG -o $RUN_DIR/pred" >&2
START="$(date +%s.%N)"
# The solution runs in its own working folder; `timeout` signals its whole process group.
# (${A[@]+"${A[@]}"}: an empty array under `set -u` in bash before 4.4.)
( cd "$RUN_DIR" && exec timeout --kill-after=10 "$TIMEOUT" "$PYTHON" ${INTERPRETER_FLAGS[@]+"${INTERPRETER_FLAGS[@]}"} \
      "$SOLUTION_ABS" -i "$DATA_ABS/IMG" -o "$RUN_DIR/pred" > "$RUN_DIR/stdout.txt" 2> "$RUN_DIR/stderr.log" )
RC=$?
END="$(date +%s.%N)"
WALL="$(awk -v s="$START" -v e="$END" 'BEGIN { printf "%.3f", e - s }')"

"$PYTHON" "$HERE/score.py" -i "$RUN_DIR/pred" -g "$DATA_ABS/GT" --json "$JSON" \
    --name "$NAME" --solution "$SOLUTION_ABS" --data-dir "$DATA_ABS" \
    --solution-status "$RC" --solution-stdout "$RUN_DIR/stdout.txt" \
    --stderr-log "$RUN_DIR/stderr.log" --wall-seconds "$WALL" --timeout "$TIMEOUT"
STATUS=$?

if [ ! -s "$JSON" ]; then
    fail "scoring failed: $PYTHON $HERE/score.py exited with status $STATUS (does $PYTHON have numpy, opencv and Pillow?)"
fi
echo "report: $JSON" >&2
exit "$STATUS"
