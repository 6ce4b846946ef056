#!/usr/bin/env bash
# The system parts the test suite needs, installed and started where missing (docs/development.md; `make test`
# runs this before pytest, `.ci/run` runs `make test`). Idempotent: when everything is up it only checks,
# in about a second. On a problem it prints ONE line saying what is missing and how to fix it, exit 1.
#
#   - Chromium at /usr/bin/chromium (Debian package `chromium`) for the dashboard tests in a real browser;
#   - PostgreSQL: the `postgresql` package (private servers of the restart tests use its initdb/pg_ctl) and
#     the machine's server on 127.0.0.1:5432, user postgres, trust auth, unless MASKCLS_HPO_TEST_PG names
#     another server;
#   - a single-node Slurm cluster (packages `slurm-wlm munge`): munged as user munge, slurmctld + slurmd
#     with the slurm.conf below, up when `sinfo` shows this node idle (or busy with jobs).
#
# Details go to $TEST_ENV_LOG (default /tmp/maskcls-test-env.log). Needs root only when something must be
# installed or started.
set -uo pipefail

LOG=${TEST_ENV_LOG:-/tmp/maskcls-test-env.log}
SLURM_CONF=${SLURM_CONF:-/etc/slurm/slurm.conf}
: >>"$LOG" 2>/dev/null || LOG=/dev/null

fail() {
  echo "test-env: $*" >&2
  exit 1
}
log() { echo "$(date '+%F %T') $*" >>"$LOG"; }
as_root() {
  # $1: what is needed, for the message
  [ "$(id -u)" -eq 0 ] || fail "$1 and this is not root: run 'sudo scripts/test-env.sh' once, then 'make test'"
}

apt_install() {
  as_root "missing packages: $*"
  log "apt-get install $*"
  if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@"; } >>"$LOG" 2>&1; then
    fail "apt-get install $* failed (details in $LOG); install them by hand and rerun"
  fi
}

# --- packages --------------------------------------------------------------------------------------------
need_apt=()
[ -x /usr/bin/chromium ] || need_apt+=(chromium)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need_apt+=(postgresql)
{ command -v sbatch && command -v slurmctld && command -v slurmd; } >/dev/null 2>&1 || need_apt+=(slurm-wlm)
[ -x /usr/sbin/munged ] || need_apt+=(munge)
[ ${#need_apt[@]} -eq 0 ] || apt_install "${need_apt[@]}"

# --- PostgreSQL on 127.0.0.1:5432, user postgres, trust ---------------------------------------------------
pg_up() { pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; }
pg_login() { psql -w -h 127.0.0.1 -p 5432 -U postgres -d postgres -qAtc 'SELECT 1' >/dev/null 2>&1; }
if [ -z "${MASKCLS_HPO_TEST_PG:-}" ] && ! pg_login; then
  if ! pg_up; then
    as_root "PostgreSQL is not running on 127.0.0.1:5432"
    version=$(ls /usr/lib/postgresql | sort -V | tail -1)
    if ! pg_lsclusters -h 2>/dev/null | awk '{print $1" "$2}' | grep -qx "$version main"; then
      log "pg_createcluster $version main"
      pg_createcluster "$version" main -p 5432 >>"$LOG" 2>&1 # the package's postinst may not have made one
    fi
    log "pg_ctlcluster $version main start"
    pg_ctlcluster --skip-systemctl-redirect "$version" main start >>"$LOG" 2>&1
    for _ in $(seq 1 30); do pg_up && break; sleep 1; done
    pg_up || fail "PostgreSQL $version main did not start (see $LOG and /var/log/postgresql/)"
  fi
  if ! pg_login; then
    # Debian asks for a password on 127.0.0.1; the tests log in as postgres without one (docs/development.md)
    as_root "PostgreSQL on 127.0.0.1:5432 asks user postgres for a password"
    hba=$(runuser -u postgres -- psql -qAtc 'SHOW hba_file')
    log "trust for 127.0.0.1 and ::1 in $hba"
    sed -i '1i host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust' "$hba"
    runuser -u postgres -- psql -qAtc 'SELECT pg_reload_conf()' >/dev/null
    for _ in $(seq 1 10); do pg_login && break; sleep 0.5; done
  fi
  pg_login || fail "no PostgreSQL login for user postgres at 127.0.0.1:5432 without a password (see $LOG)"
fi

# --- Slurm: munged, slurmctld, slurmd on this node ---------------------------------------------------------
node=$(hostname -s)
slurm_conf() {
  cat <<EOF
# Single-node test cluster written by scripts/test-env.sh (maskcls-hpo); rewritten when the host name changes.
ClusterName=maskcls
SlurmctldHost=$node
SlurmUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
NodeName=$node CPUs=2 State=UNKNOWN
PartitionName=debug Nodes=$node Default=YES MaxTime=INFINITE State=UP
EOF
}
pid_alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
node_state() { timeout 10 sinfo -h -n "$node" -o %T 2>/dev/null | head -1; }
node_ready() {
  # idle, or running jobs (mixed/allocated/completing); not down, drained or unknown
  case "$(node_state)" in idle | mixed | allocated | completing) return 0 ;; *) return 1 ;; esac
}

