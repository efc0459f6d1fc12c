#!/usr/bin/env bash
# A single-node Ceph cluster (1 mon, 1 BlueStore-on-file OSD, radosgw) on loopback, for mover's S3 tests against
# the S3 server that many on-prem sites run. No cephx auth; everything lives under $CEPH_DIR.
#
#   scripts/ceph-rgw.sh start   # install the Debian packages if missing (needs root), start, print the test env
#   scripts/ceph-rgw.sh env     # print the variables for a running cluster
#   scripts/ceph-rgw.sh stop    # stop the daemons this script started (by their pid files)
#
# Then:  eval "$(scripts/ceph-rgw.sh env)" && cargo test -p mover-tests --test integration s3::conformance_against_ceph_rgw
#
# Settings: CEPH_DIR (default /tmp/mover-ceph), RGW_PORT (7480), MON_PORT (6789), AK/SK (S3 keys, testkey/testsecret).
# Only 127.0.0.1 is used. Start-up takes ~20 s after the packages are installed (apt: ~30 s).
set -euo pipefail

D=${CEPH_DIR:-/tmp/mover-ceph}
PORT=${RGW_PORT:-7480}
MON_PORT=${MON_PORT:-6789}
AK=${AK:-testkey}
SK=${SK:-testsecret}
C=(-c "$D/ceph.conf")
PACKAGES=(radosgw ceph-mon ceph-osd ceph-common curl)

log() { echo "ceph-rgw: $*" >&2; }
die() { log "$*"; exit 1; }

print_env() {
    echo "export MOVER_TEST_RGW_ENDPOINT=http://127.0.0.1:$PORT"
    echo "export MOVER_TEST_RGW_ACCESS_KEY=$AK"
    echo "export MOVER_TEST_RGW_SECRET_KEY=$SK"
}

rgw_up() { curl -s -o /dev/null --max-time 2 "http://127.0.0.1:$PORT/"; }

install_packages() {
    local missing=()
    for p in "${PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return
    [ "$(id -u)" -eq 0 ] || die "missing Debian packages (${missing[*]}); run as root or install them"
    log "installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# Wait up to $1 half-seconds for the command in the remaining arguments to succeed.
wait_for() {
    local tries=$1; shift
    for _ in $(seq 1 "$tries"); do "$@" >/dev/null 2>&1 && return 0; sleep 0.5; done
    return 1
}

stop() {
    local any=0
    # Reverse start order: gateway, then OSD, then monitor.
    for name in client.rgw.a osd.0 mon.a; do
        local pidfile="$D/run/$name.pid"
        [ -f "$pidfile" ] || continue
        local pid; pid=$(cat "$pidfile")
        if kill -0 "$pid" 2>/dev/null; then
            kill "$pid"; any=1
            for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
        fi
        rm -f "$pidfile"
    done
    [ $any -eq 1 ] && log "stopped" || log "nothing running under $D"
}

start() {
    install_packages
    if rgw_up; then
        log "something already answers on 127.0.0.1:$PORT; reusing it"
        print_env
        return
    fi
    stop >/dev/null 2>&1 || true
    if (exec 3<>"/dev/tcp/127.0.0.1/$MON_PORT") 2>/dev/null; then
        die "port $MON_PORT is taken (another Ceph monitor?); set MON_PORT or stop it"
    fi
    # A failed start leaves nothing running.
    trap 'log "start failed; stopping what was started"; stop >/dev/null 2>&1' EXIT
    rm -rf "$D"
    mkdir -p "$D"/{mon,osd,run,log}
    local fsid; fsid=$(cat /proc/sys/kernel/random/uuid)
    cat > "$D/ceph.conf" <<CONF
[global]
fsid = $fsid
mon initial members = a
mon host = v1:127.0.0.1:$MON_PORT
public network = 127.0.0.0/8
auth cluster required = none
auth service required = none
auth client required = none
auth supported = none
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
mon allow pool size one = true
mon allow pool delete = true
mon max pg per osd = 1000
mon warn on pool no redundancy = false
# A throwaway test cluster: do not refuse to start when the disk has less than 5 % free (a 250 GB disk with 11 GB
# free did, and CI skipped the RGW test).
mon data avail crit = 1
mon data avail warn = 2
osd crush chooseleaf type = 0
run dir = $D/run
pid file = $D/run/\$name.pid
admin socket = $D/run/\$name.asok
log file = $D/log/\$name.log
keyring = $D/keyring
mon data = $D/mon/\$cluster-\$id
osd data = $D/osd/\$cluster-\$id
osd objectstore = bluestore
bluestore block create = true
# A sparse file: only what is written takes space.
bluestore block size = 16G
osd memory target = 1073741824
bluestore cache autotune = false
bluestore cache size = 268435456
osd max object size = 1073741824
[client.rgw.a]
rgw frontends = beast endpoint=127.0.0.1:$PORT
rgw dns name = localhost
rgw enable usage log = false
rgw thread pool size = 64
CONF
    ceph-authtool --create-keyring "$D/keyring" --gen-key -n mon. --cap mon 'allow *' >/dev/null
    ceph-authtool "$D/keyring" --gen-key -n client.admin --cap mon 'allow *' --cap osd 'allow *' --cap mgr 'allow *' >/dev/null
    monmaptool --create --add a "v1:127.0.0.1:$MON_PORT" --fsid "$fsid" "$D/monmap" >/dev/null

    log "starting monitor"
    # Daemon chatter goes to stderr: stdout carries only the variables, for eval.
    ceph-mon "${C[@]}" --mkfs -i a --monmap "$D/monmap" --keyring "$D/keyring" >&2
    ceph-mon "${C[@]}" -i a >&2
    wait_for 60 ceph "${C[@]}" --connect-timeout 2 mon stat || die "monitor did not come up; see $D/log/mon.a.log"

    log "starting OSD"
    local osd_uuid id; osd_uuid=$(cat /proc/sys/kernel/random/uuid)
    id=$(ceph "${C[@]}" osd new "$osd_uuid")
    [ "$id" = 0 ] || die "unexpected OSD id $id"
    mkdir -p "$D/osd/ceph-$id"
    ceph-osd "${C[@]}" -i "$id" --mkfs --osd-uuid "$osd_uuid" >"$D/log/osd-mkfs.out" 2>&1 \
        || { tail -5 "$D/log/osd-mkfs.out" >&2; die "OSD mkfs failed"; }
    ceph-osd "${C[@]}" -i "$id" >&2
    osd_up() { ceph "${C[@]}" --connect-timeout 2 osd stat 2>/dev/null | grep -q '1 up'; }
    wait_for 120 osd_up || die "OSD did not come up; see $D/log/osd.0.log"

    log "starting radosgw"
    radosgw "${C[@]}" -n client.rgw.a >&2
    wait_for 240 rgw_up || die "radosgw did not answer on 127.0.0.1:$PORT; see $D/log/client.rgw.a.log"
    radosgw-admin "${C[@]}" user create --uid=mover-test --display-name=mover-test \
        --access-key="$AK" --secret-key="$SK" >/dev/null
    trap - EXIT
    log "ready on http://127.0.0.1:$PORT (data in $D; stop with: $0 stop)"
    print_env
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    env) rgw_up || die "no radosgw answers on 127.0.0.1:$PORT"; print_env ;;
    *) sed -n '2,12p' "$0" >&2; exit 2 ;;
esac
