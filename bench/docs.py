"""docs/benchmarks.md: how the figures are measured, the machine, the command, the tables."""

from datetime import datetime
from pathlib import Path
from typing import Any

from bench.machine import describe
from bench.systems import SYSTEMS

METHOD = """\
## How it is measured

- **Servers.** Every run gets fresh servers on this machine: for a peer, a `redis-server`
  started with exactly the command line of Hopper's embedded one (`broker/redis_server.py`:
  unix socket, `appendonly yes`, `appendfsync everysec`, no RDB saves, `noeviction`); for
  Hopper, `hopper run --bind 127.0.0.1:PORT --data-dir DIR` (the broker from the project's
  `.venv`, with that same embedded Redis). All clients talk to Redis over its unix socket and
  to Hopper over loopback TCP.
- **Jobs.** A no-op job with one argument, `sent` (the producer's clock just before the push).
  Its only work is the completion signal, the same for every system: one `write()` of 16 bytes
  (`sent`, start time) to a shared file opened `O_APPEND` (`bench/probe.py`), which threads,
  processes and forked children can all do without locks or losses. The harness counts the
  records and reads them for the end time and the latencies.
- **Workers** run as their own documented CLI or entry point, in a separate process, in
  each system's default execution mode and in its fastest documented one, with logging at
  WARNING (per-job INFO lines would measure the logger). A warm-up job proves the worker up
  before the clock starts. `c` is the number of jobs the worker process runs at once
  (threads, tasks or pool size; for dramatiq's "2 processes" mode, 2 × c/2 threads; for
  Hopper's, `hopper-worker --processes 2 -c c/2`: a supervisor and two worker processes of
  c/2 threads). Hopper's "5 ms CPU jobs" modes run the sync job after it spins 5 ms of its
  thread's CPU time (`BENCH_SPIN_MS`), on 1,000 jobs (N × 0.05).
- **Producers** are separate processes using the system's documented enqueue call
  (`bench/peers/*.py`, `bench/bundled_client.py`, `bench/hopper_faktory.py`).
- **1. Enqueue**: one producer, no worker, as many jobs as it can push in a few seconds;
  single calls, and the documented bulk call in batches of 100 where the library has one.
- **2. End to end**: the worker is up and idle; one producer pushes N = {end_to_end_jobs:,}
  jobs (with the bulk call where there is one, else one by one) while the worker drains them;
  the rate is N over the time from the first push to the start of the last job. `*` marks a
  run cut by the time limit, {timeout:.0f} s after the last push (its rate is that of the jobs
  done by then); rq's workers and the faktory process pool get N × 0.05, 0.5 and 0.5 jobs.
- **3. Latency**: single pushes at a steady 1,000 jobs/s for {latency_seconds:.0f} s (open
  loop) to an idle worker in its fastest mode at c=10 (rq: c=1); latency = job start − `sent`,
  p50 and p99.
- **4. Depth** (Hopper): {depth_jobs:,} jobs pushed by PUSHB over 4 raw connections; then
  broker RSS (`VmRSS`), Redis `used_memory` and RSS, and the FETCH+ACK round trip of one
  worker connection with the queue that deep.
- **5. Connections** (Hopper): {idle_connections:,} connections that said HELLO and nothing
  else, and one working connection timing PUSH+FETCH+ACK cycles; broker RSS with them.
- **6. Idle** (Hopper): {idle_queues:,} queues made known as a user would (one job pushed to
  each, fetched and acknowledged), then the broker and its Redis left alone for
  {idle_seconds:.0f} s: their CPU as % of one core; then the time from the push of a job
  scheduled 1 s ahead to the FETCH that returns it (`bench/idle.py`; standalone:
  `python -m bench.idle --queues 5000 50000`). Background work follows due work only, so
  the figure does not grow with the number of queues: on 2026-12-01 the standalone run gave
  0.23 % for 5,000 queues and 0.30 % for 50,000 (1.00 s for the scheduled job in both).
  Before the storage model of schema 2 (which keeps a due index) the loops visited every
  queue ever seen: 32.9 % of a core for 5,000 queues and 81.4 % for 50,000, one scheduler
  pass taking 0.53 s and 6.0 s, and the scheduled job came after up to 2.9 s and 14.5 s.
- **7. History** (Hopper): {history_jobs:,} jobs run through PUSHB, FETCH and ACK (1 in 50
  dead) over 10 queues and 4 jobtypes on a broker with `finished_ttl = 0`, so that Redis
  `used_memory` grows by the archive alone: bytes per archived job, with args and (a tenth
  as many jobs, `history_args = false`) without. Then HISTORY pages over the wire, 50 tries
  each (p99): one queue; queue + jobtype + state; every queue merged; a deep page (`until`
  1,000 entries back); 1,000 entries at once; by jid; and 20 pages followed by cursor.
  Retention: a reload lowering `max` by 10 %, Redis CPU (`FCALL` µs) per entry deleted
  (`bench/history.py`; standalone: `python -m bench.history --jobs 1000000`).
- **Raw protocol**: `bench/rawload.py`, 10 connections each with one command in flight (the
  shape of the client the reference Faktory figures were taken with), driven by one loop over
  the ready sockets in one process, and the server CPU (broker + Redis) per job from `/proc`.
  Until 2026-12-01 the connections were 10 blocking processes: they took about 300 µs of CPU
  per mixed job themselves (the loop takes 80-100), a third of what this 2-core machine has
  to give when the servers run flat out. **The reference**: given a Faktory server binary
  (`FAKTORY_BIN=path make bench`, or `--reference path`), the harness runs every raw load on
  it too, right after Hopper's, on a fresh data directory (Faktory starts its own
  redis-server on a unix socket, with its RDB snapshots instead of AOF), and the PyPI
  `faktory` client's worker against it as "faktory-py-ref"; the table then says "this run".
  Without one it shows the figures recorded on 2026-12-02 (`bench/report.py`). No Faktory
  binary is installed by the Makefile: Faktory is a Go program outside every registry this
  machine reaches. The one measured here is 1.8.0, built from its source with Debian's Go
  1.19 (1.9 needs Go 1.21), its Go dependencies taken from their repositories at the
  versions its go.mod names; nothing of it is in this repository.
- **Ratios** are Hopper ÷ the best peer figure of any mode and concurrency (for latency,
  lower is better). Peers: huey, dramatiq, rq, saq, arq; "faktory-py" is the PyPI `faktory`
  client against Hopper, not a peer.
"""