if [ "$(cat "$SLURM_CONF" 2>/dev/null)" != "$(slurm_conf)" ]; then
  as_root "$SLURM_CONF is missing or not the test cluster's"
  log "write $SLURM_CONF"
  mkdir -p "$(dirname "$SLURM_CONF")"
  slurm_conf >"$SLURM_CONF"
  # daemons started with another configuration are restarted below
  for pidfile in /run/slurmd.pid /run/slurmctld.pid; do
    if pid_alive "$pidfile"; then
      kill "$(cat "$pidfile")" 2>/dev/null
      for _ in $(seq 1 20); do pid_alive "$pidfile" || break; sleep 0.5; done
    fi
  done
fi

if ! timeout 5 munge -n 2>/dev/null | timeout 5 unmunge >/dev/null 2>&1; then
  as_root "munged is not running"
  log "start munged"
  mkdir -p /run/munge /var/log/munge /var/lib/munge
  chown munge:munge /run/munge /var/log/munge /var/lib/munge
  chmod 0755 /run/munge
  if [ ! -s /etc/munge/munge.key ]; then
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
  fi
  chown munge:munge /etc/munge/munge.key
  chmod 0400 /etc/munge/munge.key
  runuser -u munge -- /usr/sbin/munged >>"$LOG" 2>&1
  for _ in $(seq 1 20); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.25; done
  munge -n 2>/dev/null | unmunge >/dev/null 2>&1 || fail "munged did not start (see $LOG and /var/log/munge/)"
fi

if ! pid_alive /run/slurmctld.pid || ! pid_alive /run/slurmd.pid || ! node_ready; then
  as_root "the Slurm test cluster is not up"
  mkdir -p /var/spool/slurmctld /var/spool/slurmd /var/log/slurm
  if ! pid_alive /run/slurmctld.pid; then
    log "start slurmctld"
    /usr/sbin/slurmctld >>"$LOG" 2>&1 || fail "slurmctld did not start (see /var/log/slurm/slurmctld.log)"
  fi
  if ! pid_alive /run/slurmd.pid; then
    log "start slurmd"
    /usr/sbin/slurmd >>"$LOG" 2>&1 || fail "slurmd did not start (see /var/log/slurm/slurmd.log)"
  fi
  for _ in $(seq 1 60); do
    node_ready && break
    case "$(node_state)" in
    down* | drain* | drained*) scontrol update NodeName="$node" State=RESUME >>"$LOG" 2>&1 ;;
    esac
    sleep 1
  done
  node_ready || fail "Slurm node $node is '$(node_state)', not idle (see /var/log/slurm/)"
  log "slurm node $node $(node_state)"
fi
exit 0
