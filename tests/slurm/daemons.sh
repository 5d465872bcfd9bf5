# daemons.sh -- helpers shared by start-local-slurm.sh and stop-local-slurm.sh
# (sourced; needs log(), and TIMEOUT for wait_for/wait_up).

# running PID NAME: PID exists, is not a zombie, and its comm is NAME
# (orphaned daemons are reaped by PID 1, which in some sandboxes lags ~2s)
running() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    [ "$(cat "/proc/$1/comm" 2>/dev/null)" = "$2" ] || return 1
    stat=${stat##*) }
    [ "${stat%% *}" != Z ]
}

alive() {
    local pid
    [ -s "$2" ] || return 1
    pid=$(cat "$2" 2>/dev/null) || return 1
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    running "$pid" "$1"
}
# (alive NAME PIDFILE: PIDFILE names a live, non-zombie process whose comm is NAME)

# wait_up NAME PIDFILE DESCRIPTION CMD...: poll CMD until it succeeds or TIMEOUT seconds
# expire; give up early once the daemon NAME has written PIDFILE and exited. A daemon that
# has not written its pid file yet is still starting (on a loaded or freshly booted machine
# that can take seconds), so the caller removes any stale PIDFILE before it starts the daemon.
wait_up() {
    local name=$1 pf=$2 desc=$3 t0=$SECONDS
    shift 3
    until "$@" >/dev/null 2>&1; do
        if (( SECONDS - t0 >= 2 )) && [ -s "$pf" ] && ! alive "$name" "$pf"; then
            log "$name exited while waiting for: $desc"
            return 1
        fi
        if (( SECONDS - t0 >= TIMEOUT )); then
            log "timed out after ${TIMEOUT}s waiting for: $desc"
            return 1
        fi
        sleep 0.2
    done
}

# wait_for DESCRIPTION CMD...: wait_up with no daemon to watch (an empty PIDFILE never exists)
wait_for() { wait_up "" "" "$@"; }

# stop_daemon NAME PIDFILE: SIGTERM, wait, SIGKILL; only if alive() says it is ours
stop_daemon() {
    local name=$1 pf=$2 pid i
    if alive "$name" "$pf"; then
        pid=$(cat "$pf")
        log "stopping $name (pid $pid)"
        kill -TERM "$pid" 2>/dev/null || true
        for i in $(seq 1 150); do
            running "$pid" "$name" || break
            sleep 0.2
        done
        if running "$pid" "$name"; then
            log "$name (pid $pid) ignored SIGTERM for 30s; sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
            sleep 0.5
        fi
    else
        log "$name: not running (or not started by start-local-slurm.sh)"
    fi
    rm -f "$pf"
}
