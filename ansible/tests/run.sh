#!/usr/bin/env bash
# Tests of the Ansible deployment, with no AWS account:
#   1. ansible-lint (production profile) and --syntax-check of every playbook;
#   2. provision.yml and teardown.yml against a local EC2 emulator (moto, on loopback), each
#      twice (the second run must change nothing), checking what they leave behind: one host,
#      then a 3-node swarm cluster;
#   3. the systemd unit and ghost.toml, rendered by the role, the unit checked with systemd-analyze
#      verify, the file with `ghost config show`;
#   4. deploy.yml for real to this machine (ansible_connection=local, no systemd, binaries and
#      state under a temporary directory, the stack on its default ports, its certificate by
#      ACME from a local Pebble), twice, then health checks over HTTP and HTTPS, a restart on a
#      new binary, and teardown.yml's stop step, twice;
#   5. the role's image shipping (docker save / docker load, idempotent) on throw-away images,
#      when a Docker engine answers;
#   6. the swarm runtime's node steps (as root, when this machine's engine is in no swarm), this
#      engine the manager and a second engine on this machine (supervisor/tests/two-nodes.sh)
#      the worker: swarm init, the worker's join, the node labels and the images, twice; a
#      manager or worker in the wrong swarm refused; then teardown.yml's swarm leave, twice.
#      Both engines leave the swarm at the end and the second one is removed, also on failure.
# Ends with one line: "ansible: N passed, N failed" and exits non-zero on any failure. The stack,
# moto, Pebble and the swarm are stopped on every exit.
#
# Environment:
#   GHOST_RUNTIME   runtime of the deploy test: docker (default) or process
#   GHOST_BIN_DIR   directory of the built binaries (default target/x86_64-unknown-linux-gnu/release,
#                   else .../debug,
#                   relative to the repository root)
#   GHOST_ANSIBLE_VENV  the virtual environment to use/create (default ansible/.venv)
#   GHOST_ANSIBLE_TESTS the sections to run, of: lint aws unit deploy images swarm (default: all)
set -uo pipefail

ANSIBLE_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
REPO_ROOT=$(cd "$ANSIBLE_DIR/.." && pwd)
VENV=${GHOST_ANSIBLE_VENV:-$ANSIBLE_DIR/.venv}
RUNTIME=${GHOST_RUNTIME:-docker}
# `ghost` reads GHOST_RUNTIME as its --runtime: the plays' ghost must take it from ghost.toml.
unset GHOST_RUNTIME
cd "$ANSIBLE_DIR" || exit 1

PASSED=0
FAILED=0
SKIPPED=0
TMP=$(mktemp -d -t ghost-ansible.XXXXXX)
LOGS=$TMP/logs
mkdir -p "$LOGS"
MOTO_PID=""
DEPLOY_PREFIX=$TMP/deploy/prefix
DEPLOY_STATE=$TMP/deploy/state
# The deployed gateway's ports (the defaults with a certificate; Pebble's httpPort follows), and
# Pebble's API and management ports (its own defaults, on loopback).
DEPLOY_HTTP_PORT=80
DEPLOY_HTTPS_PORT=443
PEBBLE_PORT=14000
PEBBLE_MGMT_PORT=15000
PEBBLE_PID=""
TEST_IMAGES=(ghost-stream-ansible-test/a:latest ghost-stream-ansible-test/b:latest)
IMAGES_MADE=0
SECTIONS=" ${GHOST_ANSIBLE_TESTS:-lint aws unit deploy images swarm} "
# Shared with the Rust suite's single-node swarm tests: whoever holds it may put this machine's
# engine in a swarm, and must take it out again before letting go.
SWARM_LOCK=${TMPDIR:-/tmp}/ghost-stream-swarm.lock
SWARM_MADE=0
# The second engine of the swarm test (supervisor/tests/two-nodes.sh engine) may be up.
WORKER_ENGINE=0

say() { printf 'ansible: %s\n' "$*"; }

summary() {
    local line="ansible: $PASSED passed, $FAILED failed"
    [ "$SKIPPED" -gt 0 ] && line="$line, $SKIPPED skipped"
    echo "$line"
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    # This shell still holds the swarm lock (fd 9) while SWARM_MADE=1 or WORKER_ENGINE=1;
    # exiting releases it. The worker goes first: its node entry is in this engine's swarm.
    if [ "$WORKER_ENGINE" = 1 ]; then
        worker_engine_down >/dev/null 2>&1 || true
    fi
    if [ "$SWARM_MADE" = 1 ]; then
        docker swarm leave --force >/dev/null 2>&1 || true
    fi
    if [ -x "$DEPLOY_PREFIX/bin/ghost" ]; then
        "$DEPLOY_PREFIX/bin/ghost" --state-dir "$DEPLOY_STATE" down >/dev/null 2>&1 || true
    fi
    if [ -n "$MOTO_PID" ] && kill -0 "$MOTO_PID" 2>/dev/null; then
        kill "$MOTO_PID" 2>/dev/null
        wait "$MOTO_PID" 2>/dev/null
    fi
    # After the stack: it may still be asking Pebble for a renewal while it stops.
    if [ -n "$PEBBLE_PID" ] && kill -0 "$PEBBLE_PID" 2>/dev/null; then
        kill "$PEBBLE_PID" 2>/dev/null
        wait "$PEBBLE_PID" 2>/dev/null
    fi
    if [ "$IMAGES_MADE" = 1 ]; then
        docker rmi -f "${TEST_IMAGES[@]}" >/dev/null 2>&1 || true
    fi
    rm -rf "$TMP"
    exit "$rc"
}
trap cleanup EXIT
trap 'FAILED=$((FAILED + 1)); say "FAIL  interrupted"; summary; exit 130' INT TERM

pass() { PASSED=$((PASSED + 1)); say "ok    $1"; }
fail() {
    FAILED=$((FAILED + 1))
    say "FAIL  $1"
    if [ -n "${2:-}" ] && [ -f "$2" ]; then
        echo "----- last lines of $(basename "$2") -----"
        tail -n 60 "$2"
        echo "-----"
    fi
}
skip() { SKIPPED=$((SKIPPED + 1)); say "skip  $1"; }
section() { case $SECTIONS in *" $1 "*) return 0 ;; esac; return 1; }

