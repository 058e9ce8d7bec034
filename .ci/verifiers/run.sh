#!/usr/bin/env bash
# The issue-14 proof: `jwks-server probe` against protected endpoints built on
# libraries no one here wrote (PyJWT, node `jose`, Go's golang-jwt from
# Debian), each correctly configured and misconfigured the ways real
# incidents came from (no-signature-check, hs256-public-key,
# no-audience-check, no-exp-required, no-time-check). A server with --algorithms
# RS256,ES256,EdDSA makes the tokens; every mode of every library is probed
# with every algorithm (`--alg`), and the correct ones also with RFC 9068
# access tokens (`--token-endpoint`). expect.py holds what each mode must let
# through. Prints the probe's table for a correct and a broken verifier.
#
#   .ci/verifiers/run.sh BIN PYTHON NODE_DIR WORK_DIR
#
# NODE_DIR is where `jose` is installed (empty: skip jose). Needs go and
# golang-github-golang-jwt-jwt-dev (installed with apt-get when missing).
# Prints `ok - …` / `FAIL - …` / `skip - …` lines for .ci/interop.sh to count.
set -uo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
BIN=$1 PY=$2 NODE_DIR=$3 WORK=$4/probe
mkdir -p "$WORK"
AUDIENCE=https://api.probe.test/
ALGS=(RS256 ES256 EdDSA)
MODES=(correct no-signature-check hs256-public-key no-audience-check no-exp-required no-time-check)
PIDS=()
trap 'for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null; done' EXIT

# N free loopback ports at once (so they differ), as interop.sh picks them.
free_ports() {
    "$PY" -c 'import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))' "$1"
}

# Waits (10 s at most) until $1 answers HTTP at all (a verifier: 401).
answers_within_10s() {
    local deadline=$((SECONDS + 10))
    while ((SECONDS < deadline)); do
        [[ $(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$1" 2>/dev/null) != 000 ]] && return 0
        sleep 0.1
    done
    return 1
}

# ---- the server -----------------------------------------------------------------
read -r HTTP_PORT GRPC_PORT < <(free_ports 2)
BASE=http://127.0.0.1:$HTTP_PORT
(
    while read -r var; do [[ $var == JWKS_* ]] && unset "$var"; done < <(compgen -e)
    exec "$BIN" --log-format json --http-addr "127.0.0.1:$HTTP_PORT" --grpc-addr "127.0.0.1:$GRPC_PORT" \
        --store "sqlite://$WORK/jwks.db" --algorithms RS256,ES256,EdDSA
) >"$WORK/server.log" 2>&1 &
PIDS+=($!)
if ! answers_within_10s "$BASE/health" ||
    ! curl -fsS --max-time 10 "$BASE/test-tokens" -o "$WORK/catalogue.json" 2>"$WORK/catalogue.err"; then
    echo "FAIL - probe: a server with --algorithms RS256,ES256,EdDSA answers GET /test-tokens"
    sed 's/^/    /' "$WORK/server.log" "$WORK/catalogue.err" | head -n 40
    exit 1
fi
echo "ok - probe: the server's catalogue offers $("$PY" -c 'import json,sys; print(len(json.load(open(sys.argv[1]))["defects"]))' "$WORK/catalogue.json") defects"

# ---- the verifiers -------------------------------------------------------------
# PyJWT before 2.12 accepted unknown `crit` extensions (CVE-2026-32597): the
# correct verifier relies on PyJWT refusing them, so a venv kept from an older
# run is upgraded first.
if ! "$PY" -c 'import sys, jwt; sys.exit(tuple(map(int, jwt.__version__.split(".")[:2])) < (2, 12))' 2>/dev/null; then
    timeout 300 "$PY" -m pip install --disable-pip-version-check --quiet "PyJWT[crypto]>=2.12,<3" >"$WORK/pip.log" 2>&1 ||
        sed 's/^/    /' "$WORK/pip.log" | tail -n 5
fi
LIBS=(pyjwt)
if [[ -n $NODE_DIR && -f $NODE_DIR/node_modules/jose/package.json ]]; then
    cp "$HERE/jose_verifier.mjs" "$NODE_DIR/jose_verifier.mjs" # beside node_modules: `import 'jose'` resolves
    LIBS+=(jose)
else
    echo "skip - probe: jose (node) verifiers: jose is not installed"
fi
GO_JWT=/usr/share/gocode/src/github.com/golang-jwt/jwt
if ! command -v go >/dev/null || [[ ! -d $GO_JWT ]]; then
    { timeout 300 apt-get update -qq && DEBIAN_FRONTEND=noninteractive timeout 300 \
        apt-get install -y -qq golang-go golang-github-golang-jwt-jwt-dev; } >"$WORK/apt.log" 2>&1
fi
if ! command -v go >/dev/null || [[ ! -d $GO_JWT ]]; then
    echo "FAIL - probe: go and golang-github-golang-jwt-jwt-dev could not be installed"
    sed 's/^/    /' "$WORK/apt.log" | tail -n 20
elif ! (cd "$HERE/golang_jwt" && GOPATH=/usr/share/gocode GO111MODULE=off GOPROXY=off GOFLAGS= \
    GOCACHE="$WORK/go-cache" timeout 180 go build -o "$WORK/golang_jwt" .) >"$WORK/go-build.log" 2>&1; then
    echo "FAIL - probe: the golang-jwt verifier builds offline from Debian's packages"
    sed 's/^/    /' "$WORK/go-build.log" | head -n 20
else
    LIBS+=(golang-jwt)
fi

# start_verifier LIB MODE [access-tokens]: its URL in VERIFIER_URL, or fails.
start_verifier() {
    local lib=$1 mode=$2 access=${3:-} port
    port=$(free_ports 1)
    case $lib in
    pyjwt) exec "$PY" "$HERE/pyjwt_verifier.py" --port "$port" --jwks "$BASE/.well-known/jwks.json" \
        --issuer "$BASE" --audience "$AUDIENCE" --mode "$mode" ${access:+--access-tokens} ;;
    jose) exec node "$NODE_DIR/jose_verifier.mjs" "$port" "$BASE/.well-known/jwks.json" "$BASE" "$AUDIENCE" \
        "$mode" $access ;;
    golang-jwt) exec "$WORK/golang_jwt" "$port" "$BASE/.well-known/jwks.json" "$BASE" "$AUDIENCE" "$mode" $access ;;
    esac >"$WORK/$lib-$mode$access.log" 2>&1 &
    PIDS+=($!)
    VERIFIER_PID=$!
    VERIFIER_URL=http://127.0.0.1:$port/protected
    answers_within_10s "$VERIFIER_URL"
}

