"""Checks used by tests/run.sh (run with the virtual environment's Python).

Each subcommand prints what it found and exits 0 when the check holds, 1 when it does not.
"""

from __future__ import annotations

import json
import os
import re
import socket
import ssl
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


def cluster_instances(client, name: str) -> list:
    """The live instances of cluster NAME: the manager by its Name (as teardown finds it), the
    workers by their cluster and role tags."""
    found = {i["InstanceId"]: i for i in live_instances(client, name)}
    pages = client.describe_instances(
        Filters=[
            {"Name": "tag:ghost-stream-cluster", "Values": [name]},
            {"Name": "instance-state-name", "Values": ["pending", "running", "stopping", "stopped"]},
        ]
    )
    for reservation in pages["Reservations"]:
        for inst in reservation["Instances"]:
            found[inst["InstanceId"]] = inst
    return sorted(found.values(), key=lambda i: tags_of(i).get("Name", ""))


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
    """The group's ingress rules open to address blocks: (protocol, from, to, CIDR)."""
    rules = set()
    for perm in group["IpPermissions"]:
        for rng in perm.get("IpRanges", []):
            rules.add((perm["IpProtocol"], perm.get("FromPort"), perm.get("ToPort"), rng["CidrIp"]))
        for rng in perm.get("Ipv6Ranges", []):
            rules.add((perm["IpProtocol"], perm.get("FromPort"), perm.get("ToPort"), rng["CidrIpv6"]))
        for prefix in perm.get("PrefixListIds", []):
            rules.add((perm["IpProtocol"], perm.get("FromPort"), perm.get("ToPort"), prefix["PrefixListId"]))
    return rules


def group_rule_set(group) -> set:
    """The group's ingress rules open to security groups: (protocol, from, to, source group id)."""
    return {
        (perm["IpProtocol"], perm.get("FromPort"), perm.get("ToPort"), pair["GroupId"])
        for perm in group["IpPermissions"]
        for pair in perm.get("UserIdGroupPairs", [])
    }


def public_rules(operator_cidr, gateway="https") -> set:
    """What every deployment opens to address blocks, and nothing more. The gateway: with its
    certificate ("https", ACME being on by default), HTTP for the CA's challenges and the
    redirect and HTTPS for viewers; without one ("http"), plain HTTP on 8080."""
    gateway_rules = {
        "https": {("tcp", 80, 80, "0.0.0.0/0"), ("tcp", 443, 443, "0.0.0.0/0")},
        "http": {("tcp", 8080, 8080, "0.0.0.0/0")},
    }[gateway]
    return {
        ("udp", 4433, 4433, "0.0.0.0/0"),
        ("tcp", 1935, 1935, "0.0.0.0/0"),
        ("udp", 4500, 4507, "0.0.0.0/0"),
        ("tcp", 4500, 4507, "0.0.0.0/0"),
        ("tcp", 22, 22, operator_cidr),
        ("tcp", 7070, 7070, operator_cidr),
    } | gateway_rules


def rules(endpoint, name, operator_cidr, gateway) -> int:
    """The security group NAME opens exactly the public rules, with the gateway's GATEWAY ports."""
    groups = groups_named(ec2(endpoint), name)
    if len(groups) != 1:
        print("want 1 security group named %s, found %d" % (name, len(groups)))
        return 1
    have, want = rule_set(groups[0]), public_rules(operator_cidr, gateway)
    print("rules: %s" % sorted(have))
    if have != want:
        print("  want %s" % sorted(want))
        return 1
    return 0


# Swarm's ports and the relays' ops range (9201 + 8 max relays - 1): members only.
MEMBER_PORTS = {("tcp", 2377, 2377), ("tcp", 7946, 7946), ("udp", 7946, 7946), ("udp", 4789, 4789), ("tcp", 9201, 9208)}


