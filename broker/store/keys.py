"""Every Redis key name Hopper uses, in one screen (storage schema 2).

No user-chosen name can reach an internal key: queue-owned keys start with `hopper:q:{<queue>}:`
(a queue name matches `[a-zA-Z0-9._-]+`, so it holds neither braces nor colons), every other key
starts with `hopper:g:{g}:`, and user names (jid, wid) appear only as hash fields, set members,
or as the last part of a key after a fixed prefix of its own (`hopper:g:{g}:worker:<wid>`). The
hash tag (the part in braces) puts each queue's keys in one Redis Cluster slot. Schema 1 keys
(`hopper:{<queue>}:...`, `hopper:queues`, `hopper:index`) share no name with these; see
migrate.py.

Per queue (hash tag `{q}`):
  hopper:q:{q}:jobs         hash   jid -> job JSON: the record of every live job of the queue
  hopper:q:{q}:queue        list   jids waiting; LPUSH to enqueue, RPOP to fetch (FIFO)
  hopper:q:{q}:working      zset   jid -> reservation expiry (unix seconds)
  hopper:q:{q}:scheduled    zset   jid -> time to enqueue
  hopper:q:{q}:retries      zset   jid -> time of the next attempt
  hopper:q:{q}:dead         zset   jid -> time to purge
  hopper:q:{q}:meta         hash   the queue's settings: paused (and resume_at, unix seconds,
                                   for a timed pause), max_size, draining, limits (concurrency,
                                   rate, burst; group_*; t:<jobtype>:<limit>), and notes for the
                                   scripts (prioritized, expiring, lanes, laned, turn, ...)
  hopper:q:{q}:finished     zset   jid -> when it finished: done and discarded jobs, kept (their
                                   records stay in jobs) for finished_ttl, finished_max at most
  hopper:q:{q}:final        hash   jid -> note of a finished job: {"state"?,"result"?} when its
                                   state is not done or it has a result
  hopper:q:{q}:progress     hash   jid -> {"percent","desc","updated_at","log":[...]} (TRACK SET,
                                   JOB LOG), kept as long as the job
  hopper:q:{q}:unique:<d>   string `<mode>:<jid>` of the job holding the unique identity with
                                   digest d (sha256 hex), expiring after unique_for
  hopper:q:{q}:prioritized  zset   jid -> (10 - priority) * 2^40 + arrival: waiting jobs of a
                                   priority other than 5, which wait here, not in the list
  hopper:q:{q}:expiring     zset   jid -> when it expires (custom.expires_at): jobs that wait to
                                   run; checked (and taken out) at FETCH
  hopper:q:{q}:holders      hash   jid -> wid of the worker holding its reservation, `!wid` once
                                   a cancel was asked for (`!` alone: fetched without a wid)
  hopper:q:{q}:lane:<id>    zset   jid -> score as in prioritized: the waiting jobs of one lane;
                                   id `g:<group>` (jobs of a group) or `t:<jobtype>` (jobs held
                                   back by their jobtype's limits); there while it has jobs
  hopper:q:{q}:lanes        zset   lane id -> its turn: the lanes that may be served (round-robin)
  hopper:q:{q}:resting      zset   lane id -> when to look again: lanes held back by their limits
  hopper:q:{q}:running      hash   lane id -> reservations counted towards its concurrency limit
  hopper:q:{q}:leases       hash   jid -> the lane ids (JSON) a reserved job counts towards
  hopper:q:{q}:buckets      hash   lane id -> `<tokens> <refilled at>` of a rate-limited lane,
                                   until its bucket is full again (a missing one is full)
  hopper:q:{q}:refills      zset   lane id -> when its bucket is full (FETCH forgets a few due)
  hopper:q:{q}:batched      hash   jid -> `<bid>` for a job of a batch not yet run, `!<bid>` once
                                   it failed, `<kind>:<bid>` for a batch's complete | success
                                   callback job (the last two named in lib_batches.lua too)
  hopper:q:{q}:tallies      hash   split mode: `<jid>/<step>` -> JSON [bid, op, kind, now]: a
                                   change to a batch's counts, kept until the batches loop has
                                   made it on the global keys (lib_batches.lua: batch_tally);
                                   `<wf:due entry>/w` -> JSON [entry, now]: an end of a
                                   dependency to mark in wf:due (lib_workflows.lua: wf_mark)
  hopper:q:{q}:blocked      zset   jid -> when it may run (0: at once): jobs waiting for their
                                   dependencies (custom.after), in no other place
  hopper:q:{q}:waits        hash   jid -> `<unmet> <policy> <results>` of a blocked job
  hopper:q:{q}:unmet        hash   jid -> JSON [dep, ...], the dependencies a
                                   blocked job still waits for (each end counted once)
  hopper:q:{q}:dependants   hash   jid -> JSON [queue, jid, ...] of the jobs waiting for it
                                   (these four named in lib_workflows.lua too)
  hopper:q:{q}:cron         hash   split mode (docs/cluster.md): as hopper:g:{g}:cron, for the
                                   cron entries whose jobs go to this queue
  hopper:q:{q}:history      hash   jid -> archived entry of a job that reached a final state
                                   (done, dead, discarded, cancelled, expired, replaced)
  hopper:q:{q}:ended:<s>    zset   jid -> when it ended: the archived jobs of state s
  hopper:q:{q}:ended:<s>:<jobtype>  zset  the same, for one jobtype (these named in
                                   lib_history.lua too)

Global (hash tag `{g}`):
  hopper:g:{g}:schema       string the storage schema number (SCHEMA)
  hopper:g:{g}:split        string present once a broker in split mode (a Redis Cluster, or
                                   redis_split) wrote the store: it keeps no history count
  hopper:g:{g}:jids         hash   jid -> queue of every live job (a jid names one job
                                   broker-wide), or ~queue for a finished one still kept
  hopper:g:{g}:due:<set>    zset   queue -> a time at or before the earliest entry of its <set>
                                   (scheduled, retries, working, dead, finished); there while
                                   it has any
  hopper:g:{g}:due:<set>:touched  hash  queue -> how often split mode added to its due entry
                                   (as due:ended:<s>:touched): a loop's visit makes the entry
                                   later only if it did not change since it read it (lib.lua)
  hopper:g:{g}:queues       set    the queues INFO lists: made by an enqueue, gone with REMOVE
  hopper:g:{g}:stats        hash   processed, failures, processed:<day>, failures:<day>
  hopper:g:{g}:workers      zset   wid -> time of the last heartbeat
  hopper:g:{g}:worker:<wid> hash   state, info, rss_kb, beat, connections of one worker process
  hopper:g:{g}:migrating    string held while a broker migrates an older schema
  hopper:g:{g}:awaited      zset   jid -> until when a JOB WAIT waits for it
  hopper:g:{g}:cron         hash   cron entry id -> the last tick enqueued (unix seconds)
  hopper:g:{g}:draining     string present while the whole broker drains (DRAIN ON)
  hopper:g:{g}:holding      zset   wid -> last heartbeat of a worker that went (its record
                                   deleted) while it may have held jobs: worker_ttl after it,
                                   the lost-worker pass fails what it still holds
  hopper:g:{g}:held:<wid>   set    `queue:jid` of the jobs the worker fetched; an entry may
                                   outlive its reservation (ACKed elsewhere): holders decides
  hopper:g:{g}:batch:<bid>  hash   one batch (Faktory Enterprise): counts, states, callbacks
                                   (see lib_batches.lua); bid is `b-` + 14 URL-safe characters
  hopper:g:{g}:batches:due  zset   `<kind> <bid>` -> when it came due: a callback to push now
  hopper:g:{g}:batches:expiry zset bid -> when its record is purged
  hopper:g:{g}:batch:<bid>:told set split mode: the `<jid>/<step>` tallies made on the batch
  hopper:g:{g}:due:tallies  zset   split mode: queue -> when the batches loop looks at its
                                   tallies (made by a push of a batch's job or of a job that
                                   depends on one of the queue's, before it)
  hopper:g:{g}:history:count hash  final state -> archived jobs kept, every queue together
  hopper:g:{g}:due:ended:<s> zset  queue -> a time at or before its oldest archived job of
                                   state s (these two named in lib_history.lua too)
  hopper:g:{g}:history:lease string  split mode: the token of the broker that runs the
                                   retention by count now (expiring, history.py: LEASE_MS)
  hopper:g:{g}:wf:due       zset   JSON [outcome, queue, jid, dep, result] -> when: the end of a
                                   dependency to settle in its dependant's queue (workflow.lua;
                                   split mode: settle.lua, then taken by the store)
  hopper:pushed             pub/sub channel: a queue name, published when it stops being empty
  hopper:finished           pub/sub channel: an awaited jid, published when its job finishes
  hopper:events             pub/sub channel: job events (lines of JSON), published by the
                            scripts only while a broker subscribes (EVENTS)
  hopper:events:gate        pub/sub channel, never published: a listening broker holds it on
                            every other master of a cluster, so their scripts publish too
"""

