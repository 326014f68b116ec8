#!/usr/bin/env bash
# Start pyworker on a serverless instance, as the platform's templates start
# the reference PyWorker: point a template's start command at this script.
#
# Reads the same variables as the reference's start_server.sh:
#   BACKEND          the worker: workers/$BACKEND (required)
#   WORKSPACE_DIR    where everything goes (default /workspace)
#   PYWORKER_REPO    the repository to fetch: a git URL or a local path
#                    (default: the checkout this script is in)
#   PYWORKER_REF     branch, tag or commit to check out (default: the repository's)
#   ENV_PATH         the venv (default $WORKSPACE_DIR/worker-env)
#   USE_SYSTEM_PYTHON=true  use python3 from PATH instead of a venv
#   MODEL_LOG, ROTATE_MODEL_LOG=true  the model's log (kept as $MODEL_LOG.old)
#   USE_SSL          true (default): serve TLS with /etc/instance.crt and .key,
#                    asking the platform to sign a certificate when there is none
#   WORKER_PORT, REPORT_ADDR, CONTAINER_ID, MASTER_TOKEN, ... passed to the worker
# A file /.force_update makes it fetch the repository and reinstall once.
#
# Idempotent: a second start finds the repository and the venv in place and
# installs nothing. It never starts a second worker on a port already served.
# All output goes to $WORKSPACE_DIR/debug.log and stdout; the worker's own
# log also to $WORKSPACE_DIR/pyworker.log.
set -euo pipefail

WORKSPACE_DIR="${WORKSPACE_DIR:-/workspace}"
SERVER_DIR="${SERVER_DIR:-$WORKSPACE_DIR/pyworker}"
ENV_PATH="${ENV_PATH:-$WORKSPACE_DIR/worker-env}"
DEBUG_LOG="$WORKSPACE_DIR/debug.log"
PYWORKER_LOG="$WORKSPACE_DIR/pyworker.log"
REPORT_ADDR="${REPORT_ADDR:-https://run.vast.ai}"
USE_SSL="${USE_SSL:-true}"
WORKER_PORT="${WORKER_PORT:-3000}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PYWORKER_REPO="${PYWORKER_REPO:-$HERE}"
FORCE_UPDATE=false
[ -f /.force_update ] && FORCE_UPDATE=true

mkdir -p "$WORKSPACE_DIR"
exec > >(tee -a "$DEBUG_LOG") 2>&1

# Tell the autoscaler why this instance will not work, then stop.
fail() {
    echo "start_server.sh: $1" >&2
    if [ "${REPORT_ADDR,,}" != "off" ] && [ -n "${CONTAINER_ID:-}" ]; then
        python3 - "$1" <<'PY' || true
import json, os, sys, urllib.request
body = json.dumps({"id": int(os.environ["CONTAINER_ID"]), "mtoken": os.environ.get("MASTER_TOKEN", ""),
                   "version": "pyworker-start", "error_msg": sys.argv[1], "url": ""}).encode()
for addr in os.environ.get("REPORT_ADDR", "").split(","):
    try:
        urllib.request.urlopen(urllib.request.Request(addr.strip().rstrip("/") + "/worker_status/", body,
                               {"Content-Type": "application/json"}), timeout=10).close()
        break
    except Exception as exc:
        print(f"start_server.sh: reporting to {addr}: {exc}", file=sys.stderr)
PY
    fi
    exit 1
}

echo "start_server.sh: $(date -u +%Y-%m-%dT%H:%M:%SZ) BACKEND=${BACKEND:-} WORKER_PORT=$WORKER_PORT WORKSPACE_DIR=$WORKSPACE_DIR"
[ -n "${BACKEND:-}" ] || fail "BACKEND must be set (the worker to run: workers/\$BACKEND)"
if [ "${REPORT_ADDR,,}" != "off" ] && [ -z "${CONTAINER_ID:-}" ]; then
    fail "CONTAINER_ID must be set"
fi

# One worker per port: a template that runs this twice gets one line, not a loop on EADDRINUSE.
if python3 - "$WORKER_PORT" <<'PY'
import socket, sys
with socket.socket() as s:
    s.settimeout(1)
    sys.exit(0 if s.connect_ex(("127.0.0.1", int(sys.argv[1]))) == 0 else 1)
PY
then
    echo "start_server.sh: port $WORKER_PORT is already served (a worker is running?): not starting another" >&2
    exit 1
fi

# The repository, at PYWORKER_REF.
if [ ! -d "$SERVER_DIR/.git" ]; then
    echo "fetching $PYWORKER_REPO into $SERVER_DIR"
    git clone --quiet "$PYWORKER_REPO" "$SERVER_DIR" || fail "cannot clone $PYWORKER_REPO"
    [ -n "${PYWORKER_REF:-}" ] && { git -C "$SERVER_DIR" checkout --quiet "$PYWORKER_REF" || fail "no ref $PYWORKER_REF"; }
