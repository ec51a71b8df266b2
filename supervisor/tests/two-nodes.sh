#!/usr/bin/env bash
# A two-node Docker Swarm on one machine, for the swarm tests, the bench and an operator:
# this host's engine is the manager; a second dockerd, in network, mount, PID and UTS
# namespaces of its own and joined to the host over a veth pair, is the worker.
#
#   two-nodes.sh up      makes the swarm if there is none, adds the worker, loads the
#                        ghost-stream images into it; its last line is the worker's DOCKER_HOST=…
#   two-nodes.sh engine  starts the worker engine alone, in no swarm and without the images
#                        (unless GHOST_TWO_NODES_IMAGES names some), for a caller that forms the
#                        swarm and ships the images itself (the Ansible swarm test); its last
#                        line is the worker's DOCKER_HOST=…
#   two-nodes.sh down    removes the worker and everything it made, and the swarm if `up` made it;
#                        from a swarm it did not make, only the worker's node entry goes
#   two-nodes.sh status  tells what is up
#
# Needs root. The worker engine's state (images, containers) lives on a tmpfs inside its mount
# namespace, and its processes in its PID namespace: when the namespace holder dies, however
# it dies, the kernel takes the processes, mounts, the veth pair and the namespace's firewall
# rules with it. What outlives it (the host's swarm membership, the worker's node entry, empty
# cgroups) is recorded in the state directory, so `down` removes it even after the caller of
# `up` was killed. `down` is safe to run when nothing is up.
#
# The host engine's swarm state is shared with the swarm and Ansible tests, which serialize
# on the swarm lock file. `up` takes that lock before it changes anything and hands it to a
# keeper process, the namespace holder's parent, which keeps it until `down` has put
# everything back. Should the worker die on its own, the keeper runs `down` itself first.
# `engine` does the same: whoever joins its worker to the host's swarm changes that swarm too.
#
# Settings (environment):
#   GHOST_TWO_NODES_DIR       state directory (default /tmp/ghost-two-nodes)
#   GHOST_SWARM_LOCK          the swarm lock file (default /tmp/ghost-stream-swarm.lock)
#   GHOST_SWARM_LOCK_FD       a descriptor on which the caller (a swarm test) already holds
#                             the swarm lock: up and down share it instead of waiting on it
#   GHOST_TWO_NODES_NET       the veth pair's /24, as its first three octets (default 10.231.0):
#                             .1 on the host, .2 on the worker
#   GHOST_TWO_NODES_IMAGES    images to load into the worker (default: every ghost-stream/*
#                             tag naming the same image as a ghost-stream/*:latest)
#   GHOST_TWO_NODES_STORAGE   the worker's storage driver (default overlay2)
set -euo pipefail

SELF=$(readlink -f "$0")
readonly SELF
readonly STATE=${GHOST_TWO_NODES_DIR:-/tmp/ghost-two-nodes}
readonly SWARM_LOCK=${GHOST_SWARM_LOCK:-/tmp/ghost-stream-swarm.lock}
readonly NET=${GHOST_TWO_NODES_NET:-10.231.0}
readonly HOST_ADDR=$NET.1
readonly WORKER_ADDR=$NET.2
readonly STORAGE=${GHOST_TWO_NODES_STORAGE:-overlay2}
readonly HOST_IF=ghost-2n0
readonly SOCK=$STATE/docker.sock
readonly WORKER_HOST=unix://$SOCK
# Cgroups of the worker's containers, apart from the host engine's, so that `down` can find
# the empty ones a killed worker leaves behind.
readonly CGROUP_PARENT=/ghost-two-nodes

say() { echo "two-nodes: $*" >&2; }
# One up or down at a time. The script file itself is the lock, so none is left behind.
lock_self() {
    exec 8<"$SELF"
    flock 8
}
# The swarm lock, on fd 9. A caller's descriptor is the same open file, so its lock is ours.
take_swarm_lock() {
    if [[ -n ${GHOST_SWARM_LOCK_FD:-} ]]; then
        [[ $GHOST_SWARM_LOCK_FD =~ ^[0-9]+$ && -e /proc/$$/fd/$GHOST_SWARM_LOCK_FD ]] \
            || die "GHOST_SWARM_LOCK_FD=$GHOST_SWARM_LOCK_FD is not an open descriptor"
        exec 9>&"$GHOST_SWARM_LOCK_FD"
    else
        exec 9>>"$SWARM_LOCK"
    fi
    if ! flock -n 9; then
        say "waiting for $SWARM_LOCK ($1)"
        flock 9
    fi
}
die() {
    say "$*"
    exit 1
}
usage() {
    echo "usage: $0 up|engine|down|status" >&2
    exit 2
}

