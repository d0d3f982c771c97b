#!/usr/bin/env bash
# An example plugin in plain bash: it spawns `hostd serve` on its own stdio as a coprocess
# and speaks newline-delimited JSON-RPC to it with printf and read.
set -euo pipefail
PYTHON=${PYTHON:-python3}

coproc HOSTD { exec "$PYTHON" -m hostd serve --auth-dir '' --model-base-url '' --log-level warn; }
to_hostd=${HOSTD[1]}
from_hostd=${HOSTD[0]}

call() {  # call ID METHOD PARAMS_JSON: sends one request, sets $answer to the answer line
  printf '{"jsonrpc":"2.0","id":%s,"method":"%s","params":%s}\n' "$1" "$2" "$3" >&"$to_hostd"
  IFS= read -r answer <&"$from_hostd"
}

call 1 hostd.hello '{"plugin_id":"bash-hello","schema_version":3}'
echo "hello      -> ${answer:0:80}..."
call 2 host.log '{"level":"warn","message":"hello from bash","fields":{"token":"not-in-logs"}}'
echo "host.log   -> $answer"
call 3 host.nope '{}'
echo "host.nope  -> $answer"

exec {to_hostd}>&-  # EOF: hostd finishes what is in flight and exits
wait "$HOSTD_PID"
