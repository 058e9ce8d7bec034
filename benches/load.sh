#!/usr/bin/env bash
# Load-tests jwks-server on this machine and sets it against the machine's own
# limits: for token issuance, the combined limit of one signature and serving a
# small response, 1 / (1/sign_rate + 1/nginx_rate), with openssl's one-core sign
# rate of each algorithm (rsa2048, rsa3072, rsa4096, ecdsap256, ed25519) and
# nginx (one worker) serving the same JWKS bytes as a static file, both
# measured in the same run; nginx is also the limit for the JWKS.
#
#   benches/load.sh                          # 10 s runs, median of 3 (~20 min)
#   DURATION=2 REPEATS=1 benches/load.sh     # quick look (a few minutes after the build)
#
# The server runs pinned to one core (SERVER_CPU) and the load generator to the
# other (LOAD_CPU): wrk for REST, benches/grpc_load.rs for gRPC (it counts
# non-OK gRPC statuses, which h2load would take for successes). Each scenario
# gets a fresh server process on the same store, so its peak RSS (VmHWM) is its
# own. The table reports, per scenario, the median run by requests/s, its p50
# and p99 latency, the errors of all runs, and where the CPU went: the server,
# the load generator and everything else on the machine (others compiling on a
# shared machine show up there and make the numbers low).
#
# Settings, from the environment:
#   DURATION=10 REPEATS=3 CONNECTIONS=64   seconds per run, runs per scenario, connections
#   SERVER_CPU=0 LOAD_CPU=1                cores for the server (and nginx, openssl) and the load
#   HTTP_PORT=18080 GRPC_PORT=18051 NGINX_PORT=18088   loopback ports (must be free)
#   LOGGED=1     also run POST /auth and GET JWKS with the default (info) request logs
#   TWO_CORE=1   also run token issuance with the server on both cores
#   WRK_STRICT=1 make wrk check the status of every answer (0 spares wrk the parsing)
#   GRPC_CLIENT=h2  grpc_load's client: h2 (light on CPU) or tonic (the generated client)
#   FAIL_ON_TARGETS=0  1: exit 1 when a target of issue #7 is missed
#   KEEP_WORK=0  1: keep the temporary directory (logs, configs, raw outputs)
#   BUSY_LIMIT=10 BUSY_RETRIES=2 IDLE_WAIT=60 WAIT_BUDGET=900   for a shared machine:
#                before each run wait up to IDLE_WAIT s for the machine to use less
#                than BUSY_LIMIT % of one core, and repeat a run during which
#                other processes used more, up to BUSY_RETRIES times; all of that
#                waiting and repeating stops after WAIT_BUDGET s in total
#   ONLY=""      run only these scenarios (names as in the runs' progress lines,
#                plus openssl and nginx), e.g. ONLY="openssl rest_auth grpc_issue"
#   ALGORITHMS=RS256,PS256,ES256,EdDSA   the server's --algorithms; each gets
#                rest_auth_ALG and grpc_issue_ALG (lower case; RS256 is rest_auth
#                and grpc_issue), and RS256 with 3072- and 4096-bit keys
#                rest_auth_rs3072, grpc_issue_rs3072, rest_auth_rs4096, grpc_issue_rs4096
#   OPENSSL_SECONDS=5   seconds of `openssl speed` per algorithm
#   OAuth (issue #12): rest_oauth_token (POST /oauth2/token, client_secret_basic
#                with a secret the server has proven once, so it answers from its
#                cache; the server runs with a --clients-file) and rest_introspect
#                (POST /oauth2/introspect of a live RS256 access token), set
#                against POST /auth and openssl's rsa2048 verify rate
#   PKCS#11 (issue #15): rest_auth_hsm (POST /auth with the RS256 key held in a
#                SoftHSM2 token of its own: one C_Sign per token); needs softhsm2,
#                skipped with a note without it (an error when ONLY names it)
#   PROFILE=release     dev: reuse the debug build, to check the script quickly
#                (its numbers mean nothing)
#   AWAKE=1      hold /dev/cpu_dma_latency at 0 for the whole run (as tuned's
#                latency-performance profile does), so no core halts between
#                requests. On a VM a halted core takes a VM exit to wake: a
#                load generator that sleeps while waiting for a slow server
#                charges that wake-up to the server's sendto (perf: 25% of the
#                server's CPU for ES256 on this VM, ~12 us a request), which
#                nginx, fast enough to keep wrk busy, never pays. 0: leave the
#                cores as they are (the table says which); needs root otherwise
#
# Needs: cargo, wrk, nginx, openssl, curl, taskset (util-linux), pgrep (procps),
# ss (iproute2); the missing ones but cargo are installed with apt-get. Everything listens on
# 127.0.0.1 only, every run is bounded in time, and every process started here
# is stopped on exit.

set -euo pipefail
export LC_ALL=C # awk, sort and $EPOCHREALTIME read numbers with a dot

