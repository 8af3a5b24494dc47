#!/usr/bin/env bash
# A one-node SLURM cluster on 127.0.0.1 for the @slurm tests (DESIGN §9): Debian's
# slurm-wlm (slurmctld, slurmd) with munge, and accounting through slurmdbd and a MariaDB,
# because submitit polls `sacct` for the end of every job.
#
#   bash .ci/slurm.sh install  install what is missing (root, apt); `start` does it too
#   bash .ci/slurm.sh start    install what is missing (root, apt), write the configs, start
#                              the daemons and wait until the node is idle; quick when running
#   bash .ci/slurm.sh stop     stop the daemons this script started, by their recorded PIDs
#   bash .ci/slurm.sh status   the daemons' PIDs and `sinfo`
#
# The packages are slurm-wlm's parts (slurmctld, slurmd, slurm-client), slurmdbd, munge and
# mariadb-server. Everything else (configs, spool dirs, logs, PIDs, the munge key, the
# database) lives in $SAMPLER_SLURM_STATE (default /tmp/sampler-slurm); nothing is written
# to /etc, only munged's socket to /run/munge (where every Slurm client looks for it; a
# munged already answering there is used). Clients find the cluster with
#   export SLURM_CONF=$SAMPLER_SLURM_STATE/etc/slurm.conf
# MariaDB ($SAMPLER_SLURM_DB_PORT, default 13306), slurmdbd (6819) and slurmd (6818) listen on
# 127.0.0.1 only; slurmctld (6817) on every address: Slurm 22.05 cannot bind it to one, so
# .ci/run starts the cluster and runs its tests in a network namespace of their own that
# has only a loopback device (`unshare --net`): nothing outside can reach it.
set -euo pipefail

STATE="${SAMPLER_SLURM_STATE:-/tmp/sampler-slurm}"
DB_PORT="${SAMPLER_SLURM_DB_PORT:-13306}"
CONF="$STATE/etc/slurm.conf"
PIDS="$STATE/pids"
LOGS="$STATE/log"
NODE=localhost
MUNGE_SOCKET=/run/munge/munge.socket.2  # munge's default, where every Slurm client looks
CLUSTER=sampler
PACKAGES=(slurmctld slurmd slurm-client slurmdbd munge mariadb-server)
DAEMONS=(munged mariadbd slurmdbd slurmctld slurmd)  # start order; stop goes backwards
export SLURM_CONF="$CONF"

say() { echo "slurm.sh: $*" >&2; }
die() { say "$*"; exit 1; }

