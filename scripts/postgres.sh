# shellcheck shell=bash
# Source this file, then call `start_private_postgres`: it starts a throw-away PostgreSQL
# cluster on a free loopback port, exports DATABASE_URL, and stops the cluster when the calling
# shell exits, even on failure. PostgreSQL is installed from Debian's packages when missing.

postgres_bin_dir() {
    local dir
    dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
    if [ -z "$dir" ] && command -v pg_config >/dev/null 2>&1; then
        dir=$(pg_config --bindir)
    fi
    echo "$dir"
}

install_postgres_if_missing() {
    if [ -n "$(postgres_bin_dir)" ] && [ -x "$(postgres_bin_dir)/initdb" ]; then
        return
    fi
    echo "PostgreSQL is not installed: installing it from Debian's packages" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq postgresql >/dev/null
}

# Runs a PostgreSQL tool as the cluster owner: `postgres` when we are root (initdb refuses root).
as_cluster_owner() {
    if [ "$(id -u)" = 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

start_private_postgres() {
    install_postgres_if_missing
    local bin
    bin=$(postgres_bin_dir)
    PG_WORK_DIR=$(mktemp -d /tmp/order-acceptance-pg.XXXXXX)
    if [ "$(id -u)" = 0 ]; then chown postgres: "$PG_WORK_DIR"; fi
    as_cluster_owner "$bin/initdb" -D "$PG_WORK_DIR/data" -U postgres -A trust -E UTF8 \
        --no-sync >"$PG_WORK_DIR/initdb.log" 2>&1 || {
        cat "$PG_WORK_DIR/initdb.log" >&2
        return 1
    }
    trap stop_private_postgres EXIT
    # A random high port, tried again if taken: no other tool needed to find a free one.
    local try port
    for try in 1 2 3 4 5 6 7 8 9 10; do
        port=$((20000 + RANDOM % 30000))
        if as_cluster_owner "$bin/pg_ctl" -D "$PG_WORK_DIR/data" -l "$PG_WORK_DIR/server.log" -w \
            -o "-p $port -k $PG_WORK_DIR -c listen_addresses=127.0.0.1 -c max_connections=400 \
                -c fsync=off -c synchronous_commit=off -c full_page_writes=off" \
            start >/dev/null 2>&1; then
            export DATABASE_URL="postgres://postgres@127.0.0.1:$port/postgres"
            export PG_PORT=$port
            echo "PostgreSQL $("$bin/postgres" --version | awk '{print $3}') on 127.0.0.1:$port (data in $PG_WORK_DIR)" >&2
            return 0
        fi
        echo "port $port unavailable (try $try), trying another" >&2
    done
    cat "$PG_WORK_DIR/server.log" >&2
    return 1
}

stop_private_postgres() {
    if [ -n "${PG_WORK_DIR:-}" ] && [ -d "$PG_WORK_DIR/data" ]; then
        as_cluster_owner "$(postgres_bin_dir)/pg_ctl" -D "$PG_WORK_DIR/data" -m immediate stop \
            >/dev/null 2>&1 || true
        rm -rf "$PG_WORK_DIR"
    fi
}
