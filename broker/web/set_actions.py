"""The retries, scheduled and dead pages' actions (POST /<set>/act): retry now, kill or delete
one job, the selected ones, or every one matching the page's filters. Each is a MUTATE by jids
(Mutator.run, as the protocol's MUTATE and the admin CLI's retry|kill|delete do), which acts
on a job only while it is still in the set; "all matching" walks the manager's listing
MAX_LIMIT entries at a time and mutates each page's matches, MAX_PAGES pages at most, and says
how many it acted on."""

import msgspec
from starlette.datastructures import FormData
from starlette.routing import Route

from hopper_broker.manager import Manager
from hopper_broker.web.actions import Act, action
from hopper_broker.web.sets import ACTIONS, FILTERS, SETS, query_of
from hopper_client.schema.errors import CommandError
from hopper_client.schema.jobs import MutateFilter, Mutation
from hopper_client.schema.pages import MAX_LIMIT

MAX_SELECTED = 500  # jids one request acts on at most (a page shows far fewer)
MAX_PAGES = 1000  # listing pages one "all matching" request walks: a million entries


async def _mutate(manager: Manager, target: str, cmd: str, jids: list[str]) -> int:
    mutation = Mutation(cmd=cmd, target=target, filter=MutateFilter(jids=jids))
    return await manager.mutator.run(mutation, manager.clock())


async def _all_matching(
    manager: Manager, target: str, cmd: str, form: FormData
) -> tuple[int, bool]:
    """(how many were acted on, whether it stopped at MAX_PAGES with more to walk)."""
    fields = {name: str(form.get(name, "")) for name in FILTERS}
    query = query_of(target, fields, MAX_LIMIT)
    count = 0
    for _ in range(MAX_PAGES):
        found = await manager.listing.page(query)
        if found.jobs:
            count += await _mutate(manager, target, cmd, [entry.jid for entry in found.jobs])
        if found.cursor is None:
            return count, False
        query = msgspec.structs.replace(query, cursor=found.cursor)
    return count, True


def _act(target: str) -> Act:
    async def act(manager: Manager, form: FormData) -> str:
        op = str(form.get("op", ""))
        if op not in SETS[target][3]:
            raise CommandError(f"no such action on {target}: {op}")
        cmd = ACTIONS[op][0]
        if form.get("all") == "1":
            count, more = await _all_matching(manager, target, cmd, form)
        else:
            jids = list(dict.fromkeys(str(jid) for jid in form.getlist("jid") if jid))
            if not jids:
                raise CommandError("no job selected")
            if len(jids) > MAX_SELECTED:
                raise CommandError(f"at most {MAX_SELECTED} jobs at once")
            count, more = await _mutate(manager, target, cmd, jids), False
        return f"{op}:{count}{':more' if more else ''}"

    return act


def routes() -> list[Route]:
    return [
        Route(f"/{target}/act", action(_act(target), f"/{target}"), methods=["POST"])
        for target in SETS
    ]