alive() {  # alive NAME: its recorded PID is a live process of that name (not a reused PID)
    local pid
    pid=$(cat "$PIDS/$1" 2>/dev/null) || return 1
    [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$1" ]
}

node_state() { sinfo -h -N -n "$NODE" -o %T 2>/dev/null | head -n1; }

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...: poll COMMAND every 0.2 s
    local seconds=$1 what=$2
    shift 2
    local deadline=$((SECONDS + seconds))
    until "$@" >/dev/null 2>&1; do
        [ "$SECONDS" -lt "$deadline" ] || die "$what did not happen within ${seconds}s (logs: $LOGS)"
        sleep 0.2
    done
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

spawn() {  # spawn NAME COMMAND...: start a daemon in the foreground of its own session, record its PID
    local name=$1
    shift
    # setsid execs in place (a background job of a script leads no process group), so $! is
    # the daemon itself; no inherited stdio, so a caller reading our output is not held open.
    setsid "$@" </dev/null >>"$LOGS/$name.out" 2>&1 &
    echo $! >"$PIDS/$name"
}

install() {
    local missing=()
    for cmd in slurmctld slurmd sinfo slurmdbd munged mariadbd mariadb-install-db; do
        command -v "$cmd" >/dev/null || missing+=("$cmd")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    [ "$(id -u)" -eq 0 ] || die "not root, and ${missing[*]} missing: install ${PACKAGES[*]} first"
    command -v apt-get >/dev/null || die "no apt-get, and ${missing[*]} missing: install ${PACKAGES[*]} first"
    say "installing ${PACKAGES[*]}"
    # No service may start during the install: this script starts its own daemons.
    local policy=/usr/sbin/policy-rc.d ours=""
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && ours=1
    fi
    local rc=0
    { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        "${PACKAGES[@]}"; } >"${TMPDIR:-/tmp}/sampler-slurm-apt.log" 2>&1 || rc=$?
    [ -z "$ours" ] || rm -f "$policy"
    [ $rc -eq 0 ] || { tail -n 20 "${TMPDIR:-/tmp}/sampler-slurm-apt.log" >&2; die "apt-get failed ($rc)"; }
}

write_configs() {
    local hw
    # The node as slurmd sees this machine: its real CPUs, sockets, cores and memory.
    hw=$(slurmd -C | head -n1 | sed -e 's/^NodeName=[^ ]* //')
    mkdir -p "$STATE"/{etc,ctld,slurmd,munge,mysql} "$PIDS" "$LOGS"
    chmod 700 "$STATE/munge"
    cat >"$CONF" <<EOF
# Written by .ci/slurm.sh: a one-node cluster on 127.0.0.1 for sampler's tests.
ClusterName=$CLUSTER
SlurmctldHost=localhost(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/slurmd
SlurmctldPidFile=$STATE/ctld/slurmctld.pid
SlurmdPidFile=$STATE/slurmd/slurmd.pid
SlurmctldLogFile=$LOGS/slurmctld.log
SlurmdLogFile=$LOGS/slurmd.log
# No cgroups in a container: processes tracked through their parents, no task binding.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
MpiDefault=none
ReturnToService=2
# scancel: SIGTERM, then SIGKILL after KillWait seconds, so a test's cancel ends the job at once.
KillWait=2
MinJobAge=300
InactiveLimit=0
# Bind slurmd, slurmdbd and the clients to 127.0.0.1, not every address (slurmctld always binds them all).
CommunicationParameters=NoInAddrAny
# sacct answers from slurmdbd (submitit polls it; without it a cancelled job is waited for ever).
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
JobCompType=jobcomp/none
NodeName=$NODE NodeAddr=127.0.0.1 $hw State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
    cat >"$STATE/etc/slurmdbd.conf" <<EOF
# Written by .ci/slurm.sh.
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
CommunicationParameters=NoInAddrAny
SlurmUser=root
PidFile=$STATE/slurmdbd.pid
LogFile=$LOGS/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=slurm
StorageLoc=slurm_acct_db
EOF
    chmod 600 "$STATE/etc/slurmdbd.conf"  # slurmdbd refuses a readable one: it holds a password
}

start_munge() {
    alive munged && return 0
    # Slurm reaches munged on its default socket (AuthInfo would move it for some
    # connections only); a munged already answering there is used as it is.
    if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
        say "using the munged already running on $MUNGE_SOCKET"
        return 0
    fi
    [ -s "$STATE/munge/munge.key" ] || {
        dd if=/dev/urandom of="$STATE/munge/munge.key" bs=1024 count=1 status=none
        chmod 400 "$STATE/munge/munge.key"
    }
    mkdir -p "$(dirname "$MUNGE_SOCKET")"
    # --force: the state dir may sit below a world-writable /tmp.
    spawn munged munged --foreground --force --key-file="$STATE/munge/munge.key" \
        --socket="$MUNGE_SOCKET" --pid-file="$STATE/munge/munged.pid" \
        --seed-file="$STATE/munge/munged.seed" --log-file="$LOGS/munged.log"
    wait_for 20 "munged answering" bash -c 'munge -n | unmunge'
}

start_mariadb() {
    alive mariadbd && return 0
    local data="$STATE/mysql/data" sock="$STATE/mysql/mysqld.sock"
    if [ ! -d "$data/mysql" ]; then
        mariadb-install-db --no-defaults --user=root --datadir="$data" --skip-test-db \
            --auth-root-authentication-method=normal >"$LOGS/mariadb-install.log" 2>&1 \
            || die "mariadb-install-db failed (see $LOGS/mariadb-install.log)"
    fi
    spawn mariadbd mariadbd --no-defaults --user=root --datadir="$data" --socket="$sock" \
        --pid-file="$STATE/mysql/mariadb.pid" --bind-address=127.0.0.1 --port="$DB_PORT" \
        --skip-name-resolve --log-error="$LOGS/mariadb.log" --innodb-buffer-pool-size=64M \
        --skip-log-bin
    wait_for 60 "MariaDB answering" mariadb --no-defaults -S "$sock" -uroot -e "SELECT 1"
    mariadb --no-defaults -S "$sock" -uroot -e "
        CREATE DATABASE IF NOT EXISTS slurm_acct_db;
        CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurm';
        GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';"
}

start_slurm() {
    if ! alive slurmdbd; then
        spawn slurmdbd slurmdbd -D
        wait_for 120 "slurmdbd listening on 6819" port_open 6819
    fi
    # The cluster must exist in the database before slurmctld reports jobs to it.
    if ! sacctmgr -n -P list cluster format=cluster 2>/dev/null | grep -qx "$CLUSTER"; then
        sacctmgr -i add cluster "$CLUSTER" >/dev/null
    fi
    # -c: a new controller starts with no jobs. Jobs of an earlier start (their processes
    # ended with its slurmd) would otherwise come back RUNNING, hold the node's cores and
    # leave the tests' jobs pending on Resources.
    alive slurmctld || spawn slurmctld slurmctld -D -c -f "$CONF"
    wait_for 60 "slurmctld answering" sinfo -h
    alive slurmd || spawn slurmd slurmd -D -f "$CONF" -N "$NODE"
    local deadline=$((SECONDS + 90)) state
    while :; do
        state=$(node_state || true)
        case "$state" in
            idle|mixed|allocated) break ;;
            *drain*|down*) scontrol update nodename="$NODE" state=resume 2>/dev/null || true ;;
        esac
        [ "$SECONDS" -lt "$deadline" ] || die "node $NODE is '${state:-unknown}', not idle, after 90s (logs: $LOGS)"
        sleep 0.2
    done
}

start() {
    local t0=$SECONDS
    install
    write_configs
    start_munge
    start_mariadb
    start_slurm
    say "cluster '$CLUSTER' up in $((SECONDS - t0))s: $(sinfo -h -N -o '%N %T %c CPUs %m MB')"
    say "clients: export SLURM_CONF=$CONF"
}

stop() {
    local i name pid
    for ((i = ${#DAEMONS[@]} - 1; i >= 0; i--)); do
        name=${DAEMONS[$i]}
        pid=$(cat "$PIDS/$name" 2>/dev/null) || continue
        if alive "$name"; then
            kill -TERM "$pid"
            for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            kill -0 "$pid" 2>/dev/null && { say "$name ($pid) ignored SIGTERM for 10s; SIGKILL"; kill -KILL "$pid"; }
        fi
        rm -f "$PIDS/$name"
    done
    say "stopped"
}

status() {
    local name
    for name in "${DAEMONS[@]}"; do
        if alive "$name"; then echo "$name: running ($(cat "$PIDS/$name"))"; else echo "$name: stopped"; fi
    done
    if [ -f "$CONF" ]; then sinfo 2>&1 || true; fi
}

case "${1:-}" in
    install) install ;;
    start) start ;;
    stop) stop ;;
    status) status ;;
    *) echo "usage: $0 install|start|stop|status" >&2; exit 2 ;;
esac
