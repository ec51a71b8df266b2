"""Checks used by tests/run.sh (run with the virtual environment's Python).

Each subcommand prints what it found and exits 0 when the check holds, 1 when it does not.
"""

from __future__ import annotations

import json
import os
import re
import socket
import stat
import sys
import time
import urllib.error
import urllib.request

RECAP = re.compile(r"^(\S+)\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)")


def recap(log_path: str, want_changed: str) -> int:
    """PLAY RECAP of an ansible-playbook log: no failure, and changed=0 (want "zero") or any."""
    hosts = {}
    in_recap = False
    with open(log_path, encoding="utf-8", errors="replace") as log:
        for line in log:
            if line.startswith("PLAY RECAP"):
                in_recap = True
                continue
            match = RECAP.match(line.strip()) if in_recap else None
            if match:
                host, _ok, changed, unreachable, failed = match.groups()
                hosts[host] = (int(changed), int(unreachable), int(failed))
    if not hosts:
        print("no PLAY RECAP in the log")
        return 1
    changed = sum(v[0] for v in hosts.values())
    bad = sum(v[1] + v[2] for v in hosts.values())
    print("recap: changed=%d failed+unreachable=%d (%s)" % (changed, bad, ", ".join(sorted(hosts))))
    if bad:
        return 1
    if want_changed == "zero" and changed != 0:
        return 1
    if want_changed == "some" and changed == 0:
        return 1
    return 0


def ec2(endpoint: str):
    import boto3

    return boto3.client("ec2", region_name="us-east-1", endpoint_url=endpoint)


def tags_of(resource) -> dict:
    return {t["Key"]: t["Value"] for t in resource.get("Tags") or []}


def live_instances(client, name: str) -> list:
    pages = client.describe_instances(
        Filters=[
            {"Name": "tag:Name", "Values": [name]},
            {"Name": "instance-state-name", "Values": ["pending", "running", "stopping", "stopped"]},
        ]
    )
    return [i for r in pages["Reservations"] for i in r["Instances"]]


def groups_named(client, name: str) -> list:
    return client.describe_security_groups(Filters=[{"Name": "group-name", "Values": [name]}])[
        "SecurityGroups"
    ]


def key_pairs(client, name: str) -> list:
    try:
        return client.describe_key_pairs(KeyNames=[name])["KeyPairs"]
    except Exception as exc:  # InvalidKeyPair.NotFound
        if "NotFound" in str(exc):
            return []
        raise


def rule_set(group) -> set:
    rules = set()
    for perm in group["IpPermissions"]:
        for rng in perm.get("IpRanges", []):
            rules.add((perm["IpProtocol"], perm.get("FromPort"), perm.get("ToPort"), rng["CidrIp"]))
        for rng in perm.get("Ipv6Ranges", []):
            rules.add((perm["IpProtocol"], perm.get("FromPort"), perm.get("ToPort"), rng["CidrIpv6"]))
    return rules