# The manager is the engine the caller's environment names, never the worker.
if [[ ${DOCKER_HOST:-} == "$WORKER_HOST" ]]; then
    unset DOCKER_HOST
fi
manager() { timeout 60 docker "$@"; }
worker() { timeout 60 docker -H "$WORKER_HOST" "$@"; }

# Whether a pid runs and is not a zombie waiting for its parent.
alive() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    [[ ${stat##*) } != Z* ]]
}

# The pid recorded in $STATE/$1.pid, when it is alive and is ours (pids are reused): its
# command line ends in "$SELF $2 $STATE".
recorded_pid() {
    local pid cmd
    pid=$(cat "$STATE/$1.pid" 2>/dev/null) || return 1
    [[ -n $pid ]] && alive "$pid" || return 1
    cmd=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || return 1
    [[ $cmd == *" $SELF $2 $STATE " ]] && echo "$pid"
}
holder_pid() { recorded_pid holder __worker; }
keeper_pid() { recorded_pid keeper __keep; }

# Pid 1 of the worker's PID namespace, as the host sees it.
init_pid() {
    local holder
    holder=$(holder_pid) || return 1
    local child
    child=$(cat "/proc/$holder/task/$holder/children" 2>/dev/null) || return 1
    child=${child%% *}
    [[ -n $child ]] && echo "$child"
}

in_worker_net() { nsenter -t "$(init_pid)" -n "$@"; }

# The keeper: holds the swarm lock for as long as the worker may be in the swarm, starts the
# namespace holder and waits for it. A worker that dies without `down` (its holder killed, its
# dockerd crashed) is cleaned up here at once, before the lock goes.
keeper_main() {
    # Only the swarm lock is kept: descriptors inherited from the caller of `up` (a test
    # harness's pipes, another lock) must not outlive it here.
    local fd
    for fd in "/proc/$$/fd/"*; do
        fd=${fd##*/}
        if ((fd > 2 && fd != 9)); then
            eval "exec $fd>&-" 2>/dev/null || true
        fi
    done
    unshare --net --mount --pid --uts --fork --kill-child --mount-proc --propagation private \
        -- "$SELF" __worker "$STATE" </dev/null >>"$STATE/worker.log" 2>&1 &
    echo $! >"$STATE/holder.pid"
    wait $! || true
    if [[ ! -e $STATE/stopping ]]; then
        echo "two-nodes: the worker died; removing what up made" >>"$STATE/worker.log"
        "$SELF" down
    fi
}

# Runs as pid 1 of the worker's namespaces (started by the keeper through unshare).
worker_main() {
    # The swarm lock stays with the keeper and the holder: were dockerd to inherit it, a
    # leftover shim could keep other tests out after the worker is gone.
    exec 9>&-
    # Paths the host engine uses (/run/docker.sock, /run/docker, /run/containerd,
    # /etc/docker/daemon.json and key.json) are hidden behind empty ones of the worker's own.
    mount -t tmpfs -o mode=755 tmpfs /run
    mount -t tmpfs -o mode=755 tmpfs /etc/docker
    mount -t tmpfs -o mode=711 tmpfs "$STATE/data"
    # sysfs shows the network devices of the namespace that mounts it: a fresh one for this
    # namespace's devices, with the host's cgroup hierarchies moved over onto it.
    mkdir /run/cgroup
    mount --rbind /sys/fs/cgroup /run/cgroup
    mount -t sysfs sysfs /sys
    mount --move /run/cgroup /sys/fs/cgroup
    rmdir /run/cgroup 2>/dev/null || true
    hostname "$(hostname)-worker"
    ip link set lo up
    # No registry: a swarm task runs the image it finds loaded rather than first trying to
    # pull it, which from this namespace waits for a DNS timeout.
    export DOCKER_SERVICE_PREFER_OFFLINE_IMAGE=1
    exec docker-init -g -- dockerd \
        --data-root "$STATE/data" \
        --exec-root /run/docker \
        --pidfile /run/docker.pid \
        -H "$WORKER_HOST" \
        --storage-driver "$STORAGE" \
        --cgroup-parent "$CGROUP_PARENT" \
        --iptables=true
}

# The images to ship: every ghost-stream tag whose image a ghost-stream/*:latest also names,
# so both references the supervisor runs (`:latest` and the content tag) exist on the worker.
images() {
    if [[ -n ${GHOST_TWO_NODES_IMAGES:-} ]]; then
        echo "$GHOST_TWO_NODES_IMAGES"
        return
    fi
    local all latest
    all=$(manager images --format '{{.Repository}}:{{.Tag}} {{.ID}}' | grep '^ghost-stream/' || true)
    latest=$(awk '$1 ~ /:latest$/ { print $2 }' <<<"$all" | sort -u)
    [[ -n $latest ]] || return 0
    awk 'NR == FNR { keep[$1] = 1; next } keep[$2] { print $1 }' <(echo "$latest") <(echo "$all") | xargs
}

# Undoes a failed or interrupted `up` or `engine` (named by $1).
up_exit() {
    local rc=$?
    trap - EXIT
    if [[ $rc != 0 ]]; then
        say "$1 failed; removing what it made"
        down_locked || true
    fi
    exit "$rc"
}

# How the running worker was started: up (recorded by the absence of $STATE/mode) or engine.
running_mode() {
    cat "$STATE/mode" 2>/dev/null || echo up
}

# What `up` and `engine` (named by $1) check before starting anything. When the worker is up
# already, started the same way, it prints its DOCKER_HOST=… and sets ALREADY_UP.
ALREADY_UP=""
start_checks() {
    [[ $(id -u) == 0 ]] || die "needs root (network, mount and PID namespaces)"
    for tool in docker dockerd docker-init unshare nsenter ip flock timeout; do
        command -v "$tool" >/dev/null || die "missing $tool"
    done
    lock_self

    if holder_pid >/dev/null && worker info >/dev/null 2>&1; then
        # A caller of one must not get the other: they differ in what they did with the swarm.
        [[ $(running_mode) == "$1" ]] \
            || die "the worker is up, started by \`$(running_mode)\`; run down first"
        say "already up"
        status >&2
        echo "DOCKER_HOST=$WORKER_HOST"
        ALREADY_UP=yes
        return
    fi
    if [[ -e $STATE ]]; then
        say "leftovers of an earlier two-node swarm; removing them first"
        down_locked
    fi
    if ip -o addr show | grep -q " $HOST_ADDR/"; then
        die "$HOST_ADDR is already an address of this host; choose another GHOST_TWO_NODES_NET"
    fi
}

# Starts the worker: its namespaces, the veth pair and its dockerd. $1 is the address of this
# host that the worker's swarm traffic comes from (the manager's swarm address).
start_worker() {
    local data_addr=$1 init="" i
    mkdir -p "$STATE/data"
    : >"$STATE/worker.log"
    # The keeper takes the swarm lock (fd 9) along, not the lock on this script (fd 8).
    "$SELF" __keep "$STATE" </dev/null >/dev/null 2>&1 8<&- &
    echo $! >"$STATE/keeper.pid"

    for ((i = 0; i < 50; i++)); do
        init=$(init_pid) && break
        keeper_pid >/dev/null || die "the worker exited: $(tail -n 5 "$STATE/worker.log")"
        sleep 0.1
    done
    [[ -n $init ]] || die "the worker's namespaces did not appear"
    say "worker namespaces: keeper pid $(keeper_pid), holder pid $(holder_pid), log $STATE/worker.log"

    ip link add "$HOST_IF" type veth peer name eth0 netns "$init"
    ip addr add "$HOST_ADDR/24" dev "$HOST_IF"
    ip link set "$HOST_IF" up
    if [[ $data_addr != "$HOST_ADDR" ]]; then
        # The worker drops VXLAN packets whose outer source is not the manager's swarm
        # address (its forwarding entries for the manager are static): packets to the worker
        # leave from that address.
        ip route replace "$NET.0/24" dev "$HOST_IF" proto kernel scope link src "$data_addr"
    fi
    nsenter -t "$init" -n ip addr add "$WORKER_ADDR/24" dev eth0
    nsenter -t "$init" -n ip link set eth0 up
    nsenter -t "$init" -n ip route add default via "$HOST_ADDR"

    for ((i = 0; i < 600; i++)); do
        worker version >/dev/null 2>&1 && break
        holder_pid >/dev/null || die "the worker's dockerd exited: $(tail -n 5 "$STATE/worker.log")"
        sleep 0.1
    done
    worker version >/dev/null || die "the worker's dockerd does not answer: $(tail -n 5 "$STATE/worker.log")"
    say "worker engine up ($(worker info --format '{{.Driver}}'), $WORKER_HOST)"
}

# Loads the images into the worker.
ship_images() {
    local ship
    ship=$(images)
    if [[ -n $ship ]]; then
        say "loading into the worker: $ship"
        # shellcheck disable=SC2086 # one image reference per word
        docker save $ship | timeout 600 docker -H "$WORKER_HOST" load >&2
    else
        say "no ghost-stream images on this engine; the worker has none"
    fi
}

up() {
    start_checks up
    [[ -z $ALREADY_UP ]] || return 0

    take_swarm_lock "a swarm test holds it"
    local swarm manager_addr data_addr=$HOST_ADDR i
    swarm=$(manager info --format '{{.Swarm.LocalNodeState}}')
    case $swarm in
        inactive) manager_addr=$HOST_ADDR:2377 ;;
        active)
            [[ $(manager info --format '{{.Swarm.ControlAvailable}}') == true ]] \
                || die "this engine is a swarm worker; a worker can only join through a manager"
            manager_addr=$(manager node inspect self --format '{{.ManagerStatus.Addr}}')
            case $manager_addr in
                127.* | localhost:* | \[::1\]:*)
                    die "this engine is already in a swarm advertising $manager_addr, which" \
                        "the worker cannot reach; leave that swarm (docker swarm leave --force)" \
                        "or re-make it advertising a routable address, then run up again" ;;
            esac
            data_addr=$(manager info --format '{{.Swarm.NodeAddr}}')
            ip -o addr show | grep -q " $data_addr/" \
                || die "this engine's swarm address $data_addr is not an address of this host"
            ;;
        *) die "this engine's swarm is $swarm: neither usable nor free" ;;
    esac

    # From here on anything left undone is undone again, on failure and on SIGINT/SIGTERM.
    trap 'up_exit up' EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM

    start_worker "$data_addr"
    ship_images

    if [[ $swarm == inactive ]]; then
        # Recorded first: a swarm made by a killed `up` is still found and left by `down`.
        if manager network inspect docker_gwbridge >/dev/null 2>&1; then
            echo "docker_gwbridge existed" >"$STATE/made-swarm"
        else
            : >"$STATE/made-swarm"
        fi
        manager swarm init --advertise-addr "$HOST_ADDR" >/dev/null
        say "made a swarm advertising $HOST_ADDR"
    fi

    local host=${manager_addr%:*} port=${manager_addr##*:}
    in_worker_net timeout 5 bash -c "exec 3<>/dev/tcp/$host/$port" \
        || die "the worker cannot reach the manager at $manager_addr"
    worker swarm join --token "$(manager swarm join-token -q worker)" \
        --advertise-addr "$WORKER_ADDR" --listen-addr "$WORKER_ADDR:2377" "$manager_addr" >/dev/null
    local node
    node=$(worker info --format '{{.Swarm.NodeID}}')
    echo "$node" >"$STATE/worker-node"
    for ((i = 0; i < 600; i++)); do
        [[ $(manager node inspect "$node" --format '{{.Status.State}}' 2>/dev/null) == ready ]] && break
        sleep 0.1
    done
    [[ $(manager node inspect "$node" --format '{{.Status.State}}') == ready ]] \
        || die "the worker node $node did not become ready"

    trap - EXIT INT TERM
    say "worker $node ($(worker info --format '{{.Name}}'), $WORKER_ADDR) joined $manager_addr"
    echo "DOCKER_HOST=$WORKER_HOST"
}

