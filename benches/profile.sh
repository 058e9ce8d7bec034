#!/usr/bin/env bash
# Where a token request's instructions go, counted by callgrind (repeatable on a
# noisy machine, unlike time): the release server runs under valgrind, a warm-up
# is discarded, then N seconds of load are counted and split into layers, per
# request:
#
#   signature   aws-lc's signing (digest and private-key operation)
#   token       our compact JWS around it: header, claims JSON, base64, jti
#   service     KeyService::issue_token around the token (checks, key choice)
#   door        the handler / RPC: reading the request, writing the answer
#   layers      our middleware and routing (observe, timeouts, limits, router)
#   protocol    HTTP/1.1 or HTTP/2 (hyper, h2, tonic framing), tokio, the rest
#
#   benches/profile.sh                  # REST and gRPC, ES256 and EdDSA
#   SCENARIOS="rest:ES256 grpc:RS256" SECONDS_COUNTED=10 benches/profile.sh
#
# Instructions are not time: the kernel's share (sendto, recvfrom, epoll) is
# not counted at all, and valgrind's CPU lacks some instructions the crypto
# uses on real hardware (ADX), so the signature's share is larger here than
# on the machine. benches/load.sh measures the time; this says where it goes.
# The server runs on one core (taskset -c 0), as in benches/load.sh.
# Needs valgrind (apt-get install valgrind), wrk, curl; builds the release
# server and the gRPC load generator (benches/grpc_load.rs).
set -euo pipefail
export LC_ALL=C

SCENARIOS=${SCENARIOS:-"rest:ES256 grpc:ES256 rest:EdDSA grpc:EdDSA"}
SECONDS_COUNTED=${SECONDS_COUNTED:-10}
HTTP_PORT=${HTTP_PORT:-18180}
GRPC_PORT=${GRPC_PORT:-18151}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

die() { echo "profile.sh: $*" >&2; exit 1; }
for tool in valgrind callgrind_annotate callgrind_control wrk curl; do
    command -v "$tool" >/dev/null || die "$tool is needed"
done
(cd "$ROOT" && cargo build --release --quiet --bin jwks-server)
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/jwks-server"
GEN=$(cd "$ROOT" && cargo build --release --quiet --bench grpc_load --message-format=json |
    sed -n 's/.*"executable":"\([^"]*grpc_load[^"]*\)".*/\1/p' | tail -n 1)
[ -x "$GEN" ] || die "could not build benches/grpc_load.rs"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/jwks-profile.XXXXXX")
PID=""
cleanup() {
    [ -z "$PID" ] || { kill -INT "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; }
    rm -rf "$WORK"
}
trap cleanup EXIT

# load DOOR ALG SECONDS: drives the server; prints the requests answered.
load() {
    local door=$1 alg=$2 secs=$3
    if [ "$door" = rest ]; then
        printf 'wrk.method = "POST"\n' >"$WORK/post.lua"
        wrk -t1 -c4 -d"${secs}s" -s "$WORK/post.lua" "http://127.0.0.1:$HTTP_PORT/auth?alg=$alg" |
            awk '/requests in/ {print $1}'
    else
        "$GEN" --addr "127.0.0.1:$GRPC_PORT" --rpc issue --alg "$alg" --connections 4 \
            --concurrency 4 --client h2 --duration "$secs" | sed -n 's/^RESULT .*ok=\([0-9]*\).*/\1/p'
    fi
}

# max_incl FILE REGEX: the largest inclusive count of a function matching REGEX.
max_incl() {
    awk -v re="$2" '$0 ~ re { gsub(",", "", $1); if ($1 + 0 > m) m = $1 + 0 } END { print m + 0 }' "$1"
}

printf "%-12s %9s %9s %9s %9s %9s %9s %9s\n" scenario total signature token service door layers protocol
for scenario in $SCENARIOS; do
    door=${scenario%%:*} alg=${scenario#*:}
    out="$WORK/callgrind.$door.$alg"
    # On one core, as benches/load.sh runs it: the runtime then has one worker
    # thread, which changes how HTTP/2 streams are run (see StreamExecutor).
    RUST_LOG=warn taskset -c 0 valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$out" \
        "$BIN" --store "sqlite://$WORK/keys.db" --algorithms "$alg" \
        --http-addr "127.0.0.1:$HTTP_PORT" --grpc-addr "127.0.0.1:$GRPC_PORT" >"$WORK/server.log" 2>&1 &
    PID=$!
    for _ in $(seq 120); do curl -sf "http://127.0.0.1:$HTTP_PORT/health" >/dev/null && break; sleep 1; done
    callgrind_control -i on "$PID" >/dev/null 2>&1
    load "$door" "$alg" 3 >/dev/null
    callgrind_control -z "$PID" >/dev/null 2>&1
    n=$(load "$door" "$alg" "$SECONDS_COUNTED")
    callgrind_control -d "$PID" >/dev/null 2>&1
    kill -INT "$PID"; wait "$PID" 2>/dev/null || true; PID=""
    [ "${n:-0}" -gt 0 ] || die "$scenario: no requests answered"
    annotated="$WORK/annotated"
    callgrind_annotate --inclusive=yes --threshold=100 "$out.1" >"$annotated" 2>/dev/null
    total=$(awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1 }' "$annotated")
    signature=$(max_incl "$annotated" 'aws_lc_[0-9_]*_(EVP_DigestSign|ED25519_sign|RSA_sign)( |$)')
    token=$(max_incl "$annotated" 'SigningKey::sign_with_header')
    service=$(max_incl "$annotated" 'impl jwks_server::service::KeyService>::issue_token::[{][{]closure[}][}]( |$)')
    if [ "$door" = rest ]; then
        handler=$(max_incl "$annotated" '<F as axum::handler::Handler<[^ ]*>>::call::[{][{]closure[}][}]( |$)')
    else
        handler=$(max_incl "$annotated" 'KeyServiceServer<T> as tower_service::Service<[^ ]*>>::call::[{][{]closure[}][}]( |$)')
    fi
    layers=$(max_incl "$annotated" 'connections::Tracked<S> as tower_service::Service<R>>::call::[{][{]closure[}][}]( |$)')
    awk -v n="$n" -v t="$total" -v s="$signature" -v k="$token" -v v="$service" -v h="$handler" \
        -v l="$layers" -v name="$door $alg" 'BEGIN {
        printf "%-12s %9.0f %9.0f %9.0f %9.0f %9.0f %9.0f %9.0f\n", name, t / n, s / n, (k - s) / n,
            (v - k) / n, (h - v) / n, (l - h) / n, (t - l) / n
    }'
done
echo "(instructions per request, counted by callgrind; see the header for what each column holds)"