def provisioned(endpoint, name, key_name, operator_cidr, ami, key_file, inventory, key_created) -> int:
    """The instance, security group and key pair exist as provision.yml should leave them."""
    client = ec2(endpoint)
    problems = []
    instances = live_instances(client, name)
    if len(instances) != 1:
        problems.append("want 1 instance named %s, found %d" % (name, len(instances)))
    else:
        inst = instances[0]
        tags = tags_of(inst)
        if tags.get("ghost-stream") != "true":
            problems.append("instance tags: %s" % tags)
        if inst["InstanceType"] != "t3.small":
            problems.append("instance type %s" % inst["InstanceType"])
        if inst["ImageId"] != ami:
            problems.append("AMI %s, want %s (newest Debian 12 amd64)" % (inst["ImageId"], ami))
        if inst.get("KeyName") != key_name:
            problems.append("key %s, want %s" % (inst.get("KeyName"), key_name))
        if inst["State"]["Name"] != "running":
            problems.append("state %s" % inst["State"]["Name"])
        ip = inst.get("PublicIpAddress")
        if not ip:
            problems.append("no public IP")
        with open(inventory, encoding="utf-8") as handle:
            text = handle.read()
        if not ip or ("ansible_host: %s\n" % ip) not in text or inst["InstanceId"] not in text:
            problems.append("inventory %s does not name the instance's address" % inventory)
        group_ids = [g["GroupId"] for g in inst.get("SecurityGroups", [])]
    groups = groups_named(client, name)
    if len(groups) != 1:
        problems.append("want 1 security group named %s, found %d" % (name, len(groups)))
    else:
        group = groups[0]
        if tags_of(group).get("ghost-stream") != "true":
            problems.append("security group tags: %s" % tags_of(group))
        want = {
            ("udp", 4433, 4433, "0.0.0.0/0"),
            ("tcp", 1935, 1935, "0.0.0.0/0"),
            ("udp", 4500, 4507, "0.0.0.0/0"),
            ("tcp", 8080, 8080, "0.0.0.0/0"),
            ("tcp", 22, 22, operator_cidr),
            ("tcp", 7070, 7070, operator_cidr),
        }
        have = rule_set(group)
        if have != want:
            problems.append("ingress rules %s, want %s" % (sorted(have), sorted(want)))
        if instances and group["GroupId"] not in group_ids:
            problems.append("instance not in the security group")
    keys = key_pairs(client, key_name)
    if len(keys) != 1:
        problems.append("want key pair %s, found %d" % (key_name, len(keys)))
    elif key_created == "created":
        if tags_of(keys[0]).get("ghost-stream") != "true":
            problems.append("created key pair not tagged: %s" % tags_of(keys[0]))
        mode = stat.S_IMODE(os.stat(key_file).st_mode) if os.path.exists(key_file) else None
        if mode != 0o600:
            problems.append("private key %s: mode %s, want 0600" % (key_file, oct(mode or 0)))
    for problem in problems:
        print("  " + problem)
    print("provisioned: %s" % ("as expected" if not problems else "%d problem(s)" % len(problems)))
    return 1 if problems else 0


def gone(endpoint, name, key_name, key_should_remain, inventory) -> int:
    """Nothing provision.yml created is left (a pre-existing key pair is kept)."""
    client = ec2(endpoint)
    problems = []
    if live_instances(client, name):
        problems.append("an instance named %s is still there" % name)
    if groups_named(client, name):
        problems.append("security group %s is still there" % name)
    keys = key_pairs(client, key_name)
    if key_should_remain == "kept" and len(keys) != 1:
        problems.append("pre-existing key pair %s was deleted" % key_name)
    if key_should_remain == "deleted" and keys:
        problems.append("key pair %s is still there" % key_name)
    if os.path.exists(inventory):
        problems.append("inventory %s is still there" % inventory)
    for problem in problems:
        print("  " + problem)
    print("torn down: %s" % ("nothing left" if not problems else "%d problem(s)" % len(problems)))
    return 1 if problems else 0


def create_key(endpoint, name) -> int:
    """A key pair that exists before provisioning (untagged), as an operator's own would."""
    ec2(endpoint).create_key_pair(KeyName=name)
    print("created key pair %s" % name)
    return 0


def unwrap(value):
    """ansible-inventory --list marks strings as unsafe: {"__ansible_unsafe": "..."}."""
    if isinstance(value, dict) and set(value) == {"__ansible_unsafe"}:
        return value["__ansible_unsafe"]
    return value


def inventory(json_path, endpoint, name) -> int:
    """The aws_ec2 inventory puts the tagged instance in group ghost_stream, with its address."""
    with open(json_path, encoding="utf-8") as handle:
        data = json.load(handle)
    hosts = data.get("ghost_stream", {}).get("hosts", [])
    instances = live_instances(ec2(endpoint), name)
    ip = instances[0].get("PublicIpAddress") if instances else None
    hostvars = data.get("_meta", {}).get("hostvars", {}).get(name, {})
    got = unwrap(hostvars.get("ansible_host"))
    advertise = unwrap(hostvars.get("ghost_advertise_host"))
    print("aws_ec2 inventory: group ghost_stream=%s ansible_host=%s advertise=%s" % (hosts, got, advertise))
    return 0 if hosts == [name] and ip and got == ip and advertise else 1


