#!/usr/bin/env bash
# Checks the AWS SAM application (template.yaml) without an AWS account and without Docker:
#   1. sam validate --lint                      (SAM's own lint: cfn-lint's default rules)
#   2. cfn-lint with the serverless rules       (-a cfn_lint_serverless.rules)
#   3. sam build for arm64 and for x86_64       (--exclude RetrainFunction: a container image, needs Docker)
#   4. infra/function_sizes.py for both builds  (each function + its layers <= 250 MB, recommend <= 150 MB)
#   5. smoke: the built artifacts imported by a python3.12 process (the Lambda runtime's version), with
#      only the function's code and its layer on sys.path; recommend, track and admin serve GET /health;
#      recommend then loads a real model (trained and published to a file:// store by the project's own
#      pipeline, .venv's towerlight, on small synthetic data) and serves GET /recommendations/{user}
#      with the very answer the source tree gives (the same items, scores within 1e-4).
#
# The SAM tooling lives in its own virtualenv (.venv-sam, created when missing) so it can never change
# the project's .venv. python3.12 comes from $TOWERLIGHT_PYTHON312, PATH or pyenv.
# Logs: .aws-sam/check/<step>.log; sizes: .aws-sam/check/sizes-<arch>.json. Stops at the first failure.
set -euo pipefail
cd "$(dirname "$0")/.."

SAM_VENV=".venv-sam"
SAM_TOOLS=("aws-sam-cli==1.170.0" "cfn-lint==1.58.0" "cfn-lint-serverless==0.3.6")
CHECK_DIR=".aws-sam/check"
ARCHITECTURES=(arm64 x86_64)
SMOKE_ARCH="x86_64" # the architecture of this machine and of CI's
export SAM_CLI_TELEMETRY=0
export AWS_DEFAULT_REGION="${AWS_DEFAULT_REGION:-us-east-1}" # offline checks still want a region name

mkdir -p "$CHECK_DIR"
started_all=$SECONDS

fail() {
    printf '\ncheck_template: FAILED: %s\n' "$1" >&2
    if [[ -n "${2:-}" && -f "$2" ]]; then
        printf -- '--- last lines of %s ---\n' "$2" >&2
        tail -n 40 "$2" >&2
    fi
    exit 1
}

# run NAME COMMAND...: runs COMMAND with its output in $CHECK_DIR/NAME.log, prints one line with the time.
run() {
    local name=$1 log="$CHECK_DIR/$1.log" started=$SECONDS
    shift
    printf '== %-34s' "$name"
    if "$@" >"$log" 2>&1; then
        printf 'ok (%ds)\n' $((SECONDS - started))
    else
        printf 'FAILED (%ds)\n' $((SECONDS - started))
        fail "$name: $*" "$log"
    fi
}

find_python312() {
    local candidate
    for candidate in "${TOWERLIGHT_PYTHON312:-}" "$(command -v python3.12 2>/dev/null || true)" \
        "$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")"/versions/3.12*/bin/python3.12; do
        if [[ -n "$candidate" && -x "$candidate" ]] &&
            "$candidate" -c 'import sys; assert sys.version_info[:2] == (3, 12)' 2>/dev/null; then
            echo "$candidate"
            return 0
        fi
    done
    return 1
}

install_sam_tools() {
    local stamp="$SAM_VENV/.installed-$(printf '%s\n' "${SAM_TOOLS[@]}" | sha256sum | cut -c1-12)"
    [[ -f "$stamp" && -x "$SAM_VENV/bin/sam" ]] && return 0
    [[ -x "$SAM_VENV/bin/python" ]] || python3 -m venv "$SAM_VENV"
    "$SAM_VENV/bin/python" -m pip install --quiet --upgrade pip
    "$SAM_VENV/bin/python" -m pip install --quiet "${SAM_TOOLS[@]}"
    rm -f "$SAM_VENV"/.installed-*
    touch "$stamp"
}

# ---------------------------------------------------------------------------------------------- tools
PY312=$(find_python312) || fail "no CPython 3.12 found: install it (e.g. pyenv install 3.12) or set TOWERLIGHT_PYTHON312"
# sam build's python builder and layers/Makefile both run `python3.12` from PATH.
export PATH="$(dirname "$PY312"):$PATH"
run "sam-tools (${SAM_VENV})" install_sam_tools
SAM="$SAM_VENV/bin/sam"
printf '   %s, %s, python3.12 = %s\n' "$("$SAM" --version)" "$("$SAM_VENV/bin/cfn-lint" --version)" "$PY312"

# ----------------------------------------------------------------------------------------- lint
run "sam-validate-lint" "$SAM" validate --lint --template template.yaml
run "cfn-lint-serverless" "$SAM_VENV/bin/cfn-lint" -a cfn_lint_serverless.rules -t template.yaml