DURATION=${DURATION:-10}
REPEATS=${REPEATS:-3}
CONNECTIONS=${CONNECTIONS:-64}
SERVER_CPU=${SERVER_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
HTTP_PORT=${HTTP_PORT:-18080}
GRPC_PORT=${GRPC_PORT:-18051}
NGINX_PORT=${NGINX_PORT:-18088}
LOGGED=${LOGGED:-1}
TWO_CORE=${TWO_CORE:-1}
WRK_STRICT=${WRK_STRICT:-1}
GRPC_CLIENT=${GRPC_CLIENT:-h2}
FAIL_ON_TARGETS=${FAIL_ON_TARGETS:-0}
KEEP_WORK=${KEEP_WORK:-0}
ONLY=${ONLY:-}
BUSY_LIMIT=${BUSY_LIMIT:-10}
BUSY_RETRIES=${BUSY_RETRIES:-2}
IDLE_WAIT=${IDLE_WAIT:-60}
WAIT_BUDGET=${WAIT_BUDGET:-900}
ALGORITHMS=${ALGORITHMS:-RS256,PS256,ES256,EdDSA}
OPENSSL_SECONDS=${OPENSSL_SECONDS:-5}
PROFILE=${PROFILE:-release}
AWAKE=${AWAKE:-1}
export WRK_STRICT

# The targets of issues #7, #12 and #13.
ISSUE_VS_OPENSSL=0.90 # token issuance (REST and gRPC) against the combined limit of its algorithm
JWKS_VS_NGINX=1.0     # REST JWKS against nginx's static file
GRPC_VS_REST=0.8      # gRPC GetJwks against REST JWKS
TAIL_FACTOR=4         # p99 below this many times p50
RSS_LIMIT_MB=25       # peak RSS
TWO_CORE_GAIN=1.7     # issuance on two cores against one
OAUTH_TOKEN_VS_AUTH=0.9   # POST /oauth2/token (proven secret) against POST /auth
INTROSPECT_VS_VERIFY=0.5  # POST /oauth2/introspect against openssl's rsa2048 verify rate

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
LUA="$ROOT/benches/wrk/request.lua"
HOST=127.0.0.1

die() {
    echo "load.sh: $*" >&2
    exit 1
}
say() { echo "== $*" >&2; }

case "$DURATION$REPEATS$CONNECTIONS$BUSY_LIMIT$BUSY_RETRIES$IDLE_WAIT$WAIT_BUDGET$OPENSSL_SECONDS" in
*[!0-9]*) die "DURATION, REPEATS, CONNECTIONS and the BUSY/WAIT settings must be whole numbers" ;;
esac
[ "$DURATION" -ge 1 ] && [ "$DURATION" -le 600 ] || die "DURATION must be 1..600 seconds"
[ "$REPEATS" -ge 1 ] && [ "$REPEATS" -le 20 ] || die "REPEATS must be 1..20"
[ "$CONNECTIONS" -ge 1 ] && [ "$CONNECTIONS" -le 10000 ] || die "CONNECTIONS must be 1..10000"

# --- tools --------------------------------------------------------------------

