# shellcheck shell=bash
# Helpers shared by the bench/ scripts. Source after `cd` to the repository root.

# Starts marketplace-sim on a free loopback port with the given extra arguments; sets SIM_PID,
# SIM_URL and SIM_LOG. Retries on another port when the chosen one is taken.
start_sim() {
    local log=$1
    shift
    local try port
    for try in 1 2 3 4 5 6 7 8 9 10; do
        port=$((20000 + RANDOM % 30000))
        : >"$log"
        "${BIN_DIR:-target/release}/marketplace-sim" --listen "127.0.0.1:$port" "$@" >"$log" 2>&1 &
        SIM_PID=$!
        local waited=0
        while [ $waited -lt 300 ]; do
            if grep -q "listening on" "$log"; then
                SIM_URL="http://127.0.0.1:$port"
                SIM_LOG=$log
                return 0
            fi
            if ! kill -0 "$SIM_PID" 2>/dev/null; then
                break
            fi
            sleep 0.1
            waited=$((waited + 1))
        done
        kill "$SIM_PID" 2>/dev/null || true
        wait "$SIM_PID" 2>/dev/null || true
        echo "marketplace-sim could not start on port $port (try $try)" >&2
    done
    cat "$log" >&2
    return 1
}

stop_sim() {
    if [ -n "${SIM_PID:-}" ] && kill -0 "$SIM_PID" 2>/dev/null; then
        kill -TERM "$SIM_PID" 2>/dev/null || true
        wait "$SIM_PID" 2>/dev/null || true
    fi
    SIM_PID=
}

# Creates a fresh database in the private cluster, migrates it and prints its URL.
fresh_database() {
    local name=$1 base=${DATABASE_URL%/*}
    psql -X -q -v ON_ERROR_STOP=1 -d "$DATABASE_URL" -c "DROP DATABASE IF EXISTS $name" -c "CREATE DATABASE $name" >&2
    DATABASE_URL="$base/$name" "${BIN_DIR:-target/release}/order-acceptance" migrate >/dev/null
    echo "$base/$name"
}

# Median of the numbers on stdin.
median() {
    sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print "nan"; else print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

now_s() { date +%s.%N; }
