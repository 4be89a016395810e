# pglib.sh - a throwaway PostgreSQL cluster for the server tests (source it
# after lib.sh): initdb in a temporary folder as an unprivileged user
# (nobody when run as root: PostgreSQL refuses root), listening only on a
# Unix socket in that folder, fsync off. Sets PGBIN, PGT (the folder, also
# the socket directory), URI (a libpq URI for database demix, user demix)
# and defines pgstart, pgstop, pgrestart (fast) and sql; stopped and
# removed on exit (the EXIT trap also runs lib.sh's cleanup).
# Exits 77 (skipped) when the PostgreSQL server is not installed, or 1 with
# DEMIX_REQUIRE_PG=1 (.ci/run: CI must not skip these tests).
PGBIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1)
if [ -z "$PGBIN" ] || [ ! -x "$PGBIN/initdb" ]; then
    if [ "${DEMIX_REQUIRE_PG:-0}" = 1 ]; then
        echo "PostgreSQL server binaries not found and DEMIX_REQUIRE_PG=1 (.ci/run)" >&2
        exit 1
    fi
    echo "PostgreSQL server binaries not found (apt-get install postgresql): skipped"
    exit 77
fi
PGT=$(mktemp -d /tmp/demix-pg.XXXXXX)
PG_AS=()
if [ "$(id -u)" -eq 0 ]; then
    chown nobody "$PGT"
    PG_AS=(runuser -u nobody --)
fi
chmod 755 "$PGT"
# Two connections per demix node; the cluster test runs five nodes.
PG_OPTS="-k $PGT -c listen_addresses= -c fsync=off -c max_connections=100"
pgstop() { "${PG_AS[@]}" "$PGBIN/pg_ctl" -D "$PGT/db" -m fast -w -t 120 stop >/dev/null 2>&1; }
pgstart() {
    "${PG_AS[@]}" "$PGBIN/pg_ctl" -D "$PGT/db" -l "$PGT/pg.log" -w -t 300 -o "$PG_OPTS" start >/dev/null
}
pgrestart() {
    "${PG_AS[@]}" "$PGBIN/pg_ctl" -D "$PGT/db" -l "$PGT/pg.log" -m fast -w -t 300 -o "$PG_OPTS" restart >/dev/null
}
all_cleanup() {
    cleanup
    pgstop
    rm -rf "$PGT"
}
trap all_cleanup EXIT
"${PG_AS[@]}" "$PGBIN/initdb" -D "$PGT/db" -U demix --auth=trust -E UTF8 --no-sync >"$WORK/initdb.log" 2>&1 \
    || { cat "$WORK/initdb.log" >&2; exit 1; }
pgstart || { cat "$PGT/pg.log" >&2; exit 1; }
"$PGBIN/createdb" -h "$PGT" -U demix demix || exit 1
URI="postgresql://demix@/demix?host=$PGT"
sql() { "$PGBIN/psql" -h "$PGT" -U demix -d demix -Atq -c "$1"; }