ensure_tools() {
    local missing=() tool package
    for tool in wrk:wrk nginx:nginx openssl:openssl curl:curl taskset:util-linux pgrep:procps \
        ss:iproute2; do
        package=${tool#*:}
        tool=${tool%%:*}
        command -v "$tool" >/dev/null 2>&1 || [ -x "/usr/sbin/$tool" ] || missing+=("$package")
    done
    command -v cargo >/dev/null 2>&1 || die "cargo is needed (https://rustup.rs)"
    [ ${#missing[@]} -eq 0 ] && return
    say "installing ${missing[*]} with apt-get"
    local sudo=()
    [ "$(id -u)" -eq 0 ] || sudo=(sudo)
    "${sudo[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# Whether scenario $1 is to run (ONLY unset, or naming it).
want() {
    [ -z "$ONLY" ] && return 0
    case " $ONLY " in
    *" $1 "*) return 0 ;;
    esac
    return 1
}

port_free() {
    [ -z "$(ss -Hltn "( sport = :$1 )" 2>/dev/null)" ]
}

# --- processes ----------------------------------------------------------------

WORK=""
SERVER_PID=""
NGINX_PID=""
AWAKE_PID=""

cleanup() {
    stop_server
    stop_nginx
    [ -z "$AWAKE_PID" ] || stop_pid "$AWAKE_PID" TERM
    if [ -n "$WORK" ]; then
        if [ "$KEEP_WORK" = 1 ]; then
            echo "load.sh: kept $WORK" >&2
        else
            rm -rf "$WORK"
        fi
    fi
}

# Stops one process we started: SIGTERM (or SIGQUIT for nginx), then SIGKILL
# after 10 s.
stop_pid() {
    local pid=$1 signal=$2
    kill -0 "$pid" 2>/dev/null || return 0
    kill "-$signal" "$pid" 2>/dev/null || true
    for _ in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

# Extra server flags for the next scenarios (e.g. --clients-file), and the
# name of their store in $WORK when it is not the shared jwks.db.
SERVER_ARGS=()
STORE_NAME=""

# start_server CPUS LOGS [RSA_BITS]: LOGS is "quiet" (RUST_LOG=warn) or "info"
# (the default). The server runs $ALGORITHMS; with RSA_BITS, RS256 alone with
# keys of that size, on a store of its own.
start_server() {
    local cpus=$1 logs=$2 bits=${3:-} env=(RUST_LOG=warn)
    local keys=(--algorithms "$ALGORITHMS") store="$WORK/${STORE_NAME:-jwks}.db"
    [ "$logs" = info ] && env=(RUST_LOG=info)
    if [ -n "$bits" ]; then
        keys=(--algorithms RS256 --rsa-key-bits "$bits")
        store="$WORK/jwks-rs$bits.db"
    fi
    env "${env[@]}" taskset -c "$cpus" "$BIN" \
        --http-addr "$HOST:$HTTP_PORT" --grpc-addr "$HOST:$GRPC_PORT" \
        --store "sqlite://$store" --drain-timeout 2s "${keys[@]}" "${SERVER_ARGS[@]}" \
        >"$WORK/server.log" 2>&1 &
    SERVER_PID=$!
    for _ in $(seq 300); do
        if curl -sf -o /dev/null "http://$HOST:$HTTP_PORT/health"; then
            return 0
        fi
        kill -0 "$SERVER_PID" 2>/dev/null || {
            cat "$WORK/server.log" >&2
            die "the server exited during start-up"
        }
        sleep 0.1
    done
    die "the server was not healthy within 30 s"
}

stop_server() {
    [ -n "$SERVER_PID" ] && stop_pid "$SERVER_PID" TERM
    SERVER_PID=""
}

stop_nginx() {
    [ -n "$NGINX_PID" ] && stop_pid "$NGINX_PID" QUIT
    NGINX_PID=""
}

# Peak resident set of a process, in kB.
peak_rss_kb() {
    awk '/^VmHWM:/ { print $2 }' "/proc/$1/status"
}

# CPU time a process has used so far, in clock ticks.
cpu_ticks() {
    awk '{ print $14 + $15 }' "/proc/$1/stat"
}

# Busy and total clock ticks of the whole machine so far.
machine_ticks() {
    awk '/^cpu / { busy = $2 + $3 + $4 + $7 + $8 + $9; print busy, busy + $5 + $6; exit }' /proc/stat
}

# CPU the whole machine uses over one second, in % of one core.
machine_busy() {
    local m0 m1
    m0=$(machine_ticks)
    sleep 1
    m1=$(machine_ticks)
    awk -v a="$m0" -v b="$m1" -v hz="$HZ" 'BEGIN { split(a, x, " "); split(b, y, " ");
        printf "%.0f", (y[1] - x[1]) * 100 / hz }'
}

# Waits, within IDLE_WAIT and what is left of WAIT_BUDGET, for the machine to
# go quiet (others compiling on a shared machine steal the server's core).
WAITED=0
wait_idle() {
    local started=$SECONDS busy
    while [ $((SECONDS - started)) -lt "$IDLE_WAIT" ] && [ "$WAITED" -lt "$WAIT_BUDGET" ]; do
        busy=$(machine_busy)
        if [ "$busy" -le "$BUSY_LIMIT" ]; then
            break
        fi
        [ $((SECONDS - started)) -le 1 ] && say "waiting for the machine to go quiet (busy: $busy% of one core)"
        WAITED=$((WAITED + 1))
    done
}

# --- one run ------------------------------------------------------------------

# measure PID NAME CMD...: runs CMD (the load generator) against process PID and
# appends "rps p50_us p99_us errors pid_cpu% gen_cpu% other_cpu%" to
# $WORK/NAME.runs, CPU in percent of one core. Needs parse_output to read CMD's
# output from $WORK/NAME.out.
measure() {
    local pid=$1 name=$2
    shift 2
    local out="$WORK/$name.out" before after m0 m1 t0 t1 gen
    before=$(cpu_ticks "$pid")
    m0=$(machine_ticks)
    t0=$EPOCHREALTIME
    # bash's `time` gives the generator's own CPU time (user + system).
    gen=$({ TIMEFORMAT='%U %S'; time "$@" >"$out" 2>"$WORK/$name.err"; } 2>&1) ||
        {
            cat "$out" "$WORK/$name.err" >&2
            die "$name: the load generator failed"
        }
    t1=$EPOCHREALTIME
    m1=$(machine_ticks)
    after=$(cpu_ticks "$pid")
    local result
    result=$(parse_output "$out")
    awk -v r="$result" -v b="$before" -v a="$after" -v m0="$m0" -v m1="$m1" \
        -v gen="$gen" -v hz="$HZ" -v t0="$t0" -v t1="$t1" '
        BEGIN {
            split(m0, x, " "); split(m1, y, " "); split(gen, g, " ")
            busy = y[1] - x[1]
            wall = t1 - t0                             # seconds
            if (wall <= 0) wall = 1
            srv = (a - b) / hz / wall * 100
            gcpu = (g[1] + g[2]) / wall * 100
            other = busy / hz / wall * 100 - srv - gcpu
            if (other < 0) other = 0
            printf "%s %.0f %.0f %.0f\n", r, srv, gcpu, other
        }' >>"$WORK/$name.runs"
}

# Reads wrk's or grpc_load's output: "rps p50_us p99_us errors".
parse_output() {
    awk '
        function us(v) {
            if (v ~ /us$/) return v + 0
            if (v ~ /ms$/) return v * 1000
            if (v ~ /m$/)  return v * 60000000
            if (v ~ /s$/)  return v * 1000000
            return v + 0
        }
        /^RESULT / {                                   # grpc_load
            for (i = 2; i <= NF; i++) { split($i, kv, "="); f[kv[1]] = kv[2] }
            rps = f["rps"]; p50 = f["p50_us"]; p99 = f["p99_us"]; err = f["errors"]; seen = 1
        }
        /^Requests\/sec:/ { rps = $2; seen = 1 }      # wrk
        $1 == "50%" { p50 = us($2) }
        $1 == "99%" { p99 = us($2) }
        /Socket errors:/ { gsub(",", ""); err += $4 + $6 + $8 + $10 }
        /Non-2xx or 3xx responses:/ { nonok = $5 }
        /^Unexpected status:/ { unexpected = $3 }
        END {
            if (!seen) { print "0 0 0 1"; exit }
            # A status >= 400 is both "Non-2xx" and unexpected: count it once.
            err += (unexpected > nonok ? unexpected : nonok)
            printf "%s %.0f %.0f %d\n", rps, p50, p99, err
        }' "$1"
}

wrk_run() { # wrk_run NAME CPUS URL [VAR=VALUE...]: one wrk run of $DURATION s
    local name=$1 cpus=$2 url=$3
    shift 3
    measure "$TARGET_PID" "$name" env "$@" taskset -c "$cpus" \
        wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" --timeout 2s --latency -s "$LUA" "$url"
}

grpc_run() { # grpc_run NAME CPUS RPC [ALG]: one grpc_load run of $DURATION s
    local name=$1 cpus=$2 rpc=$3 alg=()
    [ -n "${4:-}" ] && alg=(--alg "$4")
    measure "$TARGET_PID" "$name" taskset -c "$cpus" "$GEN" --addr "$HOST:$GRPC_PORT" \
        --rpc "$rpc" --client "$GRPC_CLIENT" --connections "$CONNECTIONS" --concurrency "$CONNECTIONS" \
        --duration "$DURATION" --threads 1 "${alg[@]}"
}

# --- scenarios ----------------------------------------------------------------

declare -A LABEL RPS P50 P99 ERRS RSS SCPU GCPU OCPU
ORDER=()

# Summarises $WORK/NAME.runs: the median run by requests/s, errors of all runs.
summarise() {
    local name=$1 label=$2 rss_kb=$3 line
    line=$(sort -n -k1,1 "$WORK/$name.runs" | awk -v n="$REPEATS" '
        { errs += $4; row[NR] = $0 }
        END { split(row[int(NR / 2) + 1], m, " "); print m[1], m[2], m[3], errs, m[5], m[6], m[7] }')
    read -r RPS[$name] P50[$name] P99[$name] ERRS[$name] SCPU[$name] GCPU[$name] OCPU[$name] <<<"$line"
    LABEL[$name]=$label
    RSS[$name]=$rss_kb
    ORDER+=("$name")
}

show_run() { # show_run NAME I [NOTE]
    tail -n1 "$WORK/$1.runs" | awk -v name="$1" -v i="$2" -v n="$REPEATS" -v note="${3:-}" '{
        printf "   %-16s run %d/%d: %9.1f req/s  p50 %7.2f ms  p99 %7.2f ms  errors %d  cpu: server %d%% load %d%% others %d%%%s\n",
            name, i, n, $1, $2 / 1000, $3 / 1000, $4, $5, $6, $7, note }' >&2
}

# repeat_runs NAME CMD...: REPEATS runs of CMD, which appends one line to
# $WORK/NAME.runs; a run during which other processes used more than
# BUSY_LIMIT % of a core is done again (up to BUSY_RETRIES times, within
# WAIT_BUDGET).
repeat_runs() {
    local name=$1 i try others started
    shift
    for i in $(seq "$REPEATS"); do
        for try in $(seq 0 "$BUSY_RETRIES"); do
            wait_idle
            started=$SECONDS
            "$@"
            others=$(tail -n1 "$WORK/$name.runs" | awk '{ print $7 }')
            if [ "$others" -le "$BUSY_LIMIT" ] || [ "$try" -eq "$BUSY_RETRIES" ] ||
                [ "$WAITED" -ge "$WAIT_BUDGET" ]; then
                break
            fi
            show_run "$name" "$i" " (busy machine: again)"
            sed -i '$d' "$WORK/$name.runs"
            WAITED=$((WAITED + SECONDS - started))
        done
        show_run "$name" "$i"
    done
}

# scenario NAME LABEL SERVER_CPUS LOAD_CPUS LOGS KIND ARGS...
#   KIND rest: ARGS = PATH EXPECTED_STATUS [VAR=VALUE...] for the Lua script
#   KIND grpc: ARGS = RPC [ALG] (see grpc_load --help)
# RSA_BITS set: the server signs RS256 with keys of that size (see start_server).
# PREPARE set: a function run once the server is up, which may put more
# VAR=VALUE pairs for the Lua script in PREPARED (a token to introspect).
RSA_BITS=""
PREPARE=""
PREPARED=()
scenario() {
    local name=$1 label=$2 server_cpus=$3 load_cpus=$4 logs=$5 kind=$6
    shift 6
    want "$name" || return 0
    say "$label (server on cpu $server_cpus, load on cpu $load_cpus, $logs logs)"
    start_server "$server_cpus" "$logs" "$RSA_BITS"
    TARGET_PID=$SERVER_PID
    PREPARED=()
    [ -n "$PREPARE" ] && "$PREPARE"
    set -- "$@" "${PREPARED[@]}"
    if [ "$kind" = rest ]; then
        local path=$1 expect=$2
        shift 2
        preflight "http://$HOST:$HTTP_PORT$path" "$expect" "$@"
    fi
    if [ "$kind" = rest ]; then
        repeat_runs "$name" wrk_run "$name" "$load_cpus" "http://$HOST:$HTTP_PORT$path" \
            WRK_EXPECT="$expect" "$@"
    else
        repeat_runs "$name" grpc_run "$name" "$load_cpus" "$1" "${2:-}"
    fi
    local rss
    rss=$(peak_rss_kb "$SERVER_PID")
    stop_server
    summarise "$name" "$label" "$rss"
}

# Sends the scenario's request once with curl and checks its status, so a
# route that answers wrongly fails loudly before any load.
preflight() {
    local url=$1 expect=$2 method=GET inm="" body="" type="" auth="" var status
    shift 2
    for var in "$@"; do
        case $var in
        WRK_METHOD=*) method=${var#*=} ;;
        WRK_IF_NONE_MATCH=*) inm=${var#*=} ;;
        WRK_BODY=*) body=${var#*=} ;;
        WRK_CONTENT_TYPE=*) type=${var#*=} ;;
        WRK_AUTHORIZATION=*) auth=${var#*=} ;;
        esac
    done
    local args=(-s -o "$WORK/preflight.out" -w '%{http_code}' -X "$method")
    [ -n "$inm" ] && args+=(-H "If-None-Match: $inm")
    [ -n "$body" ] && args+=(--data-raw "$body")
    [ -n "$type" ] && args+=(-H "Content-Type: $type")
    [ -n "$auth" ] && args+=(-H "Authorization: $auth")
    status=$(curl "${args[@]}" "$url")
    [ "$status" = "$expect" ] || die "$method $url answered $status, expected $expect: $(head -c 300 "$WORK/preflight.out")"
}

nginx_scenario() {
    local name=nginx label="nginx static JWKS" root="$WORK/nginx"
    want nginx || return 0
    say "$label (1 worker on cpu $SERVER_CPU, load on cpu $LOAD_CPU)"
    mkdir -p "$root/www/.well-known" "$root/tmp"
    cp "$WORK/jwks.json" "$root/www/.well-known/jwks.json"
    # As root, nginx would hand its worker to `nobody`, who cannot read $WORK.
    local user=""
    [ "$(id -u)" -eq 0 ] && user="user $(id -un) $(id -gn);"
    cat >"$root/nginx.conf" <<EOF
$user
daemon off;
master_process on;
worker_processes 1;
pid $root/nginx.pid;
error_log $root/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    default_type application/json;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_requests 10000000;
    keepalive_timeout 75s;
    open_file_cache max=16 inactive=60s;
    client_body_temp_path $root/tmp/body;
    proxy_temp_path $root/tmp/proxy;
    fastcgi_temp_path $root/tmp/fastcgi;
    uwsgi_temp_path $root/tmp/uwsgi;
    scgi_temp_path $root/tmp/scgi;
    server {
        listen $HOST:$NGINX_PORT;
        root $root/www;
    }
}
EOF
    taskset -c "$SERVER_CPU" "$NGINX" -p "$root/" -c "$root/nginx.conf" -e "$root/error.log" \
        >"$root/stdout.log" 2>&1 &
    NGINX_PID=$!
    local url="http://$HOST:$NGINX_PORT/.well-known/jwks.json" worker="" i
    for _ in $(seq 100); do
        curl -sf -o "$root/check.json" "$url" && break
        kill -0 "$NGINX_PID" 2>/dev/null || {
            cat "$root/stdout.log" "$root/error.log" >&2
            die "nginx exited during start-up"
        }
        sleep 0.1
    done
    cmp -s "$root/check.json" "$WORK/jwks.json" || die "nginx does not serve the JWKS bytes"
    worker=$(pgrep -P "$NGINX_PID" | head -n1)
    [ -n "$worker" ] || die "nginx has no worker process"
    TARGET_PID=$worker
    repeat_runs "$name" wrk_run "$name" "$LOAD_CPU" "$url" WRK_EXPECT=200
    local rss
    rss=$(peak_rss_kb "$worker")
    stop_nginx
    summarise "$name" "$label" "$rss"
}

# openssl_rates NAME: one core's "sign/s verify/s" for NAME (rsa2048, rsa3072,
# rsa4096, ecdsap256, ed25519): the last two columns of each result line
# (OpenSSL 3.0).
openssl_rates() {
    local name=$1 pattern
    case $name in
    rsa*) pattern="^rsa ${name#rsa} bits" ;;
    ecdsap256) pattern="ecdsa .nistp256." ;;
    ed25519) pattern="EdDSA .Ed25519." ;;
    *) die "no openssl pattern for $name" ;;
    esac
    say "openssl speed -seconds $OPENSSL_SECONDS $name (cpu $SERVER_CPU)"
    wait_idle
    taskset -c "$SERVER_CPU" openssl speed -seconds "$OPENSSL_SECONDS" "$name" 2>/dev/null |
        awk -v p="$pattern" '$0 ~ p { print $(NF - 1), $NF }'
}

