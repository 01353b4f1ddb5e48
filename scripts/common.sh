# Shared by scripts/run, scripts/test and scripts/bench: install what is missing, find Swift.
# shellcheck shell=bash

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

# Debian packages: command-or-file to look for, package that provides it.
ensure_packages() {
    local missing=()
    local pair
    for pair in "$@"; do
        local probe="${pair%%:*}" package="${pair##*:}"
        if [[ "$probe" == /* ]]; then
            [[ -e "$probe" ]] || missing+=("$package")
        else
            command -v "$probe" >/dev/null 2>&1 || missing+=("$package")
        fi
    done
    if ((${#missing[@]})); then
        log "installing Debian packages: ${missing[*]}"
        local sudo=""
        [[ $(id -u) -eq 0 ]] || sudo="sudo"
        $sudo apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
}

# What the gateway needs to build and run.
ensure_build_packages() {
    ensure_packages \
        redis-server:redis-server redis-cli:redis-tools \
        /usr/include/hiredis/hiredis.h:libhiredis-dev \
        /usr/include/sqlite3.h:libsqlite3-dev \
        curl:curl
    if ! command -v swift >/dev/null 2>&1; then
        if [[ -x /opt/swift/usr/bin/swift ]]; then
            export PATH="/opt/swift/usr/bin:$PATH"
        else
            echo "swift (6.2 or later) is not installed: https://www.swift.org/install/linux/" >&2
            exit 1
        fi
    fi
}

# Headless Chromium, for the admin page's browser test.
ensure_chromium() {
    ensure_packages chromium:chromium
}

ensure_python_openai() {
    ensure_packages python3:python3
    if ! python3 -c 'import openai' >/dev/null 2>&1; then
        log "installing the openai Python package"
        python3 -m pip install -q openai 2>/dev/null || python3 -m pip install -q --break-system-packages openai
    fi
}

# A free TCP port on loopback.
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# Starts redis-server on 127.0.0.1:$1 with no persistence; prints its pid.
start_redis() {
    local port="$1" dir
    dir="$(mktemp -d "${TMPDIR:-/tmp}/tollgate-redis.XXXXXX")"
    redis-server --bind 127.0.0.1 --port "$port" --save "" --appendonly no --dir "$dir" \
        --daemonize no --loglevel warning >"$dir/redis.log" 2>&1 &
    local pid=$!
    for _ in $(seq 1 50); do
        if redis-cli -h 127.0.0.1 -p "$port" ping 2>/dev/null | grep -q PONG; then
            echo "$pid"
            return 0
        fi
        sleep 0.1
    done
    echo "redis-server did not start on port $port; see $dir/redis.log" >&2
    return 1
}
