#!/usr/bin/env python3
"""Helpers of scripts/bench-scale.sh (issue 18, point 5). Python 3 stdlib only.

count-proxy LISTEN LOG [ENGINE]
    A unix-socket proxy that counts the Docker engine API requests a client makes:
    point the client's DOCKER_HOST at unix://LISTEN. Every connection is relayed to
    ENGINE (default /var/run/docker.sock); the client's side of each connection is
    parsed as HTTP/1.1 requests (keep-alive, Content-Length and chunked bodies), so
    several requests on one pooled connection count as several. After an upgrade
    (attach, exec) the rest of that connection is relayed unparsed. Each request is
    appended to LOG as one line, "METHOD PATH". Stop it with SIGTERM.

compose N AGENT_IMAGE SIDECAR_IMAGE SUBNET_BASE CONTAINERS NETWORKS VOLUMES > compose.json
    Writes a docker-compose file (JSON, which is YAML) with N copies of one bottle,
    given as the `docker inspect` output of its containers, networks and volumes (three
    JSON files), services named b<i>-<node>: per copy the same
    networks (one internal, with the same driver options, on a /28 of SUBNET_BASE,
    e.g. 10.214, given explicitly because the engine's default pools hold about 31
    networks), the same named volumes (empty; created by compose, mounted at the
    same places, read-only where bottle's are), and each container with the
    hardening copied from the engine's view of bottle's container: user, capabilities
    dropped and added, security options, read-only root, tmpfs mounts, memory, swap,
    CPUs, pids, init, sysctls, devices, DNS, network aliases, the agent in its
    holder's network namespace, the log options. The agent runs AGENT_IMAGE with bottle's agent
    command; the sidecars run SIDECAR_IMAGE with `sleep infinity` (bottle's sidecar
    processes need the config, CA and token volumes bottle seeds, which compose
    does not have).

check BOTTLE.json COMPOSE.json
    Compares the `docker inspect` output of one bottle's containers with that of the
    compose copy b0 (hardening, user, mounts, network mode, aliases) and prints the
    differences, or that there are none.
"""

import ipaddress
import json
import os
import signal
import socket
import sys
import threading


def relay(src, dst):
    """Copy bytes from src to dst until EOF, then half-close dst."""
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            dst.sendall(data)
    except OSError:
        pass
    try:
        dst.shutdown(socket.SHUT_WR)
    except OSError:
        pass


class Requests:
    """Parses a client->engine byte stream into requests, forwarding every byte."""

    def __init__(self, src, dst, log, lock):
        self.src, self.dst, self.log, self.lock = src, dst, log, lock
        self.buf = b""

    def fill(self):
        data = self.src.recv(65536)
        if not data:
            raise EOFError
        self.dst.sendall(data)
        self.buf += data

    def line(self):
        while b"\r\n" not in self.buf:
            self.fill()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def skip(self, n):
        while len(self.buf) < n:
            self.fill()
        self.buf = self.buf[n:]

    def run(self):
        try:
            while True:
                start = self.line()
                if not start:
                    continue
                headers = {}
                while True:
                    h = self.line()
                    if not h:
                        break
                    k, _, v = h.partition(b":")
                    headers[k.strip().lower()] = v.strip().lower()
                method, _, rest = start.partition(b" ")
                path = rest.rsplit(b" ", 1)[0]
                with self.lock:
                    self.log.write(f"{method.decode()} {path.decode(errors='replace')}\n")
                    self.log.flush()
                if b"upgrade" in headers.get(b"connection", b"") or b"upgrade" in headers:
                    break
                if headers.get(b"transfer-encoding") == b"chunked":
                    while True:
                        size = int(self.line().split(b";")[0], 16)
                        self.skip(size + 2)
                        if size == 0:
                            break
                else:
                    self.skip(int(headers.get(b"content-length", b"0")))
        except (EOFError, OSError, ValueError):
            pass
        # What is left (an upgraded stream, or a parse given up) was already forwarded;
        # the rest of the connection goes through as is.
        relay(self.src, self.dst)


def count_proxy(listen, log_path, engine="/var/run/docker.sock"):
    # Bound and listening under a temporary name first, so the socket appears at
    # LISTEN only when it accepts connections.
    tmp = listen + ".tmp"
    for path in (listen, tmp):
        if os.path.exists(path):
            os.unlink(path)
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(tmp)
    srv.listen(128)
    os.rename(tmp, listen)
    log = open(log_path, "a", encoding="utf-8")
    lock = threading.Lock()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    while True:
        client, _ = srv.accept()
        upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            upstream.connect(engine)
        except OSError:
            client.close()
            continue
        threading.Thread(target=relay, args=(upstream, client), daemon=True).start()
        threading.Thread(target=Requests(client, upstream, log, lock).run, daemon=True).start()