# limit SIGN_RATE NGINX_RATE: the combined limit 1 / (1/sign + 1/nginx), or
# the sign rate alone without nginx's, or nothing without either.
limit() {
    awk -v s="${1:-}" -v n="${2:-}" 'BEGIN {
        if (s == "" || s <= 0) exit
        if (n == "" || n <= 0) { printf "%.0f", s; exit }
        printf "%.0f", 1 / (1 / s + 1 / n) }'
}

# --- the run ------------------------------------------------------------------

ensure_tools
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
HZ=$(getconf CLK_TCK)
[ "$(nproc)" -ge 2 ] || die "needs two cores (server and load generator on one each)"
for port in "$HTTP_PORT" "$GRPC_PORT" "$NGINX_PORT"; do
    port_free "$port" || die "port $port is in use; set HTTP_PORT, GRPC_PORT or NGINX_PORT"
done

case $PROFILE in
release) profile_args=(--release) profile_dir=release ;;
dev) profile_args=() profile_dir=debug ;;
*) die "PROFILE must be release or dev" ;;
esac
say "building ($PROFILE)"
(cd "$ROOT" && cargo build "${profile_args[@]}" --quiet --bin jwks-server)
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
BIN="$TARGET_DIR/$profile_dir/jwks-server"
# The load generator is a bench target (benches/grpc_load.rs): cargo gives its
# binary a hashed name under deps/, and tells where in its JSON messages.
GEN=$(cd "$ROOT" && cargo build "${profile_args[@]}" --quiet --bench grpc_load --message-format=json |
    sed -n 's/.*"executable":"\([^"]*grpc_load[^"]*\)".*/\1/p' | tail -n 1)
