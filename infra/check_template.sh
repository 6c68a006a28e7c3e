#!/usr/bin/env bash
# Checks the AWS SAM application (template.yaml) without an AWS account and without Docker:
#   1. sam validate --lint                      (SAM's own lint: cfn-lint's default rules)
#   2. cfn-lint with the serverless rules       (-a cfn_lint_serverless.rules)
#   3. sam build for arm64 and for x86_64       (--exclude RetrainFunction: a container image, needs Docker)
#   4. infra/function_sizes.py for both builds  (each function + its layers <= 250 MB, recommend <= 150 MB)
#   5. smoke: the built artifacts imported by a python3.12 process (the Lambda runtime's version), with
#      only the function's code and its layer on sys.path; recommend, track and admin serve GET /health.
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

# ---------------------------------------------------------------------------------------- smoke
# One request through a built artifact, as Lambda would load it: the function's directory, then the
# layer's python/ (site-packages disabled with -S, so nothing from this machine can stand in).
smoke() {
    local function=$1 event=$2 build="$PWD/.aws-sam/build-$SMOKE_ARCH"
    local store status
    store=$(mktemp -d)
    [[ "$event" == "-" ]] || event="$PWD/$event"
    # From an empty directory: nothing in the working tree can be imported by accident.
    (cd "$store" && env -i PATH="$PATH" HOME="$HOME" LANG=C.UTF-8 \
        PYTHONPATH="$build/$function:$build/RuntimeLayerX8664/python" \
        AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1 \
        TOWERLIGHT_STORE="file://$store" MODEL_REFRESH_SECONDS=60 \
        POWERTOOLS_SERVICE_NAME=towerlight POWERTOOLS_METRICS_NAMESPACE=Towerlight \
        POWERTOOLS_LOG_LEVEL=WARNING POWERTOOLS_TRACE_DISABLED=true \
        "$PY312" -S - "$function" "$event") <<'PY'
import json, sys, time

function, event_path = sys.argv[1], sys.argv[2]
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
print(f"{function}: init {init_ms:.0f} ms, {event['routeKey']} -> {json.dumps(response)} in {took_ms:.0f} ms")
assert response.get("statusCode") == 200, response
PY
    status=$?
    rm -rf "$store"
    return $status
}

recommend_event="events/health_recommend.json"
[[ -f "$recommend_event" ]] || recommend_event="events/health_admin.json" # same GET /health request
run "smoke-recommend-$SMOKE_ARCH" smoke RecommendFunction "$recommend_event"
grep -E '^RecommendFunction: ' "$CHECK_DIR/smoke-recommend-$SMOKE_ARCH.log" | sed 's/^/   /'
run "smoke-admin-$SMOKE_ARCH" smoke AdminFunction events/health_admin.json
run "smoke-track-$SMOKE_ARCH" smoke TrackFunction events/health_track.json
run "smoke-ingest-$SMOKE_ARCH" smoke IngestFunction -

printf '\ncheck_template: all checks passed in %ds\n' $((SECONDS - started_all))