# ---------------------------------------------------------------------------------------- build
for arch in "${ARCHITECTURES[@]}"; do
    run "sam-build-$arch" "$SAM" build --template template.yaml --exclude RetrainFunction \
        --build-dir ".aws-sam/build-$arch" --parameter-overrides "Architecture=$arch" --no-cached
done

# ---------------------------------------------------------------------------------------- sizes
for arch in "${ARCHITECTURES[@]}"; do
    run "function-sizes-$arch" "$SAM_VENV/bin/python" infra/function_sizes.py ".aws-sam/build-$arch" \
        --architecture "$arch" --json "$CHECK_DIR/sizes-$arch.json"
    sed 's/^/   /' "$CHECK_DIR/function-sizes-$arch.log"
done

# ---------------------------------------------------------------------------------------- model
# A real model and a real user for the recommend smoke: the project's own pipeline (.venv's towerlight)
# trains on small synthetic data and publishes to a file:// store; an embedded Postgres (pgserver, the
# local default) holds a few clicks of the smoke request's user; and the source tree
# (functions/recommend/app.py with layers/) answers that request first, for the built artifact to match.
MODEL_STORE="$PWD/$CHECK_DIR/model-store"
MODEL_EVENT="events/recommend_two_tower.json"
EXPECTED="$PWD/$CHECK_DIR/recommend-expected.json"
PG_DIR="$PWD/$CHECK_DIR/postgres"
PG_URL_FILE="$PWD/$CHECK_DIR/database-url"
[[ -x .venv/bin/towerlight ]] || run "project-venv (make install)" make install
stop_postgres() { # pgserver stops (and deletes) a server once no process uses it
    [[ -d "$PG_DIR" ]] || return 0
    .venv/bin/python -c 'import pgserver, sys; pgserver.get_server(sys.argv[1], cleanup_mode="delete")' \
        "$PG_DIR" >/dev/null 2>&1 || true
}
trap stop_postgres EXIT
stop_postgres
rm -rf "$MODEL_STORE"
run "model-train-publish" env -u DATABASE_URL TOWERLIGHT_STORE="file://$MODEL_STORE" .venv/bin/towerlight train \
    --dataset synthetic --synthetic 300 400 8000 --epochs 2 --no-baselines --no-refit --max-users 300
user_history() {
    .venv/bin/python - "$PG_DIR" "$PG_URL_FILE" "$MODEL_EVENT" <<'PY'
import json, sys, uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from towerlight.db.events import EventRow, insert_events
from towerlight.db.migrate import migrate
from towerlight_offline.local.postgres import start_embedded_postgres

import psycopg

pg_dir, url_file, event_path = sys.argv[1:4]
_, url = start_embedded_postgres(Path(pg_dir), cleanup_mode=None)  # left running for the smoke
user = json.load(open(event_path))["pathParameters"]["user_id"]
now = datetime.now(UTC)
clicks = [EventRow(str(uuid.uuid4()), user, f"i{n}", "click", None, now - timedelta(minutes=n)) for n in range(1, 6)]
with psycopg.connect(url, autocommit=True) as conn:
    migrate(conn)
    with conn.transaction():
        insert_events(conn, clicks)
Path(url_file).write_text(url)
print(f"user {user}: clicked {[c.item_id for c in clicks]} in {url}")
PY
}
run "model-user-history" user_history
DATABASE_URL_SMOKE=$(cat "$PG_URL_FILE")
expected_answer() {
    env -u DATABASE_SECRET_ARN DATABASE_URL="$DATABASE_URL_SMOKE" TOWERLIGHT_STORE="file://$MODEL_STORE" \
        POWERTOOLS_SERVICE_NAME=towerlight POWERTOOLS_METRICS_NAMESPACE=Towerlight \
        POWERTOOLS_TRACE_DISABLED=true POWERTOOLS_LOG_LEVEL=WARNING \
        .venv/bin/python - "$MODEL_EVENT" "$EXPECTED" <<'PY'
import json, sys

from towerlight_offline.local.worker import LocalLambdaContext, load_function_handler

event_path, expected_path = sys.argv[1], sys.argv[2]
response = load_function_handler("Recommend")(json.load(open(event_path)), LocalLambdaContext("recommend"))
assert response["statusCode"] == 200, response
json.dump(json.loads(response["body"]), open(expected_path, "w"))
PY
}
run "model-expected-answer" expected_answer