[ -n "$GEN" ] && [ -x "$GEN" ] || die "could not build the load generator (benches/grpc_load.rs)"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/jwks-load.XXXXXX")
trap cleanup EXIT
trap 'exit 130' INT TERM

# Cores that never halt (AWAKE=1): the PM QoS request lasts while the file is
# held open, so a sleeping holder keeps it until cleanup stops it.
CORES="as the machine leaves them"
if [ "$AWAKE" = 1 ]; then
    if [ -w /dev/cpu_dma_latency ]; then
        perl -e 'open(my $f, ">", "/dev/cpu_dma_latency") or die; syswrite($f, pack("l", 0)) or die; sleep' &
        AWAKE_PID=$!
        CORES="awake (/dev/cpu_dma_latency held at 0)"
    else
        say "AWAKE=1 needs /dev/cpu_dma_latency writable (root); cores left as they are"
    fi
fi
say "cores: $CORES"

# The machine should be idle: anything else running steals from the server.
say "machine busy before the runs: $(machine_busy)% of one core ($(nproc) cores)"

# A first start creates the keys; later starts load them from the same store.
start_server "$SERVER_CPU" quiet
curl -sf -o "$WORK/jwks.json" "http://$HOST:$HTTP_PORT/.well-known/jwks.json"
ETAG=$(curl -sfI "http://$HOST:$HTTP_PORT/.well-known/jwks.json" |
    awk 'tolower($1) == "etag:" { sub(/\r$/, ""); print $2 }')
