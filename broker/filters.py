"""Pure matching of MUTATE filters against stored jobs."""

import re
from functools import lru_cache

from broker.jobs import MutateFilter


@lru_cache(maxsize=64)
def glob_regex(pattern: str) -> re.Pattern[str]:
    """Translate a Redis glob (`*`, `?`, `[...]`, `[^...]`, backslash escapes) to a regex."""
    out: list[str] = []
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\" and i + 1 < len(pattern):
            out.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        if c == "*":
            out.append(".*")
        elif c == "?":
            out.append(".")
        elif c == "[":
            end = pattern.find("]", i + 2)
            if end == -1:
                out.append(re.escape(c))
            else:
                body = pattern[i + 1 : end]
                negate = body.startswith("^")
                body = body[1:] if negate else body
                body = body.replace("\\", "\\\\")
                out.append(f"[{'^' if negate else ''}{body}]")
                i = end
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("".join(out), re.DOTALL)


def matches(flt: MutateFilter, payload: str, jobtype: str) -> bool:
    """Whether a job (its stored JSON and its jobtype) passes a regexp/jobtype filter."""
    if flt.jobtype and jobtype != flt.jobtype:
        return False
    return not flt.regexp or glob_regex(flt.regexp).fullmatch(payload) is not None