SCHEMA = 2
PREFIX = "hopper"
QUEUE_PREFIX = f"{PREFIX}:q:"
GLOBAL = f"{PREFIX}:g:{{g}}"
GLOBAL_PREFIX = f"{PREFIX}:g:"

SCHEMA_KEY = f"{GLOBAL}:schema"
SPLIT_MARK = f"{GLOBAL}:split"
JIDS = f"{GLOBAL}:jids"
QUEUES = f"{GLOBAL}:queues"
STATS = f"{GLOBAL}:stats"
WORKERS = f"{GLOBAL}:workers"
MIGRATING = f"{GLOBAL}:migrating"
AWAITED = f"{GLOBAL}:awaited"
HOLDING = f"{GLOBAL}:holding"
CRON = f"{GLOBAL}:cron"
DRAINING = f"{GLOBAL}:draining"
BATCHES_DUE = f"{GLOBAL}:batches:due"  # named in scripts/lib_batches.lua too
BATCHES_EXPIRY = f"{GLOBAL}:batches:expiry"
BATCH_PREFIX = f"{GLOBAL}:batch:"
DUE_TALLIES = f"{GLOBAL}:due:tallies"
WF_DUE = f"{GLOBAL}:wf:due"  # named in scripts/lib_workflows.lua too
PUSHED_CHANNEL = f"{PREFIX}:pushed"
EVENTS_CHANNEL = f"{PREFIX}:events"  # named in scripts/lib.lua too
EVENTS_GATE = f"{PREFIX}:events:gate"  # held on the other masters of a cluster (lib.lua)
FINISHED_CHANNEL = f"{PREFIX}:finished"
FINISHED_MARK = "~"  # jid index value prefix: the job finished, its final record is kept
CANCEL_MARK = "!"  # holders value prefix: a cancel of the reserved job was asked for