[ -n "$ETAG" ] || die "the JWKS response has no ETag"
stop_server

# One core's sign rate of each algorithm's key type, in the same run.
declare -A SIGNS VERIFIES
if want openssl; then
    for kind in rsa2048 rsa3072 rsa4096 ecdsap256 ed25519; do
        read -r SIGNS[$kind] VERIFIES[$kind] <<<"$(openssl_rates "$kind")"
        [ -n "${SIGNS[$kind]}" ] && [ -n "${VERIFIES[$kind]}" ] ||
            die "could not read openssl's $kind sign and verify rates"
    done
fi
OPENSSL_SIGNS=${SIGNS[rsa2048]:-}
# The openssl measure of each algorithm's keys.
declare -A SIGN_KIND=([RS256]=rsa2048 [PS256]=rsa2048 [ES256]=ecdsap256 [EdDSA]=ed25519)
IFS=, read -r -a ALG_LIST <<<"$ALGORITHMS"
for alg in "${ALG_LIST[@]}"; do
    [ -n "${SIGN_KIND[$alg]:-}" ] || die "ALGORITHMS: unknown algorithm $alg"
done

one=$SERVER_CPU
load=$LOAD_CPU
scenario rest_auth "POST /auth" "$one" "$load" quiet rest /auth 200 WRK_METHOD=POST
scenario rest_auth_expired "POST /auth?expired=true" "$one" "$load" quiet rest '/auth?expired=true' 200 WRK_METHOD=POST
scenario rest_jwks "GET jwks.json" "$one" "$load" quiet rest /.well-known/jwks.json 200
scenario rest_jwks_inm "GET jwks.json If-None-Match" "$one" "$load" quiet rest /.well-known/jwks.json 304 WRK_IF_NONE_MATCH="$ETAG"
scenario grpc_issue "gRPC IssueToken" "$one" "$load" quiet grpc issue
scenario grpc_jwks "gRPC GetJwks" "$one" "$load" quiet grpc jwks
# Token issuance per algorithm (RS256, the server's first, is rest_auth above).
for alg in "${ALG_LIST[@]}"; do
    [ "$alg" = RS256 ] && continue
    lower=$(echo "$alg" | tr '[:upper:]' '[:lower:]')
    scenario "rest_auth_$lower" "POST /auth?alg=$alg" "$one" "$load" quiet rest "/auth?alg=$alg" 200 WRK_METHOD=POST
    scenario "grpc_issue_$lower" "gRPC IssueToken $alg" "$one" "$load" quiet grpc issue "$alg"
done
for RSA_BITS in 3072 4096; do
    scenario "rest_auth_rs$RSA_BITS" "POST /auth RS256 RSA-$RSA_BITS" "$one" "$load" quiet rest /auth 200 WRK_METHOD=POST
    scenario "grpc_issue_rs$RSA_BITS" "gRPC IssueToken RS256 RSA-$RSA_BITS" "$one" "$load" quiet grpc issue
done
RSA_BITS=""
# OAuth: the token endpoint with a secret proven at the preflight (later checks
# answer from the cache; the one argon2 check, 19 MiB, is in its peak RSS), and
# introspection of a live access token.
printf '{"clients":[{"id":"load","secret_hash":"%s","scopes":["read"]}]}\n' \
    "$(printf %s load-secret | "$BIN" hash-secret)" >"$WORK/clients.json"