def node_of(c):
    return c["Config"]["Labels"]["bottle.node"]


def compose(n, agent_image, sidecar_image, subnet_base, inspect, networks, volumes):
    """The compose document (a dict) for n copies of the bottle in `inspect`."""
    containers = {node_of(c): c for c in inspect}
    # Bottle's names: bottle-<project>-<bottle>-<node>; the networks and volumes are
    # found from the containers' own view of them.
    prefix = os.path.commonprefix([c["Name"].lstrip("/") for c in inspect])
    prefix = prefix[: prefix.rfind("-") + 1]
    doc = {"version": "2.4", "services": {}, "networks": {}, "volumes": {}}
    net_info = {n["Name"]: n for n in networks}
    vol_names = sorted(v["Name"] for v in volumes)
    base = ipaddress.ip_network(f"{subnet_base}.0.0/16")
    blocks = base.subnets(new_prefix=28)
    by_node = {}
    for c in inspect:
        by_node[c["Id"]] = node_of(c)
    for i in range(n):
        tag = f"b{i}"

        def short(bottle_name):
            return tag + "-" + bottle_name[len(prefix):]

        gateways = {}
        for name in sorted(net_info):
            info = net_info[name]
            block = next(blocks)
            gw = str(next(block.hosts()))
            gateways[name] = gw
            net = {"ipam": {"config": [{"subnet": str(block), "gateway": gw}]}}
            if info["Internal"]:
                net["internal"] = True
            if info["Options"]:
                net["driver_opts"] = info["Options"]
            doc["networks"][short(name)] = net
        for v in vol_names:
            doc["volumes"][short(v)] = {}
        for node, c in containers.items():
            hc, cfg = c["HostConfig"], c["Config"]
            svc = {"user": cfg["User"] or "0:0", "read_only": bool(hc["ReadonlyRootfs"])}
            if node == "agent":
                svc["image"] = agent_image
                if cfg["Entrypoint"]:
                    svc["entrypoint"] = cfg["Entrypoint"]
                svc["command"] = cfg["Cmd"]
                if cfg.get("WorkingDir"):
                    svc["working_dir"] = cfg["WorkingDir"]
            else:
                svc["image"] = sidecar_image
                svc["entrypoint"] = ["sleep"]
                svc["command"] = ["infinity"]
            for key, field in (
                ("cap_drop", "CapDrop"),
                ("cap_add", "CapAdd"),
                ("security_opt", "SecurityOpt"),
            ):
                if hc.get(field):
                    svc[key] = list(hc[field])
            if hc.get("Init"):
                svc["init"] = True
            if hc.get("Memory"):
                svc["mem_limit"] = hc["Memory"]
            if hc.get("MemorySwap"):
                svc["memswap_limit"] = hc["MemorySwap"]
            if hc.get("NanoCpus"):
                svc["cpus"] = hc["NanoCpus"] / 1e9
            if hc.get("PidsLimit"):
                svc["pids_limit"] = hc["PidsLimit"]
            if hc.get("LogConfig"):
                svc["logging"] = {
                    "driver": hc["LogConfig"]["Type"],
                    "options": hc["LogConfig"].get("Config") or {},
                }
            if hc.get("Sysctls"):
                svc["sysctls"] = hc["Sysctls"]
            if hc.get("Runtime") and hc["Runtime"] != "runc":
                svc["runtime"] = hc["Runtime"]
            if hc.get("Devices"):
                svc["devices"] = [
                    f"{d['PathOnHost']}:{d['PathInContainer']}:{d['CgroupPermissions']}"
                    for d in hc["Devices"]
                ]
            if hc.get("Dns"):
                # Bottle points DNS at the internal network's gateway: the copy's own.
                svc["dns"] = [
                    gateways[name]
                    for name, info in net_info.items()
                    if info["Internal"]
                ]
            tmpfs, volumes = [], []
            for m in hc.get("Mounts") or []:
                if m["Type"] == "tmpfs":
                    opts = m.get("TmpfsOptions") or {}
                    o = []
                    if opts.get("SizeBytes"):
                        o.append(f"size={opts['SizeBytes']}")
                    if opts.get("Mode"):
                        o.append(f"mode={opts['Mode']:o}")
                    tmpfs.append(m["Target"] + (":" + ",".join(o) if o else ""))
                elif m["Type"] == "volume":
                    ro = ":ro" if m.get("ReadOnly") else ""
                    volumes.append(f"{short(m['Source'])}:{m['Target']}{ro}")
                else:
                    sys.exit(f"unexpected mount type {m['Type']} on {c['Name']}")
            if tmpfs:
                svc["tmpfs"] = tmpfs
            if volumes:
                svc["volumes"] = volumes
            mode = hc.get("NetworkMode") or ""
            if mode.startswith("container:"):
                holder = mode.split(":", 1)[1]
                holder_node = by_node[holder]
                svc["network_mode"] = f"service:{tag}-{holder_node}"
                svc["depends_on"] = [f"{tag}-{holder_node}"]
            else:
                nets = {}
                for name, ep in (c["NetworkSettings"]["Networks"] or {}).items():
                    aliases = [a for a in (ep.get("Aliases") or []) if a != c["Id"][:12]]
                    nets[short(name)] = {"aliases": aliases} if aliases else {}
                svc["networks"] = nets
            doc["services"][f"{tag}-{node}"] = svc
    return doc