elif [ "$FORCE_UPDATE" = true ]; then
    echo "force update: fetching $PYWORKER_REPO"
    git -C "$SERVER_DIR" fetch --quiet origin || fail "cannot fetch $PYWORKER_REPO"
    git -C "$SERVER_DIR" checkout --quiet "${PYWORKER_REF:-origin/HEAD}" || fail "no ref ${PYWORKER_REF:-origin/HEAD}"
else
    echo "repository in place: $SERVER_DIR ($(git -C "$SERVER_DIR" rev-parse --short HEAD))"
fi
[ -d "$SERVER_DIR/workers/$BACKEND" ] || fail "no worker workers/$BACKEND in $PYWORKER_REPO"

# Python: a venv with the runtime (h11, tokenizers; --no-deps: see README), installed once.
if [ "${USE_SYSTEM_PYTHON:-}" = "true" ]; then
    PYTHON=python3
    marker="$WORKSPACE_DIR/.pyworker-installed"
    pip_target=(--user)
else
    if [ ! -x "$ENV_PATH/bin/python" ]; then
        echo "creating the venv $ENV_PATH"
        python3 -m venv "$ENV_PATH" || fail "cannot create the venv $ENV_PATH"
    fi
    PYTHON="$ENV_PATH/bin/python"
    marker="$ENV_PATH/.pyworker-installed"
    pip_target=()
fi
wanted="$(sha256sum "$SERVER_DIR/requirements.txt" | cut -d' ' -f1)"
if [ "$FORCE_UPDATE" = true ] || [ "$(cat "$marker" 2>/dev/null || true)" != "$wanted" ]; then
    echo "installing $SERVER_DIR/requirements.txt"
    "$PYTHON" -m pip install --quiet --no-deps "${pip_target[@]}" -r "$SERVER_DIR/requirements.txt" \
        || fail "cannot install the worker's requirements"
    echo "$wanted" > "$marker"
else
    echo "requirements already installed ($PYTHON)"
fi
[ "$FORCE_UPDATE" = true ] && rm -f /.force_update

# TLS: the platform signs a certificate for this instance when there is none.
if [ "$USE_SSL" = true ] && [ ! -s "${PYWORKER_SSL_CERT:-/etc/instance.crt}" ]; then
    echo "requesting a TLS certificate for instance $CONTAINER_ID"
    openssl req -newkey rsa:2048 -nodes -sha256 -subj "/C=US/ST=CA/CN=pyworker.vast.ai/" \
        -addext "subjectAltName=IP:0.0.0.0" \
        -keyout "${PYWORKER_SSL_KEY:-/etc/instance.key}" -out /etc/instance.csr 2>/dev/null \
        || fail "cannot make a certificate request"
    for attempt in 1 2 3 4 5; do
        if python3 - "$CONTAINER_ID" "${PYWORKER_SSL_CERT:-/etc/instance.crt}" <<'PY'
import sys, urllib.request
url = f"https://console.vast.ai/api/v0/sign_cert/?instance_id={sys.argv[1]}"
req = urllib.request.Request(url, open("/etc/instance.csr", "rb").read(), {"Content-Type": "application/octet-stream"})
with urllib.request.urlopen(req, timeout=30) as res:
    open(sys.argv[2], "wb").write(res.read())
PY
        then break; fi
        [ "$attempt" = 5 ] && fail "the platform did not sign a TLS certificate"
        sleep $((attempt * 2))
    done
fi

if [ "${ROTATE_MODEL_LOG:-false}" = true ] && [ -n "${MODEL_LOG:-}" ] && [ -e "$MODEL_LOG" ]; then
    echo "keeping the previous model log as $MODEL_LOG.old"
    cat "$MODEL_LOG" >> "$MODEL_LOG.old" && : > "$MODEL_LOG"
fi

export REPORT_ADDR USE_SSL WORKER_PORT
cd "$SERVER_DIR"
echo "launching: $PYTHON -m pyworker workers.$BACKEND (log: $PYWORKER_LOG)"
"$PYTHON" -m pyworker "workers.$BACKEND" > >(tee -a "$PYWORKER_LOG") 2>&1 &
worker=$!
# A stop of this script is a graceful stop of the worker.
trap 'kill -TERM "$worker" 2>/dev/null || true' TERM INT
set +e
wait "$worker"
status=$?
while kill -0 "$worker" 2>/dev/null; do  # a trapped signal ends `wait` early
    wait "$worker"
    status=$?
done
set -e
case "$status" in
    0 | 130 | 143) echo "pyworker stopped (status $status)" ;;
    *) fail "pyworker exited with status $status" ;;
esac