SERVER_ARGS=(--clients-file "$WORK/clients.json")
scenario rest_oauth_token "POST /oauth2/token" "$one" "$load" quiet rest /oauth2/token 200 WRK_METHOD=POST \
    WRK_CONTENT_TYPE=application/x-www-form-urlencoded WRK_BODY="grant_type=client_credentials&scope=read" \
    WRK_AUTHORIZATION="Basic $(printf %s load:load-secret | base64)"
SERVER_ARGS=()
access_token_to_introspect() {
    local token
    token=$(curl -sf -X POST "http://$HOST:$HTTP_PORT/oauth2/token" -d grant_type=client_credentials \
        -d client_id=load | sed -n 's/.*"access_token":"\([^"]*\)".*/\1/p')
    [ -n "$token" ] || die "no access token to introspect"
    PREPARED=(WRK_BODY="token=$token")
}
PREPARE=access_token_to_introspect
scenario rest_introspect "POST /oauth2/introspect" "$one" "$load" quiet rest /oauth2/introspect 200 WRK_METHOD=POST \
    WRK_CONTENT_TYPE=application/x-www-form-urlencoded
PREPARE=""
# Keys held in a PKCS#11 token (SoftHSM2): the same POST /auth, each signature
# one C_Sign through the module, on a token and a store of their own (on the
# shared store the software keys would keep signing). Needs softhsm2.
if want rest_auth_hsm; then
    if [ -e /usr/lib/softhsm/libsofthsm2.so ] && command -v softhsm2-util >/dev/null; then
        mkdir -p "$WORK/softhsm/tokens"
        printf 'directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\n' \
            "$WORK/softhsm/tokens" >"$WORK/softhsm/softhsm2.conf"
        export SOFTHSM2_CONF="$WORK/softhsm/softhsm2.conf"
        softhsm2-util --init-token --free --label jwks-load --so-pin 5678 --pin 1234 >/dev/null
        printf '1234\n' >"$WORK/softhsm/pin"
        SERVER_ARGS=(--pkcs11-module /usr/lib/softhsm/libsofthsm2.so --pkcs11-token-label jwks-load
            --pkcs11-pin-file "$WORK/softhsm/pin")
        STORE_NAME=jwks-hsm
        scenario rest_auth_hsm "POST /auth, key in SoftHSM2" "$one" "$load" quiet rest /auth 200 WRK_METHOD=POST
        SERVER_ARGS=()
        STORE_NAME=""
        unset SOFTHSM2_CONF
    elif [ -n "$ONLY" ]; then
        die "rest_auth_hsm needs softhsm2 (apt-get install softhsm2)"
    else
        say "skipping rest_auth_hsm: softhsm2 is not installed (apt-get install softhsm2)"
    fi
fi
nginx_scenario
if [ "$LOGGED" = 1 ]; then
    scenario rest_auth_info "POST /auth, info logs" "$one" "$load" info rest /auth 200 WRK_METHOD=POST
    scenario rest_jwks_info "GET jwks.json, info logs" "$one" "$load" info rest /.well-known/jwks.json 200
fi
if [ "$TWO_CORE" = 1 ]; then
    both="$SERVER_CPU,$LOAD_CPU"
    scenario rest_auth_2cpu "POST /auth, 2 cores" "$both" "$both" quiet rest /auth 200 WRK_METHOD=POST
    scenario grpc_issue_2cpu "gRPC IssueToken, 2 cores" "$both" "$both" quiet grpc issue
fi

# --- the table ----------------------------------------------------------------

# row NAME BASE_RPS BASE_LABEL MIN_RATIO: prints one scenario with its verdict
# against the targets (a MIN_RATIO of "" sets no rate target).
MISSED=0
row() {
    local name=$1 base=$2 base_label=$3 min=$4 line
    [ -n "${RPS[$name]:-}" ] || return 0
    line=$(awk -v rps="${RPS[$name]}" -v p50="${P50[$name]}" -v p99="${P99[$name]}" \
        -v err="${ERRS[$name]}" -v rss="${RSS[$name]}" -v srv="${SCPU[$name]}" \
        -v gen="${GCPU[$name]}" -v oth="${OCPU[$name]}" -v base="$base" -v bl="$base_label" \
        -v min="$min" -v tail="$TAIL_FACTOR" -v rsslim="$RSS_LIMIT_MB" -v label="${LABEL[$name]}" \
        -v server="$([ "$name" = nginx ] && echo 0 || echo 1)" '
        BEGIN {
            ratio = (base > 0) ? rps / base : 0
            tailx = (p50 > 0) ? p99 / p50 : 0
            percore = (srv > 0) ? rps * 100 / srv : 0
            mb = rss / 1024
            verdict = ""
            if (min != "" && base > 0 && ratio < min) verdict = verdict " rate"
            if (server && tailx >= tail) verdict = verdict " p99"
            if (err > 0) verdict = verdict " errors"
            if (server && mb >= rsslim) verdict = verdict " rss"
            if (!server && verdict == "") verdict = "(limit)"
            else if (verdict == "") verdict = "ok"
            else verdict = "MISSED:" verdict
            # The load generator saturated its core while the server had room:
            # the rate is a floor, the per-core figure the better estimate.
            if (gen >= 90 && srv < 95) verdict = verdict ", load-bound"
            vs = (base > 0) ? sprintf("%.2fx %s", ratio, bl) : "-"
            tgt = (min != "") ? ">= " min : "-"
            printf "%-28s %9.0f %9.0f %7.2f %7.2f %6.1fx %6d %6.1f %5d%% %5d%% %5d%%  %-18s %-7s %s\n",
                label, rps, percore, p50 / 1000, p99 / 1000, tailx, err, mb, srv, gen, oth, vs, tgt, verdict
        }')
    echo "$line"
    case $line in *MISSED:*) MISSED=$((MISSED + 1)) ;; esac
}