def overlaps(rule, port_range) -> bool:
    proto, low, high = port_range
    rproto, rlow, rhigh = rule[:3]
    if rproto not in (proto, "-1"):
        return False
    if rproto == "-1" or rlow is None:
        return True
    return rlow <= high and low <= rhigh


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
        want = public_rules(operator_cidr)
        have = rule_set(group)
        if have != want:
            problems.append("ingress rules %s, want %s" % (sorted(have), sorted(want)))
        # One host: no member rules (Swarm ports, relay ops), from anywhere.
        if group_rule_set(group):
            problems.append("rules from security groups on a single host: %s" % sorted(group_rule_set(group)))
        if instances and tags_of(instances[0]).get("ghost-stream-role") != "manager":
            problems.append("the single host is not tagged ghost-stream-role=manager: %s" % tags_of(instances[0]))
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


def cluster(endpoint, name, operator_cidr, nodes) -> int:
    """A cluster of NODES instances: NAME (manager) and NAME-worker-1.. (workers), tagged with
    their role; one security group holding them all, with the public rules open to address
    blocks and Swarm's ports and the relays' ops range open to the group itself and to no
    address block."""
    client = ec2(endpoint)
    problems = []
    nodes = int(nodes)
    want_names = [name] + ["%s-worker-%d" % (name, i) for i in range(1, nodes)]
    instances = cluster_instances(client, name)
    names = [tags_of(i).get("Name") for i in instances]
    if sorted(names) != sorted(want_names):
        problems.append("instances %s, want %s" % (sorted(names), sorted(want_names)))
    roles = {tags_of(i).get("Name"): tags_of(i).get("ghost-stream-role") for i in instances}
    managers = sorted(n for n, r in roles.items() if r == "manager")
    workers = sorted(n for n, r in roles.items() if r == "worker")
    if managers != [name] or workers != sorted(want_names[1:]):
        problems.append("roles by tag: managers %s, workers %s" % (managers, workers))
    for inst in instances:
        tags = tags_of(inst)
        if tags.get("ghost-stream") != "true" or tags.get("ghost-stream-cluster") != name:
            problems.append("%s: tags %s" % (tags.get("Name"), tags))
        if inst["State"]["Name"] != "running" or not inst.get("PublicIpAddress") or not inst.get("PrivateIpAddress"):
            problems.append("%s: %s, public %s, private %s" % (
                tags.get("Name"), inst["State"]["Name"], inst.get("PublicIpAddress"), inst.get("PrivateIpAddress")))
    groups = groups_named(client, name)
    if len(groups) != 1:
        problems.append("want 1 security group named %s, found %d" % (name, len(groups)))
    else:
        group = groups[0]
        gid = group["GroupId"]
        for inst in instances:
            if gid not in [g["GroupId"] for g in inst.get("SecurityGroups", [])]:
                problems.append("%s is not in the security group" % tags_of(inst).get("Name"))
        have = rule_set(group)
        if have != public_rules(operator_cidr):
            problems.append("rules from address blocks %s, want %s" % (sorted(have), sorted(public_rules(operator_cidr))))
        exposed = sorted(r for r in have for p in MEMBER_PORTS if overlaps(r, p))
        if exposed:
            problems.append("member-only ports open to address blocks: %s" % exposed)
        members = group_rule_set(group)
        want_members = {p + (gid,) for p in MEMBER_PORTS}
        if members != want_members:
            problems.append("rules from groups %s, want %s (the group itself)" % (sorted(members), sorted(want_members)))
    for problem in problems:
        print("  " + problem)
    print("cluster: %s" % ("%d instances as expected" % len(instances) if not problems else "%d problem(s)" % len(problems)))
    return 1 if problems else 0