# check NAME COMMAND...: one check, its output kept in a log shown on failure.
check() {
    local name=$1 log
    shift
    log=$LOGS/$(printf '%02d' $((PASSED + FAILED + SKIPPED + 1)))-check.log
    if "$@" >"$log" 2>&1; then pass "$name"; else fail "$name" "$log"; fi
}

# play NAME WANT ARGS...: one ansible-playbook run; WANT is "some" (changes expected), "zero"
# (the second run of an idempotent playbook) or "any". Fails on a non-zero exit, a failed or
# unreachable host, or a change count that does not match.
play() {
    local name=$1 want=$2 log
    shift 2
    log=$LOGS/$(printf '%02d' $((PASSED + FAILED + SKIPPED + 1)))-play.log
    if "$VENV/bin/ansible-playbook" "$@" >"$log" 2>&1 \
        && "$VENV/bin/python" tests/helpers.py recap "$log" "$want" >>"$log" 2>&1; then
        pass "$name ($(tail -n 1 "$log"))"
        return 0
    fi
    fail "$name" "$log"
    return 1
}

# A run that must fail (a refused configuration).
play_refused() {
    local name=$1 pattern=$2 log
    shift 2
    log=$LOGS/$(printf '%02d' $((PASSED + FAILED + SKIPPED + 1)))-refused.log
    if ! "$VENV/bin/ansible-playbook" "$@" >"$log" 2>&1 && grep -q -- "$pattern" "$log"; then
        pass "$name"
    else
        fail "$name (expected a failure mentioning: $pattern)" "$log"
    fi
}

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