NGINX_RPS=${RPS[nginx]:-}
REST_JWKS_RPS=${RPS[rest_jwks]:-}
# The combined limit of each algorithm: one signature plus serving a small response.
declare -A LIMIT
for kind in rsa2048 rsa3072 rsa4096 ecdsap256 ed25519; do
    LIMIT[$kind]=$(limit "${SIGNS[$kind]:-}" "$NGINX_RPS")
done
echo
echo "jwks-server load test: ${DURATION} s runs, median of ${REPEATS}, ${CONNECTIONS} connections;" \
    "server on cpu ${SERVER_CPU}, load generator on cpu ${LOAD_CPU} (unless marked 2 cores); cores ${CORES}"
echo "limits on this machine: nginx, 1 worker, the same JWKS as a static file: ${NGINX_RPS:-(not run)} req/s;" \
    "openssl speed, signs/s on one core, and the combined limit 1 / (1/sign + 1/nginx):"
for kind in rsa2048 rsa3072 rsa4096 ecdsap256 ed25519; do
    echo "  $kind: ${SIGNS[$kind]:-(not run)} signs/s, combined ${LIMIT[$kind]:-(not run)}/s"
done
echo "  rsa2048 verifies/s on one core (for introspection): ${VERIFIES[rsa2048]:-(not run)}" 
echo
printf "%-28s %9s %9s %7s %7s %7s %6s %6s %6s %6s %6s  %-18s %-7s %s\n" \
    scenario "req/s" "per core" "p50 ms" "p99 ms" p99/p50 errors "RSS MB" server load others \
    "against" target verdict
row rest_auth "${LIMIT[rsa2048]}" "limit rsa2048" "$ISSUE_VS_OPENSSL"
row rest_auth_expired "${LIMIT[rsa2048]}" "limit rsa2048" "$ISSUE_VS_OPENSSL"
row grpc_issue "${LIMIT[rsa2048]}" "limit rsa2048" "$ISSUE_VS_OPENSSL"
for alg in "${ALG_LIST[@]}"; do
    [ "$alg" = RS256 ] && continue
    lower=$(echo "$alg" | tr '[:upper:]' '[:lower:]')
    kind=${SIGN_KIND[$alg]}
    row "rest_auth_$lower" "${LIMIT[$kind]}" "limit $kind" "$ISSUE_VS_OPENSSL"
    row "grpc_issue_$lower" "${LIMIT[$kind]}" "limit $kind" "$ISSUE_VS_OPENSSL"
done
for bits in 3072 4096; do
    row "rest_auth_rs$bits" "${LIMIT[rsa$bits]}" "limit rsa$bits" "$ISSUE_VS_OPENSSL"
    row "grpc_issue_rs$bits" "${LIMIT[rsa$bits]}" "limit rsa$bits" "$ISSUE_VS_OPENSSL"
done
row rest_jwks "$NGINX_RPS" nginx "$JWKS_VS_NGINX"
row rest_jwks_inm "$NGINX_RPS" nginx ""
row grpc_jwks "$REST_JWKS_RPS" "REST JWKS" "$GRPC_VS_REST"
row nginx "" "" ""
row rest_auth_info "${RPS[rest_auth]:-}" "warn logs" ""
row rest_jwks_info "$REST_JWKS_RPS" "warn logs" ""
row rest_auth_2cpu "${RPS[rest_auth]:-}" "one core" "$TWO_CORE_GAIN"
row grpc_issue_2cpu "${RPS[grpc_issue]:-}" "one core" "$TWO_CORE_GAIN"
row rest_oauth_token "${RPS[rest_auth]:-}" "POST /auth" "$OAUTH_TOKEN_VS_AUTH"
row rest_introspect "${VERIFIES[rsa2048]:-}" "rsa2048 verify" "$INTROSPECT_VS_VERIFY"
row rest_auth_hsm "${RPS[rest_auth]:-}" "software key" ""
echo
cat <<EOF
req/s: the median run; per core: req/s divided by the server's CPU share, what
one fully busy core would serve. server, load, others: CPU of the server (nginx's
worker on its row), the load generator and everything else on the machine in that
run, in % of one core; "others" above a few % means a busy machine and low numbers.
load-bound: the load generator saturated its core before the server did.
Targets (issues #7, #12, #13): issuance >= ${ISSUE_VS_OPENSSL}x the combined limit of its algorithm, REST JWKS >= ${JWKS_VS_NGINX}x nginx,
gRPC GetJwks >= ${GRPC_VS_REST}x REST JWKS, p99 < ${TAIL_FACTOR}x p50, no errors,
RSS < ${RSS_LIMIT_MB} MB, two cores >= ${TWO_CORE_GAIN}x one (the load generator shares those cores);
(issue #12) POST /oauth2/token with a proven secret >= ${OAUTH_TOKEN_VS_AUTH}x POST /auth,
POST /oauth2/introspect >= ${INTROSPECT_VS_VERIFY}x openssl's one-core rsa2048 verify rate.
targets missed: $MISSED
EOF
if [ "$FAIL_ON_TARGETS" = 1 ] && [ "$MISSED" -gt 0 ]; then
    exit 1
fi
