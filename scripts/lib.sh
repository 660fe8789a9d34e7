# Shared by the scripts: steps with their durations, and refusals a person can act on.

step() { printf '\033[1m== %s\033[0m\n' "$*"; }

# step_run LABEL COMMAND...: runs COMMAND, then prints how long it took
# ("   LABEL: 12.3 s", the label up to its first " (").
step_run() {
  local label="$1" start elapsed
  shift
  step "$label"
  start=$(date +%s%N)
  "$@"
  elapsed=$((($(date +%s%N) - start) / 100000000))
  printf '   %s: %d.%d s\n' "${label%% (*}" $((elapsed / 10)) $((elapsed % 10))
}

# fail SENTENCE: stops with a sentence that says what is missing and what to do.
fail() {
  printf '\033[1;31mcannot continue:\033[0m %s\n' "$*" >&2
  exit 1
}