READING = """\
## Reading the figures

- **End to end.** The lead comes from the bundled client's pipelining: one worker connection
  keeps a FETCH for every free slot in flight, plus jobs fetched ahead while jobs run short,
  so the next jobs are on their way while these run; ACKs travel in batches, and the broker
  serves each run of FETCHes or ACKs with one Redis call. At c=1 a job is still one round
  trip through the broker (client → broker → Redis → broker → client), which a library that
  talks to Redis directly does not pay.
- **What job control costs the plain path.** Job control (issue 12) was measured against the
  commit before it in the same minutes (`python -m bench --systems hopper --workloads
  end_to_end`, run from a checkout of each): end to end, async, c=10, 17,905 and 16,764
  jobs/s before against 16,611 and 16,142 after (3-7 % less); c=50 25,740 and 30,864 against
  27,701 and 29,028 (within the noise). Round trips are unchanged: one script call each for
  PUSH, FETCH and ACK (Redis `INFO commandstats` over a 20,000-job `bench/rawload.py` run:
  3.00 `EVALSHA` per job before and after); inside them Redis makes 26 calls per job instead
  of 22 (FETCH notes which worker holds the job, ACK drops the note), 2-2.5 µs more Redis CPU
  per job. The event stream costs one `PUBSUB NUMSUB` per script call while nobody listens.
  Keeping finished jobs answerable by jid costs the ACK about 2.5 µs of Redis and 1 µs of
  broker per job; `finished_ttl = 0` removes that.
- **What the scheduling rules cost the plain path** (issue 13: unique, expiring, limits,
  cron). Jobs that carry no rule and queues without settings pay: the push script takes the
  queue's limits from the broker (read at most once a second per queue), the fetch script
  reads the queue's settings with the one call it made before, and looks at expiries only in
  queues that may hold one. Round trips stay at 3 per job; inside the scripts Redis spends
  2.5-3 µs more per script call than before these rules (23.5-23.9 against 26.2-27.0 µs per
  `EVALSHA`, `INFO commandstats` over a 20,000-job `bench/rawload.py` run: larger scripts and
  argument lists); the broker makes 4 % more Python calls (cProfile, same run). End to end,
  async, c=10, side by side: 12,690 / 14,914 / 11,635 / 13,841 jobs/s before, 13,841 /
  12,739 / 11,521 / 15,480 after (within the noise of this box).
  Priorities (a later step of the same issue) were measured the same way: 29.7-35.3 µs per
  `EVALSHA` before and 28.7-34.6 after over five alternating runs, and end to end c=10
  10,782 / 12,085 jobs/s before against 12,026 / 13,201 after: no cost to see.
- **What lanes, batches and the function library cost the plain path** (issues 13 and 14:
  fair groups, group/jobtype/worker limits, Enterprise batches). A job of no group and no
  batch in a queue without lane limits pays two more Redis calls per job inside the scripts
  (ACK asks for the job's lease and its batch with one HMGET each: 28 calls per job against
  26, `INFO commandstats` over a 20,000-job `bench/rawload.py` run; round trips stay at 3
  script calls per job). With these features the shared Lua helpers grew to about 440 lines,
  and running them as the prelude of every EVALSHA cost about 3 µs per call (7.1-7.6 µs for
  an empty script with all helpers against 2.4-3.3 µs bare, on a quiet Redis); so the
  scripts now form one Redis function library (FUNCTION LOAD once, FCALL per call), which
  defines the helpers once. Measured per command on this box while other work shared it
  (3,000 single PUSHes, then FETCHes, then ACKs over one connection, Redis µs per script
  call, alternating runs): before these features PUSH 41.6-47.0, FETCH 46.4-52.8, ACK
  51.9-64.7; after them, as a function library, PUSH 35.8-42.3, FETCH 54.5-58.6, ACK
  51.7-59.1 (the same per job in total: a lighter PUSH, a FETCH that reads more settings and
  defines its lane helpers, an ACK with its two lookups). Before the function library (the
  same features as EVALSHA with the prelude): 53.3-59.3 against 40.8-43.5 µs per script
  call in the mixed run.
  End to end (`python -m bench --systems hopper --workloads end_to_end` from a checkout of
  each, alternating, while other work shared the box, so only a rough check): async c=10
  5,499 / 7,140 jobs/s before against 7,803 / 6,033 after; c=50 12,642 / 16,807 against
  11,710 / 11,383; threads c=10 4,379 / 5,658 against 6,418 / 4,918. Workflows (merged
  after these runs) add one more HMGET to ACK and FAIL for jobs nobody waits for.
- **What the history costs** (issue 14). Archiving a job that ends is written by the script
  that ends it: for a plain ACK, 8 more Redis calls inside the script (29 to 37 per job over a
  5,000-job `bench/rawload.py` run, `INFO commandstats`: the payloads, any earlier entry of the
  jids and the reservations' first expiries read, the entry written, its two index entries,
  the count and the due entry); Redis µs per script call 44.6 before against 51.0 after (the
  first 7) on this box while other work shared it.
  `history = false` removes it all. Memory (`python -m bench.history`, 1,000,000 jobs over 10
  queues and 4 jobtypes, three small args, `finished_ttl = 0` so that only the archive is
  counted): 682 bytes per archived job with args, 644 without (`history_args = false`; the
  args of these jobs are small, so the payload's other fields dominate). Bound it with
  `[retention.<state>] max`: the defaults (100,000 per state) cost about 70 MB per state at
  this size; 1,000,000 done jobs about 680 MB. Pages over 1,000,000 entries, over the wire, 50
  tries each, p50 / p99 ms (2026-12-01, load average 1-4 from other work): one queue
  1.7 / 6.9, queue + jobtype + state 1.5 / 2.8, every queue merged 4.9 / 10.3, a deep page
  (`until` 1,000 entries back) 1.8 / 3.2, 1,000 entries at once 14.8 / 21.2, by jid (10
  queues probed) 0.8 / 1.6; 20 pages followed by cursor 5.2 ms each. Retention: a pass with
  nothing to delete makes the same few commands whatever is kept (tested in
  `tests/test_history.py`); lowering `max` by 10 % deleted 98,000 entries at 7.9 µs of Redis
  CPU each, in steps of 1,000 across the interleaved queues. (A first run, before the review
  fixes and under load 4-6: p99s up to 161 ms from pauses of the box, 19.9 µs per deletion.)
- **`push_replicas`** (issue 17's durability setting): a `WAIT` after each push. Mixed raw
  load (`bench/rawload.py`, 5 pushers + 5 fetchers, a master and one replica on loopback,
  alternating runs, loaded box): 1,362 / 1,562 jobs/s without against 1,095 / 1,032 with
  `push_replicas = 1` (20-34 % fewer; 366-373 against 419-453 µs of broker CPU per job).
- **Process workers** (issue 18). Sync jobs run in threads and share one GIL: CPU-bound
  jobs get one core per worker process, whatever its concurrency. Measured with the
  harness's own runs while other work shared the box (`python -m bench --systems hopper
  --workloads end_to_end --repeat 3`, then the two CPU modes alternating, best of 3, on
  2026-12-01 at load average 3-4 on the 2 cores): 5 ms CPU jobs, c=10, 178 jobs/s with
  threads (0.9 core of job work) against 274 with `--processes 2` (1.4 cores; at most 2 cores
  / 5 ms = 400 with both cores free). No-op jobs: c=10 3,369 (threads) against 3,881 (2
  processes), c=50 10,299 against 7,800 (two workers' FETCHes and ACKs instead of one
  worker's). The single worker's path is unchanged (the command line only gains flags):
  `--workloads end_to_end` at c=10 with the `hopper-worker` of the commit before and after,
  alternating, 4,078 / 4,810 / 5,274 against 4,408 / 4,226 / 5,639 jobs/s async and 3,421 /
  3,658 / 3,441 against 3,281 / 3,645 / 4,239 threads.
- **Raw protocol.** One command per round trip per connection: what any unpipelined Faktory
  client costs the broker. Each command pays a loopback receive and send (on this machine a
  bare trio echo server over 10 connections spends 12-15 µs of CPU per request before doing
  any work), a Redis round trip from the broker (8-12 µs more), and Hopper's own Python per
  command (decode, validate, encode, reply: about 15 µs). So for single PUSHes the Go
  reference is faster, FETCH+ACK is close, and batches (PUSHB) and pipelined clients are
  where Hopper is far ahead. Less Python per command, or several broker processes sharing
  the port (the store already allows several brokers on one Redis), would close the
  single-command gap; the second needs more cores than this machine shares with its load
  generator.

### The plain path, per job (issue 16)

Where a plain job (PUSH, FETCH, ACK, no rules, one command per round trip) spends the server's
CPU, and what issue 16 changed. Measured on 2026-12-01 while other people's test runs shared
the 2 cores (load average 2.5-5), so CPU per job moved by ±20 % between identical runs: counts
are the firm figures, times are ranges of alternating runs (main, then the change).

- **Redis calls inside the scripts**: 37 → 33 per job (`INFO commandstats` over a 20,000-job
  `bench/rawload.py` run, 5 pushers + 5 fetchers). PUSH 6, FETCH 8 (6 without a wid), ACK 23
  → 19: the ACK of a queue without progress, lanes' leases, batches or dependants reads none
  of those four hashes (one `EXISTS` over them instead of four reads), and a job archived alone
  is written with `HSETNX` (its earlier entry is read only when there is one).
  `tests/test_hotpath.py` holds the plain path to them (without a wid: 6, 6 and 18).
- **Redis µs per script call** (10,000 calls of each, pipelined 250 at a time into a fresh
  redis-server; the fastest and the first-quartile batch of three alternating runs): ACK
  48-62 / 66-71 before, 35-53 / 46-57 after; PUSH 18-24 and FETCH 20-31 on both. The cost
  beyond the commands themselves: about 1 µs per `FCALL`, 0.4 µs per `redis.call` and 0.2 µs
  per closure a script makes (`push_queue` makes 10 per call, `fetch` 9).
- **Broker Python**: 667 → 639-650 function calls per job (cProfile counts over the rawload
  run, start-up included), Hopper's own 189 → 173: a lone PUSH skips the workflow graph look,
  the keep policy is built once per settings object, a Redis call waits through one coroutine
  without a closure, a connection looks for commands only when bytes came.
- **Mixed rawload, CPU µs per job** (`--processes 1`, a bare redis-server, eight alternating
  pairs, two of them before the Python steps): broker 378-493 before against 385-483 after,
  Redis 191-276 against 184-262, jobs/s 898-1,531 against 963-1,389: the changes are
  smaller than this box's noise. (The table above was taken when the box was quieter.)
  PUSH alone (5 pushers) costs the broker 122-171 µs per job, FETCH+ACK (5 fetchers)
  290-311, on both; a bare trio server answering `+OK` over the same sockets spends 18-25 µs
  per request under the same load generator (a 30-line script, not kept).
- **Checked on a quiet box after the merge** (the same rawload, 20,000 jobs, three alternating
  pairs): server CPU (broker + Redis) 615 / 724 / 677 µs per job before, 676 / 733 / 544
  after; Redis calls 37.0 → 33.0 exactly. The box itself was slower that afternoon than when
  the raw table above was taken: the code that recorded 3,653 jobs/s at 308 µs (6d3dd63) did
  2,172-2,330 jobs/s at 467-494 µs in the same hour, and today's code 1,780-2,056 at 560-612:
  the features since (lanes, batches, workflows, history on ACK) cost 10-25 % on this path,
  which the trimming above only partly paid back.

Where the rest goes (cProfile of the broker under the same load, by CPU and by wall time):

- **The broker is most of it.** Per command about 210 Python function calls: ~58 Hopper's own
  (decode, validate, one manager and one store call, the reply), ~54 trio's, ~85 built-ins.
  Of the broker's CPU, trio's scheduler and I/O waits take 19-28 %, Hopper's own code 32-44 %,
  built-ins 12-17 %, and the system calls (the loopback `send` of each reply, `recv`,
  `epoll`) 8-35 % (kernel time is 18-31 % of the broker's CPU per job).
- **Two task steps per command.** Each command wakes its connection's task twice: when the
  request arrives and when its Redis reply does (plus the shared writer and reader tasks, a
  fraction of a step each, since they batch every connection's calls). Serving every ready
  connection in one wake-up (a loop over the ready sockets driving the sans-IO protocol, with
  the Redis reader finishing the replies) would remove most of trio's share: an estimated
  20-25 % of the broker's CPU. Measured with a prototype: 17 % (below).
- **Redis**: the three `PUBSUB NUMSUB` per job (events), the `ZCARD` of each ACK (the
  finished jobs' bound), and the closures of `push_queue` and `fetch` (about 2 µs a call each,
  if made once at library load) are the next candidates; a lone plain PUSH could claim its jid
  with `HSETNX` (one call less).
- **Measured again on 2026-12-01 with the one-loop load generator** (`bench/rawload.py` now
  drives its 10 connections from one process; the 10 blocking processes it replaced took
  about 300 µs of CPU per mixed job, the loop 80-100): on this VM the CPU a command costs
  depends mostly on how many wake-ups it shares. PUSH alone from one connection cost the
  broker 418 µs and Redis 143 µs per push (the load loop 117 µs: each process sleeps and
  wakes once per command); from 10 connections 120 and 46 (the loop 27). Mixed, 10
  connections: broker 365-399, Redis 212-226 µs per job, 1,557-1,821 jobs/s, the box not
  saturated (about 1.2 cores busy): the connections wait on round trips. The broker's writer
  already sends the script calls of every connection ready in the same tick together (3.5
  FCALLs per Redis write under the mixed load); what storing the same kind of command of
  several connections with one script call would save is measured below (a prototype).
- **The bundled client's threads share one connection for their pushes** (`client/shared.py`;
  `Client` and `AsyncClient`): 10 threads each waiting for its own reply now put their PUSH
  lines on one connection together (5.8 pushes per push script call in a 20,000-push run),
  where each used to hold a pooled connection of its own. `Client.push` from 10 threads,
  alternating runs of the old and new client against one broker (`bench.produce hopper
  --threads 10`, 20,000-30,000 jobs, the box loaded by other test runs): 4,495 / 3,102 /
  5,404 / 4,864 / 3,760 jobs/s before, 7,733 / 5,882 / 9,870 / 8,352 / 5,469 after (1.45-1.9x).
  Most of what is left is the client process's own thread hand-offs (about 80 µs of its CPU
  per push) and the round trip each batch waits for.
- **The bar** (80 µs of broker + Redis CPU per job) is not reachable by trimming: Redis alone
  spends about 70 µs per job in the scripts in the fastest batches measured, and the broker
  several times that.
  Several broker processes sharing the port (`processes`, already the default with an external
  Redis: one per CPU) raise the rate, not the cost per job.

### One wake-up for every ready connection (issue 16 experiment)

A prototype, not the server, kept on the branch `reactor` (commit 1cabb43, not in `main`: it
patches the broker at run time): `bench/reactor_probe.py` there runs the ordinary broker with
one task that waits on a `select.epoll` of every identified connection and, per wake-up,
receives from each ready socket. A lone PUSH, FETCH or ACK runs as a coroutine stepped by hand:
it runs to its Redis call, whose reply (store/connection.py `_Waiter.wake`) resumes it in the
Redis reader task, which sends the client's reply itself; no task switch is left per command.
Everything else (other verbs, several lines at once, a FETCH that must wait, TLS, end of file)
goes back to the connection's own task. The sides compared:

- A: the broker as it is, a task per connection;
- B: the reactor;
- C: B, the lone PUSHes of one wake-up (several connections) stored with one manager call;
- D: A, the lone PUSHes of the tasks ready together stored with one manager call
  (`bench/reactor_batcher.py`: the first lets the others run once, then stores them all).

On that branch, `python -m bench.reactor_ab --workload push|mixed|floor --sides ABCD` runs them
in turn on fresh servers (`--processes 1`, a bare `redis-server` on a unix socket, 20,000 jobs
after a 2,000-job warm-up, CPU from /proc/<pid>/stat); every run is in its
`bench/results/reactor_ab.jsonl`. Measured on 2026-12-01 at load average 1.5-7.2 (other test
runs on the 2 cores); a side's figure is the median of its runs' ratios to the A run of the same
round:

| side | PUSH only: broker, Redis CPU per job | mixed: broker, Redis CPU per job |
|---|---|---|
| A | 109 µs, 41 µs (median of 24 runs) | 343 µs, 201 µs (24 runs) |
| B | × 0.83, × 0.99 (24 rounds) | × 0.83, × 0.97 (24) |
| C | × 0.52, × 0.54 (20) | × 0.83, × 0.97 (20) |
| D | × 0.79, × 0.61 (12) | × 1.02, × 0.94 (12) |

The floor (`bench/reactor_floor.py`, `+OK` to every line, no Redis, 100,000 commands, 12
rounds): 22.7 µs of CPU per request with a trio task per connection, 12.9 with the reactor
(× 0.57). So trio's per-connection scheduling costs about 10 µs per task step on this box, and
a plain command takes two (its bytes, its Redis reply): the reactor saves 17-20 µs per
command, 17 % of the broker's CPU on both loads, a little under the 20-25 % estimated above;
Redis does the same work. The rest is Hopper's own Python per command (decode, validate, the
manager and store calls, hiredis packing: 450 function calls per mixed job under cProfile
against 615 with tasks), which only fewer calls reduce: storing the PUSHes of several
connections with one call halves both the broker's and Redis's cost of a PUSH when the reactor
gathers them (C: 5-8 PUSHes per call on the PUSH-only load, 3-4.5 on the mixed one, where PUSHes
are a third of the commands and the cheapest). Gathering them among tasks (D) halves Redis's
share too but pays a checkpoint per gathering: a fifth off the broker's PUSH, nothing on the
mixed load. FETCH and ACK gather the same way only once their scripts take a worker id per job
(they take one per call).

What it tells the next step: the reactor alone (17 %) does not pay for rewriting the server
(timeouts, shutdown, TLS, middleware's await points and the cluster connection would all have
to be redone for it); fewer script calls per job do. In order: store the lone PUSHes of several
connections with one call (D, inside `Commands`, gathering only when other connections are
ready so a lone client pays no extra checkpoint); give the ACK and FETCH scripts a worker id
per job so they gather the same way; then weigh the reactor again, which makes gathering free
(C against D).
### Lone commands of several connections stored with one call (issue 16)

Built (`broker/gathering.py`, used by `Commands` for PUSH and ACK): the first connection task
with a lone PUSH (or ACK) leads a gathering. It yields once, so every other connection task
ready in the same pass of trio's scheduler runs its step; those with a lone command of the same
kind hand it to the leader and park. The leader stores them all with one manager call (one
script call per queue) and wakes each with its own outcome; a refusal stays with its own
command. After 4 leaders in a row found no company, lone commands run at once, and every 16th
leads again, so a client alone on the broker does not pay for the extra step. The ACK script
now takes a worker id per job (each worker's held set loses only its own jobs), so ACKs of
different workers gather. A FETCH that must wait now listens on the doorbell before its first
look, not after: a waiting FETCH looks into Redis twice per job it gets (the empty look, then
the look after the ring) instead of three times.

Measured with `python -m bench.ab --side base=<checkout of 7d85d41> --side new=.
--workload push|mixed|fetch|lone --rounds 4-5` (alternating runs on fresh servers: a
redis-server started as the embedded one is, `--processes 1`, 20,000 jobs after a 2,000-job
warm-up; a figure is the median of the per-round ratios to the base run; `fetch` is 10
FETCH+ACK connections on 20,000 jobs pushed before), 2026-12-01, load average 0.4-1.9:

| workload | jobs/s | broker CPU per job | Redis CPU per job |
|---|---|---|---|
| PUSH, 10 connections | × 2.01 | × 0.70 (133-179 → 98-123 µs) | × 0.53 (60-78 → 33-44 µs) |
| FETCH+ACK, 10 connections | × 1.13 | × 1.07 | × 0.83 |
| mixed, 5 + 5 connections (two series) | × 1.45, × 1.04 | × 0.98, × 1.13 | × 0.80, × 0.92 |
| lone: 1 pusher + 1 fetcher | × 1.07 | × 1.00 | × 0.97 |

On the PUSH-only load a push script call carries 5.2 pushes (19,952 of 20,000 pushes gathered,
3,839 calls); on the mixed load 2.5 pushes and 1.9 ACKs per call, on the FETCH+ACK load 3.3
ACKs. Identical runs of the mixed and FETCH+ACK loads vary by ±20 % within minutes on this box
(826-2,009 jobs/s for the same code), so only the PUSH figures are firm: where company is
scarce, the leader's extra step costs the broker about what the saved calls give back, and
Redis is spared 8-20 %.

Tried and dropped: gathering the looks of lone FETCHes (the fetch script taking a worker id per
job, the k-th job found for the k-th worker). On the FETCH+ACK load it halved the script calls
per job (1.30 → 0.73) but not Redis's time in them (1.90 → 1.83 s per 20,000 jobs: a script's
cost is per job, not per call) and cost the broker 3 % more than gathering the ACKs alone.
Tried again on 2026-12-02, the script splitting its jobs among the FETCHes it served (each
worker's throttle kept) and called through the same gathering: on the FETCH+ACK load (5
rounds, `bench.ab` against the same code without it) 2.7 FETCHes per call, Redis × 0.89, the
broker × 1.02, jobs/s × 1.00; on the mixed load (8 rounds; the A/A side × 1.01) 1.3 FETCHes per
call, jobs/s × 0.95, the broker × 1.06, Redis × 0.99: where followers are few the leader's extra
step costs more than they save. Leading only while recent leaders brought one follower or more
on average (instead of until 4 in a row brought none) did worse for all three gatherings:
mixed × 0.93 jobs/s, Redis × 1.12 (ACKs stopped gathering). Both dropped again. So was a
group commit for PUSH and ACK (a request runs at once unless a call of its kind is under way;
those that come meanwhile run together next, led by the first): no extra step for the leader,
but each batch waits a whole call and its leader's wake-up, and the batches were no larger:
PUSH load × 0.90 jobs/s (4 rounds), mixed × 0.80 jobs/s and the broker × 1.18 (6 rounds).

Where the time goes now (profiles taken with the mixed load running):
- **The broker** (py-spy, 500 samples a second): the loopback `send` of each reply 17-23 % of
  its samples, `recv` 11-14 %, `epoll_wait` and trio's `epoll_ctl` re-arming of each socket it
  waits on 17-22 %: half of the broker's time is system calls (one send, one receive and one
  re-arm per command, and an `epoll_wait` per pass of the scheduler, of which a command takes
  two or three), which gathering does not reduce. Hopper's own Python and trio's scheduling
  share the other half, no function above 2 %.
- **Redis** (`perf record` of redis-server): the kernel (socket reads and writes, epoll) 25 %,
  the Lua interpreter about a third, jemalloc 8 %, the commands themselves the rest; latency
  tracking (`hdr_record_values`) 1 %. Per script call (`INFO commandstats`, slow log at 0 µs,
  one connection so nothing else ran meanwhile): an ACK costs about 60 µs of which the history
  archive of the done job (`archive()` in lib_history.lua: the entry built in Lua, two
  `ZADD`s into the ended indexes, the count) about 30; a FETCH 50-60; a PUSH 16 per job in a
  gathered call of four.
- So a mixed job still costs the broker about 350-400 µs and Redis 200 µs on this box, against
  80 µs for both asked by the issue; the system calls of its three commands alone cost the
  broker more than that. The bar stays out of reach of this design by a factor of 5-7. What is
  left, in the order it would pay: serve every ready connection from one wake-up (the prototype
  above: fewer scheduler passes and no re-arm per read, and gathering without the leader's
  extra step), then trim the ACK's archive.

The full run of 2026-12-01 20:44 (29.6 minutes; the run at the top of this page replaced it) ran
on another host than the runs before it: its machine line said Intel Xeon where the earlier
runs' said AMD EPYC, and every system ran 2-3 times slower on it (huey's single enqueue 10,462 →
2,940 jobs/s, dramatiq's 7,325 → 3,295; Hopper's raw PUSH 10,609 → 8,957, FETCH+ACK 6,067 →
3,430, mixed 3,653 → 1,997), with more jitter (huey's p99 at 1,000 jobs/s 0.43 → 50 ms). Figures
quoted from earlier runs elsewhere on this page are from the faster host; compare within one
run. Hopper's single confirmed `Client.push` (657 jobs/s) was checked against the code before
this issue's gathering on that host, alternating (one thread, 4,000 pushes, three pairs): 797 /
1,455 / 1,283 before, 1,227 / 1,168 / 1,063 after, the same within its noise.

### Against the reference server, same run (issue 16)

Until 2026-12-02 the reference column held figures taken on an earlier host with another load
generator (41,000 PUSH/s, 8,800 mixed jobs/s, 160 µs per job). Since then the reference runs in
the same run, under the same load generator (`--reference`, above). Three to five alternating
rounds of 20,000 jobs after a 2,000-job warm-up, each server fresh (`bench.ab`'s shapes, Hopper with
`--processes 1` on a bare redis-server, Faktory 1.8.0 on its own), 2026-12-02, load average
1.0-2.3; CPU is the server's and its Redis's, µs per job:

| shape | reference jobs/s | reference CPU | Hopper jobs/s | Hopper CPU | Hopper ÷ reference |
|---|---|---|---|---|---|
| PUSH, 10 connections | 15,032-18,809 | 70-84 | 4,759-7,182 | 149-210 | 0.32-0.44 |
| FETCH+ACK, 10 connections | 4,223-4,956 | 293-336 | 1,920-2,485 | 466-577 | 0.43-0.50 |
| mixed, 5 + 5 | 3,031-3,363 | 422-455 | 1,230-1,473 | 817-941 | 0.39-0.49 |

With `--processes 2` Hopper did no better on this 2-core machine (mixed 1,294 and 1,287 jobs/s
beside 1,382 and 1,306 for one process, at 25 % more CPU per job), as
[processes.md](processes.md) found with the older load generator.

What the comparison says:
- **Per job, Hopper's Redis works 2.5 times as hard** as the reference's (mixed: 277-327 µs
  against 105-117; PUSH 34-47 against 15-18). The reference keeps a job as a list entry and a
  few keys; Hopper's scripts also write the jid index, the due index, the holder and held
  sets, the counters and the history archive, each move one atomic script. That is the price
  of the storage model's guarantees and of the features on it (job control, history, lanes).
- **The broker's CPU per command is 1.2-2 times the Go server's** (FETCH+ACK 294-367 µs
  against 215-245; PUSH 115-163 against 55-68), the gap issue 16 is about, and its rate is
  further behind than its CPU because one broker process runs on one core: at 1,400 mixed
  jobs/s it keeps that core about 80 % busy, while the Go server spreads its connections over
  both cores.
- **Batched, Hopper is ahead**: PUSHB 43,800 jobs/s against 39,872 (1.10) in the full-raw run
  of the same day, 36 µs per job against 38.5.
- **One connection alone is where Hopper is furthest behind.** The PyPI `faktory` worker
  fetches and acknowledges one job at a time on one connection, so its rate is one over two
  round trips: in the full run above it drained 383-410 jobs/s from Hopper against 837-902
  from the reference, and at 1,000 pushes/s it fell behind on Hopper (p50 2.5 s) but not on
  the reference (3.6 ms). The same serial FETCH+ACK loop alone, through faktory-py's own
  connection (3,000 jobs queued first, two alternating rounds): 1,474 and 1,258 jobs/s on the
  reference, 628 and 604 on Hopper. Alone, a job cost Hopper's broker 692 µs and its Redis
  365 µs of CPU (py-spy: trio's `epoll_wait` and the reply's `send` take 41 % of the broker's
  samples): each command pays a whole sleep and wake-up of both processes, which nothing else
  shares. This is the shape issue 16 is about, and the one the reactor prototype (one
  wake-up serving every ready connection) does not help: it has one connection.
- The bar issue 16 set (mixed ≥ 1.5 times the reference, ≤ 80 µs per job) was written against
  the earlier figures; on this machine, against the reference measured beside it, Hopper is at
  0.3-0.5 of its rate and twice its CPU per job.

### A lone command sent when the scheduler pass ends (issue 16)

Until 2026-12-02 every Redis command a connection task queued woke the shared writer task, which
ran one pass of trio's scheduler later (after another `epoll_wait`), joined what had accumulated
and sent it. Now (store/connection.py) a command with nothing else in flight on the Redis
connection is sent by a trio instrument's `before_io_wait`, when the pass that queued it ends: no
task step and no extra pass for it. While earlier writes still await their replies (a busy
broker), the writer is woken as before, so the commands of the tasks woken meanwhile join its
write. What the kernel does not take at once (a large write) is finished by the writer, woken
through the loop's wake-up channel: a task merely rescheduled from the hook would sleep through
the wait the loop had already timed (tests/test_pipeline.py holds both).

Measured with `python -m bench.ab --side base=<checkout of 6f2ebc5> --side new=. --workload W`
(20,000 jobs after a 2,000-job warm-up, each side on fresh servers, `--processes 1`), 2026-12-02,
load average 0.7-1.6; median of the per-round ratios to the base run. An A/A side (the base code
run third in each round) shows what the order alone does: 3-4 % more CPU and 3-5 % fewer jobs/s
for whoever runs later in a round.

| workload | rounds | jobs/s | broker CPU per job | Redis CPU per job | A/A: jobs/s, broker, Redis |
|---|---|---|---|---|---|
| lone: 1 pusher + 1 fetcher | 3 | × 1.475 | × 0.77 | × 0.79 | |
| PUSH, 10 connections | 6 | × 0.965 | × 1.05 | × 1.07 | × 0.955, × 1.04, × 1.03 |
| FETCH+ACK, 10 connections | 3 | × 1.04 | × 0.98 | × 1.00 | × 0.97, × 1.04, × 1.03 |
| mixed, 5 + 5 | 4 | × 1.045 | × 0.99 | × 1.00 | × 0.97, × 1.03, × 1.01 |
| serial: PyPI faktory's connection | 8 | × 1.12 | × 0.88 | × 0.92 | |

The lone pair gains most (another series of 3 rounds: × 1.14): each of its commands used to pay
a scheduler pass and a writer step of its own. The loaded shapes are where they were, within the
order effect. The serial loop (FETCH, then ACK, one job at a time on the PyPI `faktory` client's
connection; another series of 4 rounds: × 0.90, the A/A side × 1.02) is unchanged within its
noise: the same code did 357-972 jobs/s from one round to the next, and its CPU per job moved
inversely with its rate (550-1,380 µs of the broker's, 320-750 of Redis's), the mark of a loop
whose cost is the sleeps and wake-ups of its three processes (client, broker, Redis: four
wake-ups per command) rather than the work.

Tried and dropped:
- Sending from the hook at the end of every pass, whether or not earlier writes await replies:
  the lone pair gained as much (× 1.13-1.41 in three series), but PUSH from 10 connections lost
  5-7 % of its rate and FETCH+ACK cost Redis 13 % more (smaller writes: each pass's commands went
  alone instead of joining the next pass's).
- Sending from the hook only when the loop was about to sleep, else waking the writer: mixed
  × 0.96 and PUSH × 0.94-0.99 against the same A/A drift, lone × 1.41.
- Busy-polling the Redis socket from the hook after a lone send (up to 100 or 300 µs, the way
  Go's scheduler spins before it parks a thread), so the reply would be found without a sleep
  and a wake-up: the lone pair × 1.04 at 23 % more broker CPU; the serial loop unchanged (828-985
  against 795-1,036 jobs/s) at 300 µs more of the broker's CPU per job. The reply takes longer
  than the spin: Redis has to wake up too.

Where the lone pair's broker time goes now (py-spy at 500 samples a second): trio's `epoll_wait`
35 % of the samples, the `send` of the replies to the clients 14 % and of the commands to Redis
8 %, Hopper's commands, manager and store 10 %: the kernel's share of a command (its sleep, its
wake-up and its two loopback sends) is most of what it costs when nothing else shares them.
"""


