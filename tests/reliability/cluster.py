"""A three-node JetStream cluster on loopback, whose nodes tests kill and restart.

Each node is a `NatsNode` (durable JetStream, `sync_interval: always`, a fixed
client port) with a server name, a route port listing the other nodes' routes and
a monitoring port (`/jsz` for the meta group, `/connz` for who is connected where).
Stream leaders and replica states come from JetStream's own stream info.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import nats
import nats.errors
from nats.aio.client import Client as NatsClient
from nats.js.api import ClusterInfo

from tests.fixtures._common import free_port
from tests.reliability.harness import START_S, NatsNode, eventually

CLUSTER_NAME = "lumiku"
#: Seconds a cluster may take to elect a leader or bring a replica up to date (loaded CI).
SETTLE_S = 60.0


@dataclass(frozen=True, slots=True)
class Member:
    """One node's name and ports, known before any node starts (routes name them all)."""

    name: str
    client_port: int
    route_port: int
    monitor_port: int


def members(size: int) -> list[Member]:
    """`size` members named n0, n1, ... on distinct free ports."""
    ports: list[int] = []
    while len(ports) < 3 * size:
        port = free_port()
        if port not in ports:
            ports.append(port)
    return [Member(f"n{i}", *ports[3 * i : 3 * i + 3]) for i in range(size)]


def cluster_config(me: Member, everyone: Sequence[Member]) -> str:
    """The config lines that make `me` a named, monitored member routed to the others."""
    routes = ", ".join(
        f"nats-route://127.0.0.1:{m.route_port}" for m in everyone if m.name != me.name
    )
    return (
        f"server_name: {me.name}\n"
        f"http: 127.0.0.1:{me.monitor_port}\n"
        f"cluster {{ name: {CLUSTER_NAME}, listen: 127.0.0.1:{me.route_port},"
        f" routes: [{routes}] }}\n"
    )


def all_current(info: ClusterInfo | None, size: int) -> bool:
    """Whether a stream has a leader and `size - 1` followers, all online and current."""
    if info is None or not info.leader:
        return False
    followers = info.replicas or []
    fine = [p for p in followers if p.current and not p.offline]
    return len(followers) == size - 1 and len(fine) == size - 1


class NatsCluster:
    """Three (by default) `nats-server` nodes routed into one JetStream cluster."""

    def __init__(self, workdir: Path, size: int = 3) -> None:
        self.members = {m.name: m for m in members(size)}
        self.nodes = {
            m.name: NatsNode(
                workdir / m.name,
                port=m.client_port,
                config=cluster_config(m, list(self.members.values())),
            )
            for m in self.members.values()
        }
        self.replicas = size

    @property
    def urls(self) -> tuple[str, ...]:
        return tuple(node.url for node in self.nodes.values())

    @property
    def url(self) -> str:
        """The first node's URL (clients that take one server; `urls` names them all)."""
        return self.urls[0]

    async def start(self) -> None:
        """Start every node, then wait until the meta group has a leader and all peers."""
        for node in self.nodes.values():
            await node.start()
        await eventually(self._meta_ready, START_S, "JetStream meta group formed")

    def kill(self) -> None:
        for node in self.nodes.values():
            node.kill()

    async def restart(self, name: str) -> None:
        """Start a killed node again (same ports, same store) and wait for it to serve."""
        await self.nodes[name].start()
        await eventually(lambda: self._meta_ready(only=(name,)), SETTLE_S, f"{name} rejoined")

    async def monitor(self, name: str, endpoint: str) -> dict[str, Any]:
        """One node's monitoring endpoint (`jsz`, `connz`, ...) as JSON."""
        url = f"http://127.0.0.1:{self.members[name].monitor_port}/{endpoint}"
        async with httpx.AsyncClient(timeout=5.0) as http:
            response = await http.get(url)
            response.raise_for_status()
            body: dict[str, Any] = response.json()
            return body

    async def _meta_ready(self, only: Iterable[str] | None = None) -> bool:
        for name in only or self.alive():
            try:
                meta = (await self.monitor(name, "jsz")).get("meta_cluster", {})
            except httpx.HTTPError:
                return False
            if not meta.get("leader") or meta.get("cluster_size") != self.replicas:
                return False
        return True

    def alive(self) -> list[str]:
        return [name for name, node in self.nodes.items() if node.proc.alive]

    async def connected_to(self, client_name: str) -> list[str]:
        """The live nodes holding a client connection named `client_name`, one per connection."""
        found: list[str] = []
        for name in self.alive():
            connz = await self.monitor(name, "connz?limit=1024")
            found += [name for c in connz.get("connections", []) if c.get("name") == client_name]
        return found

    @contextlib.asynccontextmanager
    async def client(self) -> AsyncIterator[NatsClient]:
        """A plain connection to any live node (it follows the cluster on its own)."""
        live = [self.nodes[name].url for name in self.alive()]
        nc = await nats.connect(live, max_reconnect_attempts=-1, reconnect_time_wait=0.5)
        try:
            yield nc
        finally:
            await nc.close()

    async def stream_cluster(self, stream: str) -> ClusterInfo | None:
        """A stream's leader and replicas as JetStream reports them; None while it cannot."""
        async with self.client() as nc:
            try:
                return (await nc.jetstream(timeout=5.0).stream_info(stream)).cluster
            except (nats.errors.Error, TimeoutError):
                return None  # no leader yet, or the meta group is electing

    async def leader_of(self, stream: str, *, other_than: str | None = None) -> str:
        """The node leading `stream` (waits until there is one that is not `other_than`)."""
        leader = ""

        async def elected() -> bool:
            nonlocal leader
            info = await self.stream_cluster(stream)
            leader = (info.leader or "") if info is not None else ""
            return leader in self.nodes and leader != other_than

        await eventually(elected, SETTLE_S, f"a leader of {stream} other than {other_than}")
        return leader

    async def wait_all_current(self, streams: Iterable[str]) -> None:
        """Until every stream has a leader and all its replicas online and current."""
        for stream in streams:

            async def current(stream: str = stream) -> bool:
                return all_current(await self.stream_cluster(stream), self.replicas)

            await eventually(current, SETTLE_S, f"all {self.replicas} replicas of {stream} current")