def written_inventory(json_path, endpoint, name) -> int:
    """`ansible-inventory --list` of the inventory provision.yml wrote: group ghost_stream with
    children ghost_manager (NAME) and ghost_workers (the rest), each host with its public
    address, private address and instance ID as moto has them."""
    with open(json_path, encoding="utf-8") as handle:
        data = json.load(handle)
    problems = []
    instances = {tags_of(i)["Name"]: i for i in cluster_instances(ec2(endpoint), name)}
    workers = sorted(n for n in instances if n != name)
    children = sorted(data.get("ghost_stream", {}).get("children", []))
    if children != ["ghost_manager", "ghost_workers"]:
        problems.append("ghost_stream's children %s, want ghost_manager and ghost_workers" % children)
    manager_hosts = data.get("ghost_manager", {}).get("hosts", [])
    worker_hosts = sorted(data.get("ghost_workers", {}).get("hosts", []))
    if manager_hosts != [name] or worker_hosts != workers:
        problems.append("ghost_manager %s, ghost_workers %s; want [%s], %s" % (manager_hosts, worker_hosts, name, workers))
    hostvars = data.get("_meta", {}).get("hostvars", {})
    for host, inst in instances.items():
        got = {k: unwrap(v) for k, v in hostvars.get(host, {}).items()}
        want = {
            "ansible_host": inst.get("PublicIpAddress"),
            "ghost_private_ip": inst.get("PrivateIpAddress"),
            "ghost_instance_id": inst["InstanceId"],
        }
        for key, value in want.items():
            if got.get(key) != value:
                problems.append("%s: %s=%s, want %s" % (host, key, got.get(key), value))
        if not got.get("ghost_advertise_host"):
            problems.append("%s: no ghost_advertise_host" % host)
    for problem in problems:
        print("  " + problem)
    print("written inventory: %s" % ("manager %s, workers %s" % (name, workers) if not problems else "%d problem(s)" % len(problems)))
    return 1 if problems else 0


def gone(endpoint, name, key_name, key_should_remain, inventory) -> int:
    """Nothing provision.yml created is left (a pre-existing key pair is kept)."""
    client = ec2(endpoint)
    problems = []
    left = [tags_of(i).get("Name") for i in cluster_instances(client, name)]
    if left:
        problems.append("instances of %s are still there: %s" % (name, left))
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
    """The aws_ec2 inventory puts the tagged instances of cluster NAME in group ghost_stream, the
    manager (NAME) in ghost_manager and the workers in ghost_workers, each with its public and
    private address."""
    with open(json_path, encoding="utf-8") as handle:
        data = json.load(handle)
    problems = []
    instances = {tags_of(i)["Name"]: i for i in cluster_instances(ec2(endpoint), name)}
    workers = sorted(n for n in instances if n != name)
    hosts = sorted(data.get("ghost_stream", {}).get("hosts", []))
    managers = data.get("ghost_manager", {}).get("hosts", [])
    worker_hosts = sorted(data.get("ghost_workers", {}).get("hosts", []))
    if not instances or hosts != sorted(instances):
        problems.append("group ghost_stream %s, want %s" % (hosts, sorted(instances)))
    if managers != [name] or worker_hosts != workers:
        problems.append("ghost_manager %s, ghost_workers %s; want [%s], %s" % (managers, worker_hosts, name, workers))
    hostvars = data.get("_meta", {}).get("hostvars", {})
    for host, inst in instances.items():
        got = {k: unwrap(v) for k, v in hostvars.get(host, {}).items()}
        if got.get("ansible_host") != inst.get("PublicIpAddress") or not got.get("ghost_advertise_host"):
            problems.append("%s: ansible_host=%s advertise=%s" % (host, got.get("ansible_host"), got.get("ghost_advertise_host")))
        if got.get("ghost_private_ip") != inst.get("PrivateIpAddress"):
            problems.append("%s: ghost_private_ip=%s, want %s" % (host, got.get("ghost_private_ip"), inst.get("PrivateIpAddress")))
    for problem in problems:
        print("  " + problem)
    print("aws_ec2 inventory: %s" % ("ghost_manager %s, ghost_workers %s" % (managers, worker_hosts) if not problems else "%d problem(s)" % len(problems)))
    return 1 if problems else 0


def free_port() -> int:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    print(sock.getsockname()[1])
    sock.close()
    return 0


def tls_context(ca_file):
    """Certificate validation against CA_FILE alone (a test CA); None: the default context."""
    return ssl.create_default_context(cafile=ca_file) if ca_file else None