def write(
    path: Path,
    tables: str,
    size: dict[str, Any],
    duration: float,
    started: datetime,
    reference: str = "",
) -> None:
    """Rewrite the page; `size` holds the job counts and limits the run used, `reference`
    the reference server's version when the run had one."""
    machine = describe()
    versions = ", ".join(f"{s.name} {s.version}" for s in SYSTEMS if s.backend != "reference")
    command = "make bench"
    if reference:
        versions += f", the reference server: {reference} (`FAKTORY_BIN`)"
        command = "FAKTORY_BIN=<the reference server's binary> make bench"
    path.write_text(
        f"""# Benchmarks

Hopper side by side with the job systems a Python team would pick instead, on one box.
Produced by `make bench` (the harness in `bench/`); raw results in `bench/results/latest.json`.

![throughput and latency per system](benchmarks.png)

- **Command**: `{command}` (`.venv-bench/bin/python -m bench`; `--quick` for a short run)
- **Run**: {started:%Y-%m-%d %H:%M} UTC, {duration / 60:.1f} minutes
- **Machine**: {machine["cpu"]}, {machine["cores"]} cores, {machine["memory"]}, Linux
  {machine["kernel"]}, Python {machine["python"]}, redis-server {machine["redis_server"]}; load
  average {machine["load_average"]} when the tables were written (other work on the box
  shows here)
- **Versions**: {versions} (pinned in `bench/requirements.txt`)

{tables}

{METHOD.format(**size)}
{READING}"""
    )