SETS = ("scheduled", "retries", "dead", "working")  # the sorted sets live jobs are in
DUE = {name: f"{GLOBAL}:due:{name}" for name in (*SETS, "finished")}
FINAL_STATES = (
    "done",
    "dead",
    "discarded",
    "cancelled",
    "expired",
    "replaced",
)  # lib_history.lua too
HISTORY_COUNT = f"{GLOBAL}:history:count"
HISTORY_LEASE = f"{GLOBAL}:history:lease"
DUE_ENDED = {state: f"{GLOBAL}:due:ended:{state}" for state in FINAL_STATES}


class QueueKeys:
    """The keys of one queue, built once and reused."""

    __slots__ = (
        "batched",
        "blocked",
        "buckets",
        "cron",
        "dead",
        "dependants",
        "expiring",
        "final",
        "finished",
        "history",
        "holders",
        "jobs",
        "lanes",
        "leases",
        "meta",
        "name",
        "prioritized",
        "progress",
        "queue",
        "refills",
        "resting",
        "retries",
        "running",
        "scheduled",
        "tallies",
        "unmet",
        "waits",
        "working",
    )

    def __init__(self, name: str) -> None:
        base = f"{QUEUE_PREFIX}{{{name}}}"
        self.name = name
        self.jobs = f"{base}:jobs"
        self.queue = f"{base}:queue"
        self.working = f"{base}:working"
        self.scheduled = f"{base}:scheduled"
        self.retries = f"{base}:retries"
        self.dead = f"{base}:dead"
        self.meta = f"{base}:meta"
        self.final = f"{base}:final"
        self.finished = f"{base}:finished"
        self.progress = f"{base}:progress"
        self.holders = f"{base}:holders"
        self.expiring = f"{base}:expiring"
        self.prioritized = f"{base}:prioritized"
        self.lanes = f"{base}:lanes"
        self.resting = f"{base}:resting"
        self.running = f"{base}:running"
        self.leases = f"{base}:leases"
        self.buckets = f"{base}:buckets"
        self.refills = f"{base}:refills"
        self.batched = f"{base}:batched"
        self.tallies = f"{base}:tallies"
        self.blocked = f"{base}:blocked"
        self.waits = f"{base}:waits"
        self.unmet = f"{base}:unmet"
        self.dependants = f"{base}:dependants"
        self.history = f"{base}:history"
        self.cron = f"{base}:cron"

    def ended(self, state: str, jobtype: str | None = None) -> str:
        """The archived jobs that ended in `state` (of one jobtype: after the state's key)."""
        key = f"{QUEUE_PREFIX}{{{self.name}}}:ended:{state}"
        return key if jobtype is None else f"{key}:{jobtype}"

    def lane(self, lane: str) -> str:
        """The waiting jobs of one lane (`g:<group>` or `t:<jobtype>`); named in lib_lanes.lua
        too."""
        return f"{QUEUE_PREFIX}{{{self.name}}}:lane:{lane}"

    def unique(self, digest: str) -> str:
        """The lock of one unique identity (a sha256 digest) in this queue."""
        return f"{QUEUE_PREFIX}{{{self.name}}}:unique:{digest}"

    def zset(self, name: str) -> str:
        """The sorted set called `name`: scheduled, retries, dead, working, finished, blocked."""
        key: str = getattr(self, name)
        return key

    def all(self) -> tuple[str, ...]:
        """Every key of the queue with a fixed name (not its lanes or unique locks)."""
        live = (self.jobs, self.queue, *(self.zset(s) for s in SETS), self.meta)
        extra = (self.holders, self.expiring, self.prioritized)
        lanes = (self.lanes, self.resting, self.running, self.leases, self.buckets, self.refills)
        flows = (self.batched, self.blocked, self.waits, self.unmet, self.dependants)
        return (*live, self.final, self.finished, self.progress, *extra, *lanes, *flows)