# The worker engine alone. A swarm the caller forms with it advertises this host's end of the
# veth pair, the address the worker's traffic is routed from.
engine() {
    start_checks engine
    [[ -z $ALREADY_UP ]] || return 0

    take_swarm_lock "a swarm test holds it"
    trap 'up_exit engine' EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM

    mkdir -p "$STATE"
    echo engine >"$STATE/mode"
    start_worker "$HOST_ADDR"
    if [[ -n ${GHOST_TWO_NODES_IMAGES:-} ]]; then
        ship_images
    fi

    trap - EXIT INT TERM
    say "worker engine alone, in no swarm: $WORKER_ADDR, this host $HOST_ADDR"
    echo "DOCKER_HOST=$WORKER_HOST"
}

down() {
    lock_self
    down_locked
}

down_locked() {
    local holder node lock_taken="" keeper i
    holder=$(holder_pid) || holder=""
    keeper=$(keeper_pid) || keeper=""
    if [[ -z $holder && -n $keeper && $keeper != "$PPID" ]]; then
        # The worker died and its keeper is cleaning up: that takes this script's lock.
        say "the worker died; waiting for its keeper to clean up"
        flock -u 8
        while alive "$keeper"; do sleep 0.1; done
        flock 8
    fi
    node=$(cat "$STATE/worker-node" 2>/dev/null) || node=""

    if [[ -n $holder ]] && worker info >/dev/null 2>&1; then
        # A killed `up` may have joined the worker without recording it.
        [[ -n $node ]] || node=$(worker info --format '{{.Swarm.NodeID}}')
        if [[ $(worker info --format '{{.Swarm.LocalNodeState}}') != inactive ]]; then
            worker swarm leave --force >/dev/null || say "the worker could not leave its swarm"
        fi
    fi

    if [[ -z $holder ]] && { [[ -n $node ]] || [[ -e $STATE/made-swarm ]]; }; then
        # The holder is gone and the lock with it: take it again to change the swarm.
        if [[ ! -e /proc/$$/fd/9 ]]; then
            take_swarm_lock "to change the swarm"
            lock_taken=yes
        fi
    fi

    local mine=""
    if [[ $(manager info --format '{{.Swarm.LocalNodeState}}' 2>/dev/null) == active ]]; then
        [[ $(manager info --format '{{.Swarm.NodeAddr}}') == "$HOST_ADDR" ]] && mine=yes
        if [[ -e $STATE/made-swarm && -n $mine ]]; then
            manager swarm leave --force >/dev/null
            say "left the swarm up made"
            if [[ $(cat "$STATE/made-swarm") != "docker_gwbridge existed" ]] \
                && manager network inspect docker_gwbridge >/dev/null 2>&1; then
                manager network rm docker_gwbridge >/dev/null || say "docker_gwbridge stays: still in use"
            fi
        elif [[ -n $node ]]; then
            if manager node inspect "$node" >/dev/null 2>&1; then
                manager node rm --force "$node" >/dev/null
                say "removed the worker node $node"
            fi
            [[ -e $STATE/made-swarm ]] && say "the swarm up made is gone already; this one is not ours, left alone"
        fi
    fi

    keeper=$(keeper_pid) || keeper=""
    # The keeper itself runs this when the worker died: it exits once this returns.
    [[ $keeper == "$PPID" ]] && keeper=""
    if [[ -n $holder || -n $keeper ]]; then
        # Tells the keeper that this stop is meant.
        [[ -d $STATE ]] && : >"$STATE/stopping"
    fi
    if [[ -n $holder ]]; then
        local init
        # A clean stop first, so dockerd stops its containers and removes their cgroups.
        if init=$(init_pid); then
            kill -TERM "$init" 2>/dev/null || true
        fi
        for ((i = 0; i < 200; i++)); do
            alive "$holder" || break
            sleep 0.1
        done
        if alive "$holder"; then
            say "the worker did not stop in 20 s; killing it"
            kill -KILL "$holder" 2>/dev/null || true
            while alive "$holder"; do sleep 0.1; done
        fi
        say "worker stopped"
    fi
    if [[ -n $keeper ]]; then
        for ((i = 0; i < 50; i++)); do
            alive "$keeper" || break
            sleep 0.1
        done
        if alive "$keeper"; then
            kill -KILL "$keeper" 2>/dev/null || true
        fi
    fi
    # The veth goes with the namespace; this is for a host end whose peer never moved in.
    if ip link show "$HOST_IF" >/dev/null 2>&1; then
        ip link del "$HOST_IF"
    fi
    local dir
    for dir in /sys/fs/cgroup/*"$CGROUP_PARENT"; do
        [[ -d $dir ]] || continue
        # rmdir removes only empty cgroups: those of live containers (another two-node
        # swarm's) stay.
        find "$dir" -depth -type d -exec rmdir {} + 2>/dev/null \
            || say "$(find "$dir" -type d | wc -l) cgroups still in use under $dir"
    done
    rm -rf "$STATE"
    [[ -n $lock_taken ]] && exec 9>&-
    say "down"
}

status() {
    local holder
    if ! holder=$(holder_pid); then
        if [[ -e $STATE ]]; then
            echo "not up, but $STATE holds leftovers: run down"
        else
            echo "not up"
        fi
        return
    fi
    echo "worker namespaces: keeper pid $(keeper_pid || echo gone), holder pid $holder, init pid $(init_pid || echo '?')"
    if [[ $(running_mode) == engine ]]; then
        echo "started by engine: the swarm, if any, is the caller's"
    fi
    if worker info >/dev/null 2>&1; then
        echo "worker engine: $WORKER_HOST ($(worker info --format '{{.Name}} {{.Driver}} swarm={{.Swarm.LocalNodeState}}'))"
    else
        echo "worker engine: not answering at $WORKER_HOST"
    fi
    manager node ls 2>/dev/null || true
}

case ${1:-} in
    up) up ;;
    engine) engine ;;
    down) down ;;
    status) status ;;
    __keep | __worker)
        [[ ${2:-} == "$STATE" ]] || die "$1 is for up alone"
        if [[ $1 == __keep ]]; then keeper_main; else worker_main; fi
        ;;
    *) usage ;;
esac