# probe_and_check LIB MODE ROUTE LABEL PROBE-ARGS...
probe_and_check() {
    local lib=$1 mode=$2 route=$3 label=$4 rc=0
    shift 4
    local out=$WORK/probe-$lib-$mode-${label//[^A-Za-z0-9]/_}.json
    timeout 120 "$BIN" probe "$VERIFIER_URL" --server "$BASE" --audience "$AUDIENCE" --json "$@" \
        >"$out" 2>"$out.err" || rc=$?
    "$PY" "$HERE/expect.py" --probe "$out" --exit-code "$rc" --catalogue "$WORK/catalogue.json" \
        --route "$route" --library "$lib" --mode "$mode" --label "$label" ||
        sed 's/^/    /' "$out.err" | head -n 5
}

for lib in "${LIBS[@]}"; do
    for mode in "${MODES[@]}"; do
        if ! start_verifier "$lib" "$mode"; then
            echo "FAIL - probe: the $lib verifier ($mode) starts"
            sed 's/^/    /' "$WORK/$lib-$mode.log" | head -n 20
            continue
        fi
        if [[ $lib == pyjwt && $mode == hs256-public-key ]]; then
            echo "# PyJWT refuses a PEM public key as an HMAC secret (InvalidKeyError), so its" \
                "hs256-public-key misconfiguration cannot be made: every defect must still be refused"
        fi
        for alg in "${ALGS[@]}"; do
            probe_and_check "$lib" "$mode" /auth "$lib $mode, /auth tokens, --alg $alg" --alg "$alg"
        done
        kill "$VERIFIER_PID" 2>/dev/null
    done
    # RFC 9068 access tokens: the correct verifier also checks typ (wrong-typ).
    if start_verifier "$lib" correct access-tokens; then
        for alg in "${ALGS[@]}"; do
            probe_and_check "$lib" correct /oauth2/token "$lib correct, access tokens, --alg $alg" \
                --token-endpoint --alg "$alg"
        done
        kill "$VERIFIER_PID" 2>/dev/null
    else
        echo "FAIL - probe: the $lib verifier (correct, access tokens) starts"
    fi
done

# ---- the tables the closing note pastes ----------------------------------------------
for shown in "pyjwt correct" "golang-jwt no-signature-check"; do
    read -r lib mode <<<"$shown"
    [[ " ${LIBS[*]} " == *" $lib "* ]] || continue
    if start_verifier "$lib" "$mode"; then
        echo "# jwks-server probe $VERIFIER_URL --server $BASE --audience $AUDIENCE  ($lib, $mode):"
        timeout 120 "$BIN" probe "$VERIFIER_URL" --server "$BASE" --audience "$AUDIENCE" 2>&1 | sed 's/^/#   /'
        echo "#   (exit status ${PIPESTATUS[0]})"
        kill "$VERIFIER_PID" 2>/dev/null
    fi
done

if grep -q '"level":"ERROR"' "$WORK/server.log"; then
    echo "FAIL - probe: the server logged no ERROR"
    grep '"level":"ERROR"' "$WORK/server.log" | sed 's/^/    /' | head -n 20
else
    echo "ok - probe: the server logged no ERROR"
fi