# --------------------------------------------------------------------------------------------
# The virtual environment (reused while the pinned requirements are unchanged)
# --------------------------------------------------------------------------------------------
setup_venv() {
    local stamp want
    want=$(cat requirements.txt tests/requirements.txt; python3 --version 2>&1)
    want=$(printf '%s' "$want" | sha256sum | cut -d' ' -f1)
    stamp=$VENV/.ghost-requirements
    if [ -x "$VENV/bin/ansible-playbook" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
        return 0
    fi
    say "creating the virtual environment ($VENV)"
    rm -rf "$VENV"
    if ! python3 -m venv "$VENV" >"$LOGS/venv.log" 2>&1; then
        rm -rf "$VENV"
        say "python3 -m venv failed; installing python3-venv"
        as_root apt-get update -qq >>"$LOGS/venv.log" 2>&1
        DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq python3-venv >>"$LOGS/venv.log" 2>&1
        python3 -m venv "$VENV" >>"$LOGS/venv.log" 2>&1 || { cat "$LOGS/venv.log"; return 1; }
    fi
    "$VENV/bin/pip" install --disable-pip-version-check -q -r tests/requirements.txt \
        >>"$LOGS/venv.log" 2>&1 || { tail -n 40 "$LOGS/venv.log"; return 1; }
    echo "$want" >"$stamp"
}

if ! setup_venv; then
    fail "virtual environment (pip install -r tests/requirements.txt)"
    summary
    exit 1
fi

export PATH=$VENV/bin:$PATH
# Ansible: this directory's configuration, plain output, and no stray variables of the product
# (ghost reads GHOST_BIN_DIR and GHOST_STATE_DIR itself).
export ANSIBLE_CONFIG=$ANSIBLE_DIR/ansible.cfg
export ANSIBLE_NOCOLOR=1 ANSIBLE_FORCE_COLOR=0 PY_COLORS=0
export ANSIBLE_LOCALHOST_WARNING=False ANSIBLE_INVENTORY_UNPARSED_WARNING=False
export ANSIBLE_DEPRECATION_WARNINGS=False
# Never real AWS: dummy credentials, no profile or config file, no instance metadata.
export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_DEFAULT_REGION=us-east-1
export AWS_CONFIG_FILE=$TMP/aws-config AWS_SHARED_CREDENTIALS_FILE=$TMP/aws-credentials
export AWS_EC2_METADATA_DISABLED=true
unset AWS_PROFILE AWS_SESSION_TOKEN AWS_SECURITY_TOKEN AWS_URL EC2_URL AWS_ENDPOINT_URL \
    AWS_ENDPOINT_URL_EC2 GHOST_STATE_DIR
: >"$AWS_CONFIG_FILE"
: >"$AWS_SHARED_CREDENTIALS_FILE"

# The binaries: GHOST_BIN_DIR, else the release build, else the debug build.
if [ -n "${GHOST_BIN_DIR:-}" ]; then
    case $GHOST_BIN_DIR in /*) BIN_DIR=$GHOST_BIN_DIR ;; *) BIN_DIR=$REPO_ROOT/$GHOST_BIN_DIR ;; esac
elif [ -x "$REPO_ROOT/target/x86_64-unknown-linux-gnu/release/ghost" ]; then
    BIN_DIR=$REPO_ROOT/target/x86_64-unknown-linux-gnu/release
else
    BIN_DIR=$REPO_ROOT/target/x86_64-unknown-linux-gnu/debug
fi
unset GHOST_BIN_DIR

# This machine as the target of the deploy tests.
LOCAL_INVENTORY=$TMP/local-inventory.yml
cat >"$LOCAL_INVENTORY" <<'EOF'
all:
  children:
    ghost_stream:
      hosts:
        local-target:
          ansible_connection: local
          ansible_python_interpreter: "{{ ansible_playbook_python }}"
EOF
# The same, as the manager of a one-node swarm (the swarm runtime wants a ghost_manager group).
LOCAL_MANAGER_INVENTORY=$TMP/local-manager-inventory.yml
cat >"$LOCAL_MANAGER_INVENTORY" <<'EOF'
all:
  children:
    ghost_stream:
      children:
        ghost_manager:
          hosts:
            local-manager:
              ansible_connection: local
              ansible_python_interpreter: "{{ ansible_playbook_python }}"
EOF

# --------------------------------------------------------------------------------------------
# 1. Lint and syntax
# --------------------------------------------------------------------------------------------
lint_tests() {
    check "ansible-lint, production profile" "$VENV/bin/ansible-lint" --strict
    for playbook in provision.yml deploy.yml teardown.yml; do
        check "syntax-check $playbook" "$VENV/bin/ansible-playbook" --syntax-check "$playbook"
    done
}
section lint && lint_tests

# --------------------------------------------------------------------------------------------
# 2. provision.yml and teardown.yml against moto (EC2 emulator on loopback)
# --------------------------------------------------------------------------------------------
aws_tests() {
    local cluster
    MOTO_PORT=$("$VENV/bin/python" tests/helpers.py free-port)
    MOTO=http://127.0.0.1:$MOTO_PORT
    MOTO_AMIS_PATH=$ANSIBLE_DIR/tests/moto-amis.json \
        "$VENV/bin/moto_server" -H 127.0.0.1 -p "$MOTO_PORT" >"$LOGS/moto.log" 2>&1 &
    MOTO_PID=$!
    if ! "$VENV/bin/python" tests/helpers.py wait-http "$MOTO/moto-api/" 30 >>"$LOGS/moto.log" 2>&1; then
        fail "moto_server did not start" "$LOGS/moto.log"
        return
    fi
    OPERATOR_CIDR=198.51.100.7/32
    AWS_VARS=$TMP/aws-vars.yml
    cat >"$AWS_VARS" <<EOF
ghost_aws_endpoint_url: $MOTO
ghost_operator_cidr: $OPERATOR_CIDR
ghost_wait_for_ssh: false
ghost_key_private_key_file: $TMP/keys/ghost-stream.pem
ghost_inventory_file: $TMP/inventory/provisioned.yml
EOF
    # No -i: the AWS plays run on localhost only, and teardown's stop step has no host (the
    # emulator's addresses are not real, so nothing may connect to them).
    play_refused "provision refuses to run without an operator CIDR" "ghost_operator_cidr" \
        provision.yml -e "@$AWS_VARS" -e ghost_operator_cidr=
    play "provision against moto, first run" some provision.yml -e "@$AWS_VARS"
    play "provision against moto, second run changes nothing" zero provision.yml -e "@$AWS_VARS"
    check "provision left the instance, security group, key pair and inventory as expected" \
        "$VENV/bin/python" tests/helpers.py provisioned "$MOTO" ghost-stream ghost-stream \
        "$OPERATOR_CIDR" ami-0deb12a0000000002 "$TMP/keys/ghost-stream.pem" \
        "$TMP/inventory/provisioned.yml" created
    check "the written inventory puts the single host in ghost_manager, no workers" bash -c \
        '"$2/bin/ansible-inventory" -i "$3" --list >"$4" &&
         "$2/bin/python" tests/helpers.py written-inventory "$4" "$1" ghost-stream' \
        _ "$MOTO" "$VENV" "$TMP/inventory/provisioned.yml" "$TMP/written.json"
    check "inventory/aws_ec2.yml finds the instance by its tag" bash -c \
        'AWS_URL="$1" "$2/bin/ansible-inventory" -i inventory/aws_ec2.yml --list >"$3" &&
         "$2/bin/python" tests/helpers.py inventory "$3" "$1" ghost-stream' \
        _ "$MOTO" "$VENV" "$TMP/aws_ec2.json"
    play "teardown against moto, first run" some teardown.yml -e "@$AWS_VARS"
    play "teardown against moto, second run changes nothing" zero teardown.yml -e "@$AWS_VARS"
    check "teardown removed the instance, security group, key pair and inventory" \
        "$VENV/bin/python" tests/helpers.py gone "$MOTO" ghost-stream ghost-stream deleted \
        "$TMP/inventory/provisioned.yml"

    # An operator's own key pair: used, never adopted or deleted. Without ACME (and no
    # certificate of the operator's) the gateway is plain HTTP on 8080, and so is its rule.
    "$VENV/bin/python" tests/helpers.py create-key "$MOTO" operator-key >>"$LOGS/moto.log" 2>&1
    play_refused "provision refuses to take over a key pair it did not create" "was not created here" \
        provision.yml -e "@$AWS_VARS" -e ghost_name=ghost-stream-b -e ghost_key_name=operator-key
    if play "provision with an existing key pair, ACME off" some provision.yml -e "@$AWS_VARS" \
        -e ghost_name=ghost-stream-b -e ghost_key_name=operator-key -e ghost_key_create=false \
        -e ghost_acme=false; then
        check "without ACME the security group opens the gateway's 8080/tcp, not 80 and 443" \
            "$VENV/bin/python" tests/helpers.py rules "$MOTO" ghost-stream-b "$OPERATOR_CIDR" http
        play "teardown with an existing key pair" some teardown.yml -e "@$AWS_VARS" \
            -e ghost_name=ghost-stream-b -e ghost_key_name=operator-key -e ghost_key_create=false
    else
        skip "teardown with an existing key pair (provision failed)"
    fi
    check "teardown kept the existing key pair and removed the rest" \
        "$VENV/bin/python" tests/helpers.py gone "$MOTO" ghost-stream-b operator-key kept \
        "$TMP/inventory/provisioned.yml"

    # A 3-node swarm cluster under another name: a manager and two workers in one security
    # group, Swarm's ports and the relays' ops range open between the members only. Teardown
    # gets no ghost_nodes: it must find the workers by their tags.
    cluster=(-e "@$AWS_VARS" -e ghost_name=ghost-swarm -e ghost_key_name=ghost-swarm
        -e "ghost_key_private_key_file=$TMP/keys/ghost-swarm.pem"
        -e "ghost_inventory_file=$TMP/inventory/swarm.yml")
    play "provision a 3-node cluster, first run" some provision.yml "${cluster[@]}" -e ghost_nodes=3
    play "provision a 3-node cluster, second run changes nothing" zero provision.yml "${cluster[@]}" \
        -e ghost_nodes=3
    check "the cluster: 3 instances (1 manager, 2 workers by tag), Swarm and relay-ops rules from the group only" \
        "$VENV/bin/python" tests/helpers.py cluster "$MOTO" ghost-swarm "$OPERATOR_CIDR" 3
    check "the written inventory has groups ghost_manager and ghost_workers, with private addresses" bash -c \
        '"$2/bin/ansible-inventory" -i "$3" --list >"$4" &&
         "$2/bin/python" tests/helpers.py written-inventory "$4" "$1" ghost-swarm' \
        _ "$MOTO" "$VENV" "$TMP/inventory/swarm.yml" "$TMP/swarm-written.json"
    check "inventory/aws_ec2.yml groups the cluster's manager and workers by tag" bash -c \
        'AWS_URL="$1" "$2/bin/ansible-inventory" -i inventory/aws_ec2.yml --list >"$3" &&
         "$2/bin/python" tests/helpers.py inventory "$3" "$1" ghost-swarm' \
        _ "$MOTO" "$VENV" "$TMP/swarm-aws_ec2.json"
    play_refused "provision refuses fewer nodes than the cluster has" "workers beyond ghost_nodes" \
        provision.yml "${cluster[@]}" -e ghost_nodes=2
    play "teardown of the cluster, first run" some teardown.yml "${cluster[@]}"
    play "teardown of the cluster, second run changes nothing" zero teardown.yml "${cluster[@]}"
    check "teardown removed the 3 instances, the security group, the key pair and the inventory" \
        "$VENV/bin/python" tests/helpers.py gone "$MOTO" ghost-swarm ghost-swarm deleted \
        "$TMP/inventory/swarm.yml"
}
if section aws; then
    aws_tests
    if [ -n "$MOTO_PID" ]; then
        kill "$MOTO_PID" 2>/dev/null
        wait "$MOTO_PID" 2>/dev/null
        MOTO_PID=""
    fi
fi

# --------------------------------------------------------------------------------------------
# 3. The systemd unit (the deploy test below runs without systemd) and ghost.toml: rendered by the
#    role for each runtime, the unit then checked by systemd-analyze verify where systemd is
#    installed, the file by `ghost config show` against the flags it replaces.
# --------------------------------------------------------------------------------------------
ACME_LE=https://acme-v02.api.letsencrypt.org/directory
# unit_check RUNTIME WANT [-e ...]: the unit and ghost.toml rendered with the given variables;
# ExecStart must run `ghost --state-dir DIR up --config FILE`, and FILE must give the settings the
# flags `--runtime RUNTIME WANT` give.
unit_check() {
    local runtime=$1 want=$2 dir rc
    shift 2
    dir=$TMP/unit/$runtime-$(printf '%s' "$*" | sha256sum | cut -c1-8)
    local args=(-i "$LOCAL_INVENTORY" -e ghost_runtime="$runtime")
    # The swarm runtime is not named: it must be the default with several nodes, on the manager.
    [ "$runtime" = swarm ] && args=(-i "$LOCAL_MANAGER_INVENTORY" -e ghost_nodes=3)
    mkdir -p "$dir/prefix/bin"
    ln -sf "$BIN_DIR/ghost" "$dir/prefix/bin/ghost"
    "$VENV/bin/ansible-playbook" tests/unit.yml "${args[@]}" \
        -e ghost_prefix="$dir/prefix" -e ghost_systemd_unit_dir="$dir" -e ghost_config_file="$dir/ghost.toml" \
        -e ghost_advertise_host=stream.example.com "$@" || return 1
    cat "$dir/ghost-stream.service" "$dir/ghost.toml"
    grep -qxF "ExecStart=$dir/prefix/bin/ghost --state-dir /var/lib/ghost-stream up --config $dir/ghost.toml" \
        "$dir/ghost-stream.service" || { echo "unexpected ExecStart, want: ... up --config $dir/ghost.toml"; return 1; }
    "$BIN_DIR/ghost" --state-dir "$dir/none" config show --json --config "$dir/ghost.toml" >"$dir/file.json" &&
        "$BIN_DIR/ghost" --state-dir "$dir/none" config show --json --runtime "$runtime" $want >"$dir/flags.json" &&
        "$VENV/bin/python" tests/helpers.py same-settings "$dir/file.json" "$dir/flags.json" ||
        { echo "ghost.toml does not give: --runtime $runtime $want"; return 1; }
    # The gateway's ports 80 and 443, as the unprivileged service user.
    grep -qxF "AmbientCapabilities=CAP_NET_BIND_SERVICE" "$dir/ghost-stream.service" ||
        { echo "missing AmbientCapabilities=CAP_NET_BIND_SERVICE"; return 1; }
    # The supervisor of the docker and swarm runtimes drives the local engine.
    if [ "$runtime" = process ]; then
        ! grep -qE "^(Requires|SupplementaryGroups)=.*docker" "$dir/ghost-stream.service" ||
            { echo "the process runtime needs no docker"; return 1; }
    else
        grep -qxF "Requires=docker.service" "$dir/ghost-stream.service" &&
            grep -qxF "SupplementaryGroups=docker" "$dir/ghost-stream.service" ||
            { echo "missing Requires=docker.service or SupplementaryGroups=docker"; return 1; }
    fi
    if command -v systemd-analyze >/dev/null; then
        systemd-analyze verify "$dir/ghost-stream.service" >"$dir/verify.log" 2>&1
        rc=$?
        cat "$dir/verify.log"
        [ "$rc" -eq 0 ] && ! grep -qiE "unknown|ignoring|invalid|failed" "$dir/verify.log"
    else
        echo "systemd-analyze is not installed: rendered only"
    fi
}
unit_tests() {
    local runtime base="--relays 2 --max-relays 8 --relay-capacity 200"
    if [ ! -x "$BIN_DIR/ghost" ]; then
        fail "systemd unit: $BIN_DIR/ghost is missing (build the workspace, or set GHOST_BIN_DIR)"
        return
    fi
    # The default: a certificate by ACME (Let's Encrypt) for the advertised host, on 80 and 443.
    for runtime in docker process swarm; do
        check "systemd unit ($runtime runtime, ACME by default) renders and passes systemd-analyze verify" \
            unit_check "$runtime" "$base --public --advertise-host stream.example.com --http-port 80 --https-port 443 --acme --acme-directory $ACME_LE"
    done
    check "systemd unit: ghost_domain is the advertised host; every ACME setting is passed" \
        unit_check docker "$base --public --advertise-host live.example.org --http-port 80 --https-port 443 --acme --acme-directory https://acme.test/dir --acme-email ops@example.org --acme-profile classic --acme-root /etc/ghost/test-ca.pem" \
        -e ghost_domain=live.example.org -e ghost_acme_directory=https://acme.test/dir \
        -e ghost_acme_email=ops@example.org -e ghost_acme_profile=classic -e ghost_acme_root=/etc/ghost/test-ca.pem
    check "systemd unit: the operator's own certificate instead of ACME, on 80 and 443" \
        unit_check process "$base --public --advertise-host stream.example.com --http-port 80 --https-port 443 --tls-cert /etc/ghost/cert.pem --tls-key /etc/ghost/key.pem" \
        -e ghost_acme=false -e ghost_tls_cert=/etc/ghost/cert.pem -e ghost_tls_key=/etc/ghost/key.pem
    check "systemd unit: ACME off and no certificate keeps plain HTTP on 8080" \
        unit_check docker "$base --public --advertise-host stream.example.com --http-port 8080" -e ghost_acme=false
}
section unit && unit_tests

# --------------------------------------------------------------------------------------------
# 4. deploy.yml for real to this machine, with its certificate from a local ACME server (Pebble)
# --------------------------------------------------------------------------------------------
# Pebble validates http-01 for an IP identifier by connecting to that address on its httpPort:
# the stack advertises 127.0.0.1 and its gateway's HTTP port is Pebble's httpPort. Pebble's API
# is HTTPS with a certificate made here (Debian's package ships none), from a CA of our own that
# ghost trusts through --acme-root; the certificates Pebble issues chain to another root, made
# when Pebble starts and served on its management port, which the checks trust instead.
start_pebble() {
    local dir=$1
    mkdir -p "$dir"
    cat >"$dir/api.ext" <<EOF
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1, DNS:localhost
EOF
    {
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
            -subj "/CN=Ghost Stream test: Pebble API CA" -keyout "$dir/api-ca.key" -out "$dir/api-ca.pem" \
            -addext "basicConstraints = critical, CA:TRUE" -addext "keyUsage = critical, keyCertSign, cRLSign" &&
            openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=127.0.0.1" \
                -keyout "$dir/api.key" -out "$dir/api.csr" &&
            openssl x509 -req -in "$dir/api.csr" -CA "$dir/api-ca.pem" -CAkey "$dir/api-ca.key" \
                -CAcreateserial -days 2 -extfile "$dir/api.ext" -out "$dir/api.pem"
    } >"$LOGS/pebble-certs.log" 2>&1 || { fail "pebble: openssl could not make its API certificate" "$LOGS/pebble-certs.log"; return 1; }
    # Both profiles, so a Pebble that knows profiles accepts `shortlived` (ghost's choice for an
    # IP address); an older one ignores them.
    cat >"$dir/pebble.json" <<EOF
{
  "pebble": {
    "listenAddress": "127.0.0.1:$PEBBLE_PORT",
    "managementListenAddress": "127.0.0.1:$PEBBLE_MGMT_PORT",
    "certificate": "$dir/api.pem",
    "privateKey": "$dir/api.key",
    "httpPort": $DEPLOY_HTTP_PORT,
    "tlsPort": $DEPLOY_HTTPS_PORT,
    "ocspResponderURL": "",
    "externalAccountBindingRequired": false,
    "profiles": {
      "default": {"description": "Pebble's default", "validityPeriod": 7776000},
      "shortlived": {"description": "as Let's Encrypt's", "validityPeriod": 518400}
    }
  }
}
EOF
    # No random validation delay; no nonce rejected on purpose (a real CA rarely does it, and a
    # deploy test must not depend on the client's retry).
    PEBBLE_VA_NOSLEEP=1 PEBBLE_WFE_NONCEREJECT=0 pebble -config "$dir/pebble.json" >"$LOGS/pebble.log" 2>&1 &
    PEBBLE_PID=$!
    if ! "$VENV/bin/python" tests/helpers.py wait-http "https://127.0.0.1:$PEBBLE_PORT/dir" 30 "$dir/api-ca.pem" \
        >>"$LOGS/pebble.log" 2>&1; then
        fail "pebble did not start" "$LOGS/pebble.log"
        return 1
    fi
    if ! "$VENV/bin/python" tests/helpers.py fetch "https://127.0.0.1:$PEBBLE_MGMT_PORT/roots/0" \
        "$dir/api-ca.pem" "$dir/issuer-root.pem" >>"$LOGS/pebble.log" 2>&1; then
        fail "pebble: its issuing root could not be fetched" "$LOGS/pebble.log"
        return 1
    fi
}

stop_pebble() {
    if [ -n "$PEBBLE_PID" ] && kill -0 "$PEBBLE_PID" 2>/dev/null; then
        kill "$PEBBLE_PID" 2>/dev/null
        wait "$PEBBLE_PID" 2>/dev/null
    fi
    PEBBLE_PID=""
}

deploy_tests() {
    local src=$TMP/src pebble=$TMP/pebble bin before after first_log
    # A gateway HTTP port that is not Pebble's httpPort: the CA's validation finds nothing there.
    local astray_http_port=8081
    # Both runtimes need all five: the process runtime runs the service binaries, the docker
    # runtime builds its images from them (deploy.yml runs `ghost images build`).
    case $RUNTIME in
        process | docker) bins=(ghost ghost-control ghost-ingest ghost-relay ghost-gateway) ;;
        *) fail "GHOST_RUNTIME must be docker or process, not '$RUNTIME'"; return ;;
    esac
    for bin in "${bins[@]}"; do
        if [ ! -x "$BIN_DIR/$bin" ]; then
            fail "deploy: $BIN_DIR/$bin is missing (build the workspace, or set GHOST_BIN_DIR)"
            return
        fi
    done
    for bin in pebble openssl; do
        if ! command -v "$bin" >/dev/null; then
            fail "deploy: $bin is missing (the Debian packages pebble and openssl)"
            return
        fi
    done
    # The stack binds its ports on all addresses (--public), Pebble its two on loopback: they
    # must be free.
    if ! "$VENV/bin/python" tests/helpers.py ports-free \
        "7070,7071,7000,$DEPLOY_HTTP_PORT,$DEPLOY_HTTPS_PORT,$astray_http_port,9100,9101,9201,9202,1935,$PEBBLE_PORT,$PEBBLE_MGMT_PORT" \
        4433,4500,4501 >"$LOGS/ports.log" 2>&1; then
        fail "deploy: the stack's or Pebble's ports are taken on this machine; not deploying" "$LOGS/ports.log"
        return
    fi
    start_pebble "$pebble" || return

    # The binaries to ship, staged so the restart check can change one without touching the
    # build output: ghost copied, the service binaries linked.
    mkdir -p "$src"
    cp "$BIN_DIR/ghost" "$src/ghost"
    for bin in "${bins[@]:1}"; do ln -s "$BIN_DIR/$bin" "$src/$bin"; done

    # ghost_acme is on by default; the advertised host is an IP address, so the certificate is
    # an IP address certificate, as on EC2 without ghost_domain.
    cat >"$TMP/deploy-vars.yml" <<EOF
ghost_runtime: $RUNTIME
ghost_service_manager: none
ghost_become: false
ghost_install_docker: false
ghost_prefix: $DEPLOY_PREFIX
ghost_state_dir: $DEPLOY_STATE
ghost_bin_src_dir: $src
ghost_advertise_host: 127.0.0.1
ghost_http_port: $DEPLOY_HTTP_PORT
ghost_https_port: $DEPLOY_HTTPS_PORT
ghost_acme_directory: https://127.0.0.1:$PEBBLE_PORT/dir
ghost_acme_root: $pebble/api-ca.pem
ghost_https_check_ca: $pebble/issuer-root.pem
ghost_images_tarball: $TMP/build/ghost-stream-images.tar
ghost_images_remote_tarball: $TMP/deploy/images/ghost-stream-images.tar
EOF
    local args=(-i "$LOCAL_INVENTORY" -e "@$TMP/deploy-vars.yml")
    local https_health=https://127.0.0.1:$DEPLOY_HTTPS_PORT/health
    local viewer_url=https://127.0.0.1/
    [ "$DEPLOY_HTTPS_PORT" = 443 ] || viewer_url=https://127.0.0.1:$DEPLOY_HTTPS_PORT/
    status_json() { "$DEPLOY_PREFIX/bin/ghost" --state-dir "$DEPLOY_STATE" status --json >"$1" 2>>"$LOGS/status.log"; }

    # Issuance that fails fails the deploy with ghost's error, and leaves nothing running.
    play_refused "a certificate the CA cannot validate fails the deploy, naming the http-01 challenge" \
        "http-01" deploy.yml "${args[@]}" -e ghost_http_port=$astray_http_port
    check "after the failed issuance nothing is running" \
        "$VENV/bin/python" tests/helpers.py stopped 7070 "$astray_http_port" "$DEPLOY_HTTPS_PORT"

    first_log=$LOGS/$(printf '%02d' $((PASSED + FAILED + SKIPPED + 1)))-play.log
    play "deploy ($RUNTIME runtime, its certificate from Pebble by ACME), first run" some deploy.yml "${args[@]}" || return
    play "deploy, second run changes nothing" zero deploy.yml "${args[@]}"
    status_json "$TMP/status1.json"
    check "the deployed stack is healthy (/api/status ready, gateway /health over HTTP and HTTPS, ghost status)" \
        "$VENV/bin/python" tests/helpers.py healthy 7070 "$DEPLOY_HTTP_PORT" "$TMP/status1.json" \
        "$https_health" "$pebble/issuer-root.pem"
    check "the play checked the certificate from the control machine and printed $viewer_url" bash -c \
        'grep -F "Check that the gateway answers HTTPS with a valid certificate" -A 12 "$1" | grep -q "^ok: " &&
         grep -F "Viewers open:    $2" "$1"' _ "$first_log" "$viewer_url"
    check "the ACME account key and certificate are in the state directory, the owner's alone" bash -c \
        'ls -la "$1/acme" && [ -n "$(find "$1/acme" -type f)" ] && [ -z "$(find "$1/acme" -perm /077)" ]' \
        _ "$DEPLOY_STATE"
    check "shell completions (bash, zsh, fish) and the manual page are installed under the prefix" bash -c \
        'grep -q "complete -F _ghost" "$1/share/bash-completion/completions/ghost" &&
         grep -q "^#compdef ghost" "$1/share/zsh/site-functions/_ghost" &&
         grep -q "complete -c ghost" "$1/share/fish/vendor_completions.d/ghost.fish" &&
         grep -q "^.TH ghost 1" "$1/share/man/man1/ghost.1"' _ "$DEPLOY_PREFIX"

    # A new ghost binary: the next deploy restarts the stack.
    before=$("$VENV/bin/python" tests/helpers.py service-pids "$TMP/status1.json")
    printf '\n' >>"$src/ghost"
    if play "deploy of a new binary" some deploy.yml "${args[@]}"; then
        status_json "$TMP/status2.json"
        after=$("$VENV/bin/python" tests/helpers.py service-pids "$TMP/status2.json" 2>/dev/null)
        check "a new binary restarted the stack, healthy again (HTTPS too)" bash -c \
            'echo "before: $1"; echo "after:  $2"; [ -n "$1" ] && [ -n "$2" ] && [ "$1" != "$2" ] &&
             "$3/bin/python" tests/helpers.py healthy 7070 "$5" "$4" "$6" "$7"' \
            _ "$before" "$after" "$VENV" "$TMP/status2.json" "$DEPLOY_HTTP_PORT" "$https_health" \
            "$pebble/issuer-root.pem"
    fi

    play "teardown stops the stack (ghost down)" some teardown.yml "${args[@]}" -e ghost_teardown_aws=false
    play "teardown, second run changes nothing" zero teardown.yml "${args[@]}" -e ghost_teardown_aws=false
    check "the stack is stopped, the gateway's ports closed" \
        "$VENV/bin/python" tests/helpers.py stopped 7070 "$DEPLOY_HTTP_PORT" "$DEPLOY_HTTPS_PORT"
}
if section deploy; then
    deploy_tests
    stop_pebble
fi

# --------------------------------------------------------------------------------------------
# 5. Image shipping (docker save on the control machine, docker load on the target)
# --------------------------------------------------------------------------------------------
# Two throw-away images with contents of their own (new image IDs on every run).
make_test_images() {
    local dir=$TMP/test-images image
    mkdir -p "$dir/rootfs"
    for image in "${TEST_IMAGES[@]}"; do
        echo "$image $$ $(date +%s%N)" >"$dir/rootfs/content"
        tar -C "$dir/rootfs" -cf "$dir/rootfs.tar" content
        docker import "$dir/rootfs.tar" "$image" >>"$LOGS/images.log" 2>&1 || return 1
        IMAGES_MADE=1
    done
}

images_tests() {
    local dir=$TMP/images-test vars=$TMP/images-vars.yml inv=$LOCAL_INVENTORY ids_before ids_after
    make_test_images || return 1
    ids_before=$(docker image inspect --format '{{.Id}}' "${TEST_IMAGES[@]}")
    cat >"$vars" <<EOF
ghost_images: [${TEST_IMAGES[0]}, ${TEST_IMAGES[1]}]
ghost_images_tarball: $dir/control/images.tar
ghost_images_remote_tarball: $dir/target/images.tar
ghost_images_save: true
ghost_images_build: false
EOF
    # Save (the engine has the images, so nothing to load), then remove them from the engine:
    # the next run must load them, and the one after must do nothing.
    play "images: docker save of a new image set" some tests/images.yml -i "$inv" -e "@$vars" || return 0
    docker rmi -f "${TEST_IMAGES[@]}" >>"$LOGS/images.log" 2>&1
    play "images: docker load of images the engine lacks" some tests/images.yml -i "$inv" -e "@$vars" \
        -e ghost_images_save=false
    play "images: second load changes nothing" zero tests/images.yml -i "$inv" -e "@$vars"
    ids_after=$(docker image inspect --format '{{.Id}}' "${TEST_IMAGES[@]}" 2>&1)
    check "images: the loaded images are the saved ones" test "$ids_before" = "$ids_after"
}
if ! section images; then
    :
elif docker info >/dev/null 2>&1; then
    images_tests || fail "images: could not make the test images" "$LOGS/images.log"
else
    skip "image shipping (no Docker engine answers)"
fi

# 6. The swarm runtime's node steps, on this machine's engine and a second one
# --------------------------------------------------------------------------------------------
# This engine is the manager. The worker is a second engine on this machine, in namespaces of its
# own behind a veth pair (supervisor/tests/two-nodes.sh engine: started in no swarm and without
# the images, so the play forms the swarm and ships them), driven through tests/worker-docker.
# The manager advertises the host's end of the pair, the worker its own end. Only as root, with
# the swarm lock held and this engine in no swarm; at the end the engines leave the swarm
# (teardown.yml, else below, else the EXIT trap) and the second engine is removed.
TWO_NODES=$REPO_ROOT/supervisor/tests/two-nodes.sh

# Removes the second engine (two-nodes.sh down, sharing the swarm lock when this shell holds it)
# and checks that it left nothing: no engine, no veth pair, no state directory.
worker_engine_down() {
    local state=${GHOST_TWO_NODES_DIR:-/tmp/ghost-two-nodes}
    if [ -e "/proc/$$/fd/9" ]; then
        GHOST_SWARM_LOCK_FD=9 bash "$TWO_NODES" down || return 1
    else
        bash "$TWO_NODES" down || return 1
    fi
    WORKER_ENGINE=0
    bash "$TWO_NODES" status
    ! ip link show ghost-2n0 2>/dev/null && [ ! -e "$state" ]
}

swarm_node_steps() {
    local dir=$TMP/swarm inv=$TMP/swarm/inventory.yml vars=$TMP/swarm/vars.yml args out log
    local net=${GHOST_TWO_NODES_NET:-10.231.0} cli=$ANSIBLE_DIR/tests/worker-docker
    local manager_addr worker_addr
    manager_addr=$net.1
    worker_addr=$net.2
    mkdir -p "$dir/control"
    # This engine has the images and the worker's lacks them, so the first run loads them on the
    # worker alone, which must make the manager's supervisor restart.
    make_test_images || { fail "swarm: could not make the test images" "$LOGS/images.log"; return; }
    docker save -o "$dir/control/images.tar" "${TEST_IMAGES[@]}" >>"$LOGS/images.log" 2>&1 ||
        { fail "swarm: could not save the test images" "$LOGS/images.log"; return; }

    WORKER_ENGINE=1
    if ! out=$(env -u GHOST_TWO_NODES_IMAGES GHOST_SWARM_LOCK_FD=9 bash "$TWO_NODES" engine 2>>"$LOGS/two-nodes.log"); then
        fail "swarm: two-nodes.sh engine could not start the second engine" "$LOGS/two-nodes.log"
        return
    fi
    GHOST_TEST_WORKER_HOST=$(sed -n 's/^DOCKER_HOST=//p' <<<"$out" | tail -n 1)
    export GHOST_TEST_WORKER_HOST
    check "swarm: the second engine runs, in no swarm and without the test images" bash -c \
        'state=$("$1" info --format "{{.Swarm.LocalNodeState}}") || exit 1
         echo "second engine: $GHOST_TEST_WORKER_HOST, swarm $state"
         [ "$state" = inactive ] && ! "$1" image inspect "$2" "$3"' \
        _ "$cli" "${TEST_IMAGES[@]}"

    cat >"$inv" <<EOF
all:
  children:
    ghost_stream:
      vars:
        ansible_connection: local
        ansible_python_interpreter: "{{ ansible_playbook_python }}"
      children:
        ghost_manager:
          hosts:
            swarm-manager:
              ghost_swarm_advertise_addr: $manager_addr
              ghost_node_public_address: manager.swarm-test.invalid
              ghost_images_remote_tarball: $dir/manager/images.tar
        ghost_workers:
          hosts:
            swarm-worker-1:
              ghost_docker_cli: $cli
              ghost_swarm_advertise_addr: $worker_addr
              ghost_node_public_address: worker-1.swarm-test.invalid
              ghost_images_remote_tarball: $dir/worker-1/images.tar
EOF
    # No ghost_runtime: the ghost_workers group must make it swarm.
    cat >"$vars" <<EOF
ghost_become: false
ghost_install_docker: false
ghost_service_manager: none
ghost_prefix: $dir/prefix
ghost_state_dir: $dir/state
ghost_advertise_host: swarm-test.invalid
ghost_images: [${TEST_IMAGES[0]}, ${TEST_IMAGES[1]}]
ghost_images_build: false
ghost_images_tarball: $dir/control/images.tar
EOF
    args=(-i "$inv" -e "@$vars")

    play "swarm: init, the worker's join, node labels and images on each node, first run" some \
        tests/swarm.yml "${args[@]}" -e ghost_test_expect_restart=true
    play "swarm: second run changes nothing (already a manager, already joined)" zero \
        tests/swarm.yml "${args[@]}" -e ghost_test_expect_restart=false
    check "swarm: this engine manages the swarm at $manager_addr; the second engine is its worker at $worker_addr; each node labelled" bash -c \
        'info=$(docker info --format "{{.Swarm.LocalNodeState}} {{.Swarm.ControlAvailable}} {{.Swarm.NodeAddr}} {{.Swarm.Nodes}}")
         winfo=$("$1" info --format "{{.Swarm.LocalNodeState}} {{.Swarm.ControlAvailable}} {{.Swarm.NodeAddr}} {{range .Swarm.RemoteManagers}}{{.Addr}}{{end}}")
         wnode=$("$1" info --format "{{.Swarm.NodeID}}")
         label=$(docker node inspect --format "{{index .Spec.Labels \"ghost.public-address\"}}" self)
         wlabel=$(docker node inspect --format "{{.Status.State}} {{.Status.Addr}} {{index .Spec.Labels \"ghost.public-address\"}}" "$wnode")
         echo "manager: $info; label: $label"; echo "worker: $winfo; node $wnode on the manager: $wlabel"
         [ "$info" = "active true $2 2" ] && [ "$label" = manager.swarm-test.invalid ] &&
         [ "$winfo" = "active false $3 $2:2377" ] && [ "$wlabel" = "ready $3 worker-1.swarm-test.invalid" ]' \
        _ "$cli" "$manager_addr" "$worker_addr"
    check "swarm: the images were shipped to each node; the second engine loaded them" bash -c \
        'cmp "$2/control/images.tar" "$2/manager/images.tar" && cmp "$2/control/images.tar" "$2/worker-1/images.tar" &&
         want=$(docker image inspect --format "{{.Id}}" "$3" "$4") &&
         have=$("$1" image inspect --format "{{.Id}}" "$3" "$4") &&
         echo "manager: $want" && echo "worker: $have" && [ "$want" = "$have" ]' \
        _ "$cli" "$dir" "${TEST_IMAGES[@]}"

    # The manager's host pointed at the second engine, a worker: it must be refused before
    # anything changes.
    play_refused "swarm: a manager that is a worker of a swarm is refused" "it is the manager here" \
        tests/swarm.yml "${args[@]}" -e "ghost_docker_cli=$cli" -e ghost_test_expect_restart=false

    # The worker leaves (its node entry removed) and makes a swarm of its own.
    check "swarm: the second engine leaves and makes a swarm of its own" bash -c \
        'node=$("$1" info --format "{{.Swarm.NodeID}}") && "$1" swarm leave --force && docker node rm --force "$node" &&
         "$1" swarm init --advertise-addr "$2" >/dev/null && "$1" info --format "{{.Swarm.NodeID}} {{.Swarm.ControlAvailable}}"' \
        _ "$cli" "$worker_addr"
    play_refused "swarm: a worker in another swarm is refused" "is in another swarm" \
        tests/swarm.yml "${args[@]}" -e ghost_test_expect_restart=false
    check "swarm: the second engine leaves its own swarm" "$cli" swarm leave --force
    play "swarm: a worker in no swarm any more joins again and is labelled (images unchanged)" some \
        tests/swarm.yml "${args[@]}" -e ghost_test_expect_restart=false
    check "swarm: the manager lists both nodes, ready" bash -c \
        'docker node ls; [ "$(docker node ls --format "{{.Status}}" | sort | uniq -c | xargs)" = "2 Ready" ]'

    log=$LOGS/$(printf '%02d' $((PASSED + FAILED + SKIPPED + 1)))-play.log
    play "swarm: teardown takes the worker, then the manager out of the swarm" some \
        teardown.yml "${args[@]}" -e ghost_teardown_aws=false
    play "swarm: teardown, second run changes nothing" zero teardown.yml "${args[@]}" -e ghost_teardown_aws=false
    # The order is the play's: the worker's leave reported changed before the manager's.
    check "swarm: both engines are in no swarm any more; the worker left first" bash -c \
        'state=$(docker info --format "{{.Swarm.LocalNodeState}}"); wstate=$("$1" info --format "{{.Swarm.LocalNodeState}}")
         echo "manager: $state; worker: $wstate"
         order=$(grep -E "^changed: \[swarm-(manager|worker-1)\]" "$2" | xargs); echo "leaves: $order"
         [ "$state" = inactive ] && [ "$wstate" = inactive ] &&
         [ "$order" = "changed: [swarm-worker-1] changed: [swarm-manager]" ]' \
        _ "$cli" "$log"
}

swarm_tests() {
    local state
    exec 9>>"$SWARM_LOCK" || { fail "swarm: cannot open the lock file $SWARM_LOCK"; return; }
    if ! flock -w 900 9; then
        skip "swarm: $SWARM_LOCK stayed locked for 15 minutes (another suite's swarm test)"
        exec 9>&-
        return
    fi
    state=$(docker info --format '{{.Swarm.LocalNodeState}}' 2>&1)
    if [ "$state" != inactive ]; then
        skip "swarm: this machine's engine is not free of a swarm ($state); not touching it"
    else
        SWARM_MADE=1
        swarm_node_steps
        if [ "$WORKER_ENGINE" = 1 ]; then
            check "swarm: two-nodes.sh down removes the second engine, its veth pair and its state" \
                worker_engine_down
        fi
        if [ "$(docker info --format '{{.Swarm.LocalNodeState}}' 2>&1)" != inactive ]; then
            docker swarm leave --force >>"$LOGS/swarm.log" 2>&1
        fi
        if [ "$(docker info --format '{{.Swarm.LocalNodeState}}' 2>&1)" != inactive ]; then
            # Keep the lock: the EXIT trap tries again, and nobody else starts on this engine.
            fail "swarm: docker swarm leave --force did not take the engine out of the swarm" "$LOGS/swarm.log"
            return
        fi
        SWARM_MADE=0
        # Keep the lock while the second engine is up: the EXIT trap tries again.
        [ "$WORKER_ENGINE" = 1 ] && return
    fi
    flock -u 9
    exec 9>&-
}
if ! section swarm; then
    :
elif ! docker info >/dev/null 2>&1; then
    skip "swarm node steps (no Docker engine answers)"
elif ! command -v flock >/dev/null; then
    fail "swarm node steps: flock (util-linux) is missing; it guards this machine's engine"
elif [ "$(id -u)" -ne 0 ]; then
    skip "swarm node steps (the second engine, supervisor/tests/two-nodes.sh, needs root)"
else
    swarm_tests
fi

summary
[ "$FAILED" -eq 0 ]