def free_port() -> int:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    print(sock.getsockname()[1])
    sock.close()
    return 0


def wait_http(url, seconds) -> int:
    deadline = time.time() + float(seconds)
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return 0
        except urllib.error.HTTPError:
            return 0
        except OSError:
            time.sleep(0.2)
    print("nothing answers at %s" % url)
    return 1


def ports_free(tcp, udp) -> int:
    """The stack's default ports are free (bound on all addresses, as `ghost up --public` does)."""
    taken = []
    for kind, ports in ((socket.SOCK_STREAM, tcp), (socket.SOCK_DGRAM, udp)):
        for port in [int(p) for p in ports.split(",") if p]:
            sock = socket.socket(socket.AF_INET, kind)
            try:
                sock.bind(("0.0.0.0", port))
            except OSError:
                taken.append("%d/%s" % (port, "tcp" if kind == socket.SOCK_STREAM else "udp"))
            finally:
                sock.close()
    if taken:
        print("default ports already taken on this machine: " + " ".join(taken))
        return 1
    return 0


def healthy(status_port, gateway_port, status_json_path) -> int:
    """/api/status says ready with every service running; the gateway answers /health; the
    `ghost status --json` of the installed binary says ready too."""
    problems = []
    try:
        with urllib.request.urlopen("http://127.0.0.1:%s/api/status" % status_port, timeout=5) as resp:
            api = json.load(resp)
    except (OSError, ValueError) as exc:
        api = {}
        problems.append("/api/status: %s" % exc)
    if api and api.get("ready") is not True:
        problems.append("/api/status ready=%s" % api.get("ready"))
    services = api.get("services") or []
    down = [s.get("name") for s in services if s.get("state") != "running" or s.get("healthy") is False]
    if api and (not services or down):
        problems.append("services not running and healthy: %s" % (down or "none listed"))
    try:
        with urllib.request.urlopen("http://127.0.0.1:%s/health" % gateway_port, timeout=5) as resp:
            if resp.status != 200:
                problems.append("gateway /health: %s" % resp.status)
    except OSError as exc:
        problems.append("gateway /health: %s" % exc)
    try:
        with open(status_json_path, encoding="utf-8") as handle:
            cli = json.load(handle)
        if cli.get("ready") is not True:
            problems.append("ghost status --json ready=%s" % cli.get("ready"))
    except (OSError, ValueError) as exc:
        problems.append("ghost status --json: %s" % exc)
    for problem in problems:
        print("  " + problem)
    names = ", ".join(str(s.get("name")) for s in services)
    print("health: %s" % ("ready (%s)" % names if not problems else "%d problem(s)" % len(problems)))
    return 1 if problems else 0


def service_pids(status_json_path) -> int:
    """Prints the services' pids from `ghost status --json` (to tell a restart)."""
    with open(status_json_path, encoding="utf-8") as handle:
        data = json.load(handle)
    ids = []
    for service in data.get("services") or []:
        instance = service.get("instance") or {}
        ids.append("%s=%s" % (service.get("name"), instance.get("pid") or instance.get("container")))
    print(" ".join(ids))
    return 0 if ids else 1


def stopped(status_port) -> int:
    """Nothing answers on the status port any more."""
    try:
        with urllib.request.urlopen("http://127.0.0.1:%s/api/status" % status_port, timeout=2):
            print("the status page still answers")
            return 1
    except OSError:
        return 0


COMMANDS = {
    "recap": recap,
    "provisioned": provisioned,
    "gone": gone,
    "create-key": create_key,
    "inventory": inventory,
    "free-port": free_port,
    "wait-http": wait_http,
    "ports-free": ports_free,
    "healthy": healthy,
    "service-pids": service_pids,
    "stopped": stopped,
}

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        sys.exit("usage: helpers.py {%s} ARGS..." % ",".join(COMMANDS))
    sys.exit(COMMANDS[sys.argv[1]](*sys.argv[2:]))
