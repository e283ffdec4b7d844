#!/usr/bin/env bash
# Stop the single-node SLURM cluster that start-slurm.sh started.
#
# While slurmctld responds to `scontrol ping`, the script cancels all jobs and waits
# for them to leave the queue, because job steps keep running after slurmd exits.
# Then it stops slurmd, slurmctld and munged, in this order, by the PIDs recorded in
# the state directory. Each daemon gets SIGTERM, and SIGKILL if it has not exited
# within the timeout. A daemon without a PID file, or whose recorded PID no longer
# runs that daemon, counts as stopped. munged is stopped only when start-slurm.sh
# started it.
#
# Environment:
#   BASINS_SLURM_DIR      state directory used by start-slurm.sh (default /tmp/basins-slurm)
#   BASINS_SLURM_TIMEOUT  seconds to wait for the jobs and for each daemon (default 30)
#
# Exit status: 0 when none of the recorded daemons runs any more, 1 when one survived
# SIGKILL or the arguments are invalid.

set -euo pipefail

state_dir=${BASINS_SLURM_DIR:-/tmp/basins-slurm}
timeout_s=${BASINS_SLURM_TIMEOUT:-30}

log() { echo "stop-slurm: $*"; }
warn() { echo "stop-slurm: warning: $*" >&2; }

# Print the PID recorded in file $1 when that process is alive and its command name
# is $2. The name check guards against a stale file whose PID now belongs to another
# process.
recorded_pid() {
    local pid
    [[ -r $1 ]] || return 1
    pid=$(<"$1")
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "$2" ]] || return 1
    echo "$pid"
}

# Succeed when process $1 has exited within $2 seconds.
wait_for_exit() {
    local pid=$1 deadline=$((SECONDS + $2))
    while kill -0 "$pid" 2>/dev/null; do
        ((SECONDS < deadline)) || return 1
        sleep 0.2
    done
}

# Stop the daemon named $1 whose PID file is $2.
stop_daemon() {
    local name=$1 pid_file=$2 pid
    if ! pid=$(recorded_pid "$pid_file" "$name"); then
        log "$name is not running"
        rm -f "$pid_file"
        return 0
    fi
    log "stopping $name (PID $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    if ! wait_for_exit "$pid" "$timeout_s"; then
        warn "$name (PID $pid) did not exit within ${timeout_s} s of SIGTERM; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        if ! wait_for_exit "$pid" 5; then
            echo "stop-slurm: error: $name (PID $pid) is still running after SIGKILL" >&2
            return 1
        fi
    fi
    rm -f "$pid_file"
}

# Cancel every job and wait until the queue is empty, if slurmctld responds.
cancel_all_jobs() {
    recorded_pid "$state_dir/slurmctld.pid" slurmctld >/dev/null || return 0
    [[ $(scontrol ping 2>/dev/null) == *" is UP"* ]] || return 0
    local job_ids=()
    mapfile -t job_ids < <(squeue -h -o %A 2>/dev/null || true)
    ((${#job_ids[@]} > 0)) || return 0

    log "cancelling jobs: ${job_ids[*]}"
    scancel "${job_ids[@]}" || warn "scancel failed for jobs: ${job_ids[*]}"
    # Only slurmd ends the processes of running jobs, so without it the queue never
    # empties.
    if ! recorded_pid "$state_dir/slurmd.pid" slurmd >/dev/null; then
        warn "slurmd is not running, so processes of running jobs may remain"
        return 0
    fi
    local deadline=$((SECONDS + timeout_s))
    while [[ -n $(squeue -h -o %A 2>/dev/null || true) ]]; do
        if ((SECONDS >= deadline)); then
            warn "jobs still in the queue after ${timeout_s} s. Their processes may outlive slurmd."
            squeue >&2 || true
            return 0
        fi
        sleep 0.5
    done
}

main() {
    [[ $timeout_s =~ ^[1-9][0-9]*$ ]] || {
        echo "stop-slurm: error: BASINS_SLURM_TIMEOUT must be a positive number of seconds, not '$timeout_s'" >&2
        exit 1
    }
    [[ -d $state_dir ]] || {
        log "state directory $state_dir does not exist; nothing to stop"
        return 0
    }

    cancel_all_jobs
    local status=0
    stop_daemon slurmd "$state_dir/slurmd.pid" || status=1
    stop_daemon slurmctld "$state_dir/slurmctld.pid" || status=1
    stop_daemon munged "$state_dir/munged.pid" || status=1
    return "$status"
}

main "$@"