def wait_http(url, seconds, ca_file="") -> int:
    """Something answers at URL (HTTPS verified against CA_FILE when given) within SECONDS."""
    deadline = time.time() + float(seconds)
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2, context=tls_context(ca_file)):
                return 0
        except urllib.error.HTTPError:
            return 0
        except OSError:
            time.sleep(0.2)
    print("nothing answers at %s" % url)
    return 1


def fetch(url, ca_file, out_path) -> int:
    """Writes what URL answers (HTTPS verified against CA_FILE) to OUT_PATH."""
    try:
        with urllib.request.urlopen(url, timeout=10, context=tls_context(ca_file)) as resp:
            body = resp.read()
    except OSError as exc:
        print("%s: %s" % (url, exc))
        return 1
    with open(out_path, "wb") as handle:
        handle.write(body)
    print("%s: %d bytes" % (url, len(body)))
    return 0


def ports_free(tcp, udp) -> int:
    """The stack's default ports are free (bound on all addresses, as `ghost up --public` does)."""
    taken = []
    for kind, ports in ((socket.SOCK_STREAM, tcp), (socket.SOCK_DGRAM, udp)):
        for port in [int(p) for p in ports.split(",") if p]:
            sock = socket.socket(socket.AF_INET, kind)
            if kind == socket.SOCK_STREAM:
                # As a server binds (tokio does): connections of an earlier run in TIME-WAIT
                # leave the port free; a listener does not.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
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


def healthy(status_port, gateway_port, status_json_path, https_url="", ca_file="") -> int:
    """/api/status says ready with every service running; the gateway answers /health on its
    plain HTTP port (GATEWAY_PORT, from this host) and, when HTTPS_URL is given, there too with
    a certificate that verifies against CA_FILE for the URL's host; the `ghost status --json` of
    the installed binary says ready too."""
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
    if https_url:
        try:
            with urllib.request.urlopen(https_url, timeout=5, context=tls_context(ca_file)) as resp:
                if resp.status != 200:
                    problems.append("%s: %s" % (https_url, resp.status))
        except OSError as exc:
            problems.append("%s: %s" % (https_url, exc))
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


def stopped(status_port, *tcp_ports) -> int:
    """Nothing answers on the status port any more, nor accepts on TCP_PORTS (the gateway's)."""
    try:
        with urllib.request.urlopen("http://127.0.0.1:%s/api/status" % status_port, timeout=2):
            print("the status page still answers")
            return 1
    except OSError:
        pass
    for port in tcp_ports:
        try:
            with socket.create_connection(("127.0.0.1", int(port)), timeout=2):
                print("port %s still accepts connections" % port)
                return 1
        except OSError:
            pass
    return 0


def same_settings(file_json, flags_json) -> int:
    """Two `ghost config show --json` outputs hold the same values for every key (ghost.toml
    gives what the flags gave)."""

    def values(path):
        with open(path, encoding="utf-8") as f:
            return {s["key"]: s["value"] for s in json.load(f)["settings"]}

    from_file, from_flags = values(file_json), values(flags_json)
    differ = sorted(k for k in from_file.keys() | from_flags.keys() if from_file.get(k) != from_flags.get(k))
    for key in differ:
        print("%s: file %r, flags %r" % (key, from_file.get(key), from_flags.get(key)))
    return 1 if differ else 0


COMMANDS = {
    "recap": recap,
    "provisioned": provisioned,
    "gone": gone,
    "create-key": create_key,
    "inventory": inventory,
    "cluster": cluster,
    "rules": rules,
    "written-inventory": written_inventory,
    "free-port": free_port,
    "wait-http": wait_http,
    "fetch": fetch,
    "ports-free": ports_free,
    "healthy": healthy,
    "service-pids": service_pids,
    "stopped": stopped,
    "same-settings": same_settings,
}

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        sys.exit("usage: helpers.py {%s} ARGS..." % ",".join(COMMANDS))
    sys.exit(COMMANDS[sys.argv[1]](*sys.argv[2:]))
