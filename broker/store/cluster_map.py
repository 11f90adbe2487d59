"""Where a Redis Cluster is and who owns what: its URL (`redis+cluster://` or
`rediss+cluster://`, several seed nodes) and its slot map, read from `CLUSTER SHARDS`."""

from typing import Any
from urllib.parse import quote, unquote

import msgspec

from hopper_broker.config import CLUSTER_SCHEMES
from hopper_broker.store.address import Address
from hopper_broker.store.slots import SLOTS

MAX_PORT = 65535


class ClusterAddress:
    """The seed nodes of a cluster and how to log in, parsed from
    `redis+cluster://[[user]:password@]host:port[,host:port...][/]` (`rediss+cluster://`:
    the nodes are reached as `rediss://` ones). A bad form raises ValueError in one line."""

    def __init__(self, url: str) -> None:
        scheme, _, rest = url.partition("://")
        if f"{scheme}://" not in CLUSTER_SCHEMES:
            raise ValueError(f"a Redis Cluster URL starts with {' or '.join(CLUSTER_SCHEMES)}")
        self.tls = scheme.startswith("rediss")
        userinfo, at, location = rest.rpartition("@")
        hosts, slash, path = location.partition("/")
        user, colon, password = userinfo.partition(":")
        login = f"{user}:***@" if colon else "***@" if at else ""
        self.display = f"{scheme}://{login}{hosts}{slash}{path}"
        if at and ":" not in userinfo:
            raise ValueError(f"{self.display}: credentials go as user:password@ or :password@")
        self.username = unquote(user) or None
        self.password = unquote(password) or None
        if path or any(mark in hosts for mark in "?#"):
            raise ValueError(
                f"{self.display}: a cluster URL names nodes only: no database (a cluster has "
                "database 0 only), path or options"
            )
        if not hosts:
            raise ValueError(f"{self.display}: no host:port")
        self.seeds = [_host_port(part, self.display) for part in hosts.split(",")]

    def node(self, host: str, port: int) -> Address:
        """The address of one node of the cluster, with the cluster's credentials and TLS."""
        login = ""
        if self.password:
            login = f"{quote(self.username or '', safe='')}:{quote(self.password, safe='')}@"
        where = f"[{host}]" if ":" in host else host
        return Address(f"{'rediss' if self.tls else 'redis'}://{login}{where}:{port}")


def _host_port(text: str, display: str) -> tuple[str, int]:
    host, colon, port = text.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not colon or not host or not port.isdigit() or not 0 < int(port) <= MAX_PORT:
        raise ValueError(f"{display}: not host:port: {text!r}")
    return host, int(port)


def node_name(host: str, port: int) -> str:
    """A node's name as MOVED and ASK give it: host:port."""
    return f"{host}:{port}"


def parse_node_name(name: str) -> tuple[str, int]:
    host, _, port = name.rpartition(":")
    return host, int(port)


class SlotMap(msgspec.Struct, frozen=True):
    """Which master owns each slot (by node name, "" for none) and every node's name."""

    owners: list[str]
    masters: list[str]  # in the order CLUSTER SHARDS gave them
    nodes: list[str]  # masters and replicas, whatever their health: who to ask for a new map

    @classmethod
    def parse(cls, shards: list[Any], tls: bool) -> "SlotMap":
        """The map from a `CLUSTER SHARDS` reply (Redis 7); the TLS port when `tls`."""
        owners = [""] * SLOTS
        masters: list[str] = []
        nodes: list[str] = []
        for shard in shards:
            fields = _fields(shard)
            for node in fields[b"nodes"]:
                info = _fields(node)
                host = (info.get(b"endpoint") or info[b"ip"]).decode()
                if host in ("?", ""):
                    host = info[b"ip"].decode()
                port = int(info.get(b"tls-port", 0) if tls else info.get(b"port", 0))
                name = node_name(host, port)
                nodes.append(name)
                if info[b"role"] == b"master" and fields[b"slots"]:
                    masters.append(name)
                    ranges = fields[b"slots"]
                    for start, end in zip(ranges[::2], ranges[1::2], strict=True):
                        owners[int(start) : int(end) + 1] = [name] * (int(end) - int(start) + 1)
        return cls(owners, masters, nodes)


def _fields(flat: list[Any]) -> dict[bytes, Any]:
    """A RESP2 map (a flat [name, value, ...] list) as a dict."""
    return dict(zip(flat[::2], flat[1::2], strict=True))