HARDENING = (
    "CapAdd", "CapDrop", "SecurityOpt", "ReadonlyRootfs", "Init", "Memory", "MemorySwap",
    "NanoCpus", "PidsLimit", "Sysctls", "Devices", "LogConfig", "Runtime", "Privileged",
    "ShmSize", "IpcMode", "MaskedPaths", "ReadonlyPaths",
)


def shape(c):
    """What the comparison looks at in one container's inspect: hardening, user,
    mounts (kind, target, read-only, tmpfs size), network mode and aliases."""
    hc, cfg = c["HostConfig"], c["Config"]
    out = {k: hc.get(k) or None for k in HARDENING}
    out["User"] = cfg["User"]
    # Bottle gives mounts as Mounts, compose as Binds and Tmpfs: compare what the
    # engine mounted (volumes) and the tmpfs sizes asked for either way.
    mounts = [("volume", m["Destination"], not m["RW"]) for m in c.get("Mounts") or [] if m["Type"] == "volume"]
    for m in hc.get("Mounts") or []:
        if m["Type"] == "tmpfs":
            mounts.append(("tmpfs", m["Target"], (m.get("TmpfsOptions") or {}).get("SizeBytes")))
    for target, opts in (hc.get("Tmpfs") or {}).items():
        size = [int(o[5:]) for o in opts.split(",") if o.startswith("size=")]
        mounts.append(("tmpfs", target, size[0] if size else None))
    out["Mounts"] = sorted(mounts, key=repr)
    mode = hc.get("NetworkMode") or ""
    out["NetworkMode"] = "container" if mode.startswith("container:") else "networks"
    out["Aliases"] = sorted(
        sorted(a for a in (ep.get("Aliases") or []) if a != c["Id"][:12] and not a.startswith("b0-"))
        for ep in (c["NetworkSettings"]["Networks"] or {}).values()
    )
    return out


def check(bottle, composed):
    """Differences between bottle's containers of one bottle and compose's b0 copy."""
    theirs = {}
    for c in composed:
        service = c["Config"]["Labels"].get("com.docker.compose.service", "")
        if service.startswith("b0-"):
            theirs[service[3:]] = c
    diffs = []
    for c in bottle:
        node = node_of(c)
        if node not in theirs:
            diffs.append(f"{node}: no compose container")
            continue
        a, b = shape(c), shape(theirs[node])
        for k in a:
            if a[k] != b[k]:
                diffs.append(f"{node}: {k}: bottle {a[k]!r}, compose {b[k]!r}")
    return diffs


def main(argv):
    if len(argv) >= 3 and argv[0] == "count-proxy":
        count_proxy(*argv[1:4])
    elif len(argv) == 8 and argv[0] == "compose":
        n, agent_image, sidecar_image, subnet_base = argv[1:5]
        docs = []
        for path in argv[5:]:
            with open(path, encoding="utf-8") as f:
                docs.append(json.load(f))
        doc = compose(int(n), agent_image, sidecar_image, subnet_base, *docs)
        json.dump(doc, sys.stdout, indent=1, sort_keys=True)
        sys.stdout.write("\n")
    elif len(argv) == 3 and argv[0] == "check":
        with open(argv[1], encoding="utf-8") as a, open(argv[2], encoding="utf-8") as b:
            diffs = check(json.load(a), json.load(b))
        print("\n".join(diffs) if diffs else "same hardening, mounts and networks")
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