# ---------------------------------------------------------------------------------------- smoke
# One request through a built artifact, as Lambda would load it: the function's directory, then the
# layer's python/ (site-packages disabled with -S, so nothing from this machine can stand in).
# smoke FUNCTION EVENT|- [STORE EXPECTED DATABASE_URL]: with STORE, the function reads its model from
# that file:// store and its history from DATABASE_URL, and its answer must match the body in EXPECTED.
smoke() {
    local function=$1 event=$2 store=${3:-} expected=${4:--} database=${5:-}
    local build="$PWD/.aws-sam/build-$SMOKE_ARCH"
    local workdir status
    workdir=$(mktemp -d)
    store=${store:-$workdir}
    [[ "$event" == "-" ]] || event="$PWD/$event"
    # From an empty directory: nothing in the working tree can be imported by accident.
    (cd "$workdir" && env -i PATH="$PATH" HOME="$HOME" LANG=C.UTF-8 \
        PYTHONPATH="$build/$function:$build/RuntimeLayerX8664/python" \
        AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1 \
        TOWERLIGHT_STORE="file://$store" MODEL_REFRESH_SECONDS=60 ${database:+DATABASE_URL="$database"} \
        POWERTOOLS_SERVICE_NAME=towerlight POWERTOOLS_METRICS_NAMESPACE=Towerlight \
        POWERTOOLS_LOG_LEVEL=WARNING POWERTOOLS_TRACE_DISABLED=true \
        "$PY312" -S - "$function" "$event" "$expected" "$store") <<'PY'
import json, sys, time

function, event_path, expected_path, store = sys.argv[1:5]
function_dir, layer_dir = sys.path[1], sys.path[2]  # sys.path[0] is the (empty) working directory
started = time.perf_counter()
import app  # noqa: E402 - the built function's app.py, as Lambda imports it
import towerlight  # noqa: E402

init_ms = (time.perf_counter() - started) * 1000
assert app.__file__.startswith(function_dir), f"app imported from {app.__file__}"
assert towerlight.__file__.startswith(layer_dir), f"towerlight imported from {towerlight.__file__}"


class Context:
    function_name = function
    memory_limit_in_mb = 1769
    invoked_function_arn = f"arn:aws:lambda:us-east-1:123456789012:function:{function}"
    aws_request_id = "00000000-0000-4000-8000-00000000smoke"

    def get_remaining_time_in_millis(self) -> int:
        return 20_000


heavy = sorted(m for m in ("torch", "sklearn", "scipy", "pandas") if m in sys.modules)
assert not heavy, f"{function} imported training libraries: {heavy}"
if event_path == "-":
    print(f"{function}: imported in {init_ms:.0f} ms (init only)")
    sys.exit(0)
event = json.load(open(event_path))
started = time.perf_counter()
response = app.handler(event, Context())
took_ms = (time.perf_counter() - started) * 1000
assert response.get("statusCode") == 200, response
if expected_path == "-":
    print(f"{function}: init {init_ms:.0f} ms, {event['routeKey']} -> {json.dumps(response)} in {took_ms:.0f} ms")
    sys.exit(0)
# A real answer: the published version, two-tower from the user's history (their clicks excluded as
# seen), and the source tree's items and scores.
body, expected = json.loads(response["body"]), json.load(open(expected_path))
version = json.load(open(f"{store}/models/CURRENT"))["version"]
assert body["model_version"] == expected["model_version"] == version, (body["model_version"], version)
assert body["strategy"] == expected["strategy"] == "two_tower", body
k = int(event["queryStringParameters"]["k"])
got = [(item["item_id"], item["rank"]) for item in body["items"]]
assert got == [(item["item_id"], item["rank"]) for item in expected["items"]] and len(got) == k, (got, expected)
assert all(abs(a["score"] - b["score"]) <= 1e-4 for a, b in zip(body["items"], expected["items"])), body
scores = [item["score"] for item in body["items"]]
assert scores == sorted(scores, reverse=True), scores
print(
    f"{function}: init {init_ms:.0f} ms, {event['rawPath']}?{event['rawQueryString']} -> model {version}, "
    f"{body['strategy']}, items {[item_id for item_id, _ in got]} in {took_ms:.0f} ms (first request)"
)
PY
    status=$?
    rm -rf "$workdir"
    return $status
}

recommend_event="events/health_recommend.json"
[[ -f "$recommend_event" ]] || recommend_event="events/health_admin.json" # same GET /health request
run "smoke-recommend-$SMOKE_ARCH" smoke RecommendFunction "$recommend_event"
grep -E '^RecommendFunction: ' "$CHECK_DIR/smoke-recommend-$SMOKE_ARCH.log" | sed 's/^/   /'
run "smoke-recommend-model-$SMOKE_ARCH" smoke RecommendFunction "$MODEL_EVENT" "$MODEL_STORE" "$EXPECTED" \
    "$DATABASE_URL_SMOKE"
grep -E '^RecommendFunction: ' "$CHECK_DIR/smoke-recommend-model-$SMOKE_ARCH.log" | sed 's/^/   /'
run "smoke-admin-$SMOKE_ARCH" smoke AdminFunction events/health_admin.json
run "smoke-track-$SMOKE_ARCH" smoke TrackFunction events/health_track.json
run "smoke-ingest-$SMOKE_ARCH" smoke IngestFunction -

printf '\ncheck_template: all checks passed in %ds\n' $((SECONDS - started_all))