def worker(wid: str) -> str:
    """The hash of one worker process; it shares the hash tag of WORKERS."""
    return f"{GLOBAL}:worker:{wid}"


def held(wid: str) -> str:
    """The set of `queue:jid` a worker fetched; it shares the hash tag of HOLDING."""
    return f"{GLOBAL}:held:{wid}"


def batch(bid: str) -> str:
    """The record of one batch; `bid` is checked by broker/batches.py before it gets here."""
    return f"{BATCH_PREFIX}{bid}"


def stand_in(queue: str, key: str) -> str:
    """What a global key is in split mode for a script of `queue` (scripts/lib_outbox.lua): a
    name in the queue's slot, never read or written (any other key as it is)."""
    return f"{QUEUE_PREFIX}{{{queue}}}:@{key}" if key.startswith(GLOBAL_PREFIX) else key


def touched(due: str) -> str:
    """The touch counts of a due index (split mode: scripts/lib_outbox.lua, due_add)."""
    return f"{due}:touched"


def queue_of_key(key: str) -> str | None:
    """The queue a `hopper:q:{<queue>}:...` key belongs to, or None for any other key."""
    if not key.startswith(QUEUE_PREFIX + "{"):
        return None
    end = key.find("}", len(QUEUE_PREFIX))
    return key[len(QUEUE_PREFIX) + 1 : end] if end > 0 else None


def lane_of_key(queue: str, key: str) -> str | None:
    """The lane id of a `hopper:q:{<queue>}:lane:<id>` key, or None for any other key."""
    prefix = f"{QUEUE_PREFIX}{{{queue}}}:lane:"
    return key[len(prefix) :] if key.startswith(prefix) else None
