"""Every Redis key name Hopper uses, in one screen.

All keys of one queue carry the Redis Cluster hash tag `{<queue>}` so that each Lua script
touches a single slot. A queue name matches `[a-zA-Z0-9._-]+`, so it never contains braces.

Per queue (hash tag `{q}`):
  hopper:{q}:jobs       hash   jid -> job JSON: the record of every live job of the queue
  hopper:{q}:queue      list   jids waiting; LPUSH to enqueue, RPOP to fetch (FIFO)
  hopper:{q}:working    zset   jid -> reservation expiry (unix seconds)
  hopper:{q}:scheduled  zset   jid -> time to enqueue
  hopper:{q}:retries    zset   jid -> time of the next attempt
  hopper:{q}:dead       zset   jid -> time to purge
  hopper:{q}:paused     string present while the queue is paused
  hopper:{q}:stats      hash   processed, failures, processed:<day>, failures:<day>

Global:
  hopper:queues         set    names of the known queues
  hopper:index          hash   jid -> queue, for lookups that start from a jid alone
  hopper:{workers}      zset   wid -> time of the last heartbeat
  hopper:{workers}:<wid> hash  state, info, rss_kb, beat, connections of one worker process
  hopper:pushed         pub/sub channel: a queue name, published when it stops being empty
"""

PREFIX = "hopper"
QUEUES = f"{PREFIX}:queues"
INDEX = f"{PREFIX}:index"
WORKERS = f"{PREFIX}:{{workers}}"
PUSHED_CHANNEL = f"{PREFIX}:pushed"

SETS = ("scheduled", "retries", "dead", "working")


class QueueKeys:
    """The keys of one queue, built once and reused."""

    __slots__ = (
        "dead",
        "jobs",
        "name",
        "paused",
        "queue",
        "retries",
        "scheduled",
        "stats",
        "working",
    )

    def __init__(self, name: str) -> None:
        base = f"{PREFIX}:{{{name}}}"
        self.name = name
        self.jobs = f"{base}:jobs"
        self.queue = f"{base}:queue"
        self.working = f"{base}:working"
        self.scheduled = f"{base}:scheduled"
        self.retries = f"{base}:retries"
        self.dead = f"{base}:dead"
        self.paused = f"{base}:paused"
        self.stats = f"{base}:stats"

    def zset(self, name: str) -> str:
        """The sorted set called `name`: scheduled, retries, dead or working."""
        key: str = getattr(self, name)
        return key


def worker(wid: str) -> str:
    """The hash of one worker process; it shares the hash tag of WORKERS."""
    return f"{WORKERS}:{wid}"
