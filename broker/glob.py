"""Redis glob matching, as Redis's own stringmatchlen does it: `*`, `?`, `[abc]`, `[^abc]`,
ranges in either order (`[a-z]`, `[z-a]`), backslash escapes, and a class left open running to
the end of the pattern. Time is at most pattern × text, never exponential; patterns made only of
text and `*` are matched with plain substring searches.
"""

from functools import lru_cache

Token = tuple[object, ...]
STAR: Token = ("*",)
ANY: Token = ("?",)


class Glob:
    """A compiled pattern: `Glob.of(pattern).match(text)`."""

    __slots__ = ("parts", "tokens")

    def __init__(self, tokens: tuple[Token, ...], parts: tuple[str, ...] | None) -> None:
        self.tokens = tokens
        self.parts = parts  # the text between stars, when the pattern has nothing else

    @staticmethod
    @lru_cache(maxsize=64)
    def of(pattern: str) -> "Glob":
        plain = not any(c in pattern for c in "?[\\")
        return Glob(_tokens(pattern), tuple(pattern.split("*")) if plain else None)

    def match(self, text: str) -> bool:
        if self.parts is not None:
            return _match_parts(self.parts, text)
        return _match_tokens(self.tokens, text)


def _tokens(pattern: str) -> tuple[Token, ...]:
    tokens: list[Token] = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "*":
            if not tokens or tokens[-1] is not STAR:
                tokens.append(STAR)
        elif c == "?":
            tokens.append(ANY)
        elif c == "\\" and i + 1 < n:
            i += 1
            tokens.append(("=", pattern[i]))
        elif c == "[":
            token, i = _char_class(pattern, i + 1)
            tokens.append(token)
            continue
        else:
            tokens.append(("=", c))
        i += 1
    return tuple(tokens)


def _char_class(pattern: str, i: int) -> tuple[Token, int]:
    """Parse a class whose body starts at `i`; returns the token and where the pattern goes on."""
    n = len(pattern)
    negate = i < n and pattern[i] == "^"
    i += negate
    chars: set[str] = set()
    ranges: list[tuple[str, str]] = []
    while i < n and pattern[i] != "]":
        if pattern[i] == "\\" and i + 1 < n:
            chars.add(pattern[i + 1])
            i += 2
        elif i + 2 < n and pattern[i + 1] == "-":
            low, high = sorted((pattern[i], pattern[i + 2]))
            ranges.append((low, high))
            i += 3
        else:
            chars.add(pattern[i])
            i += 1
    return ("[", negate, frozenset(chars), tuple(ranges)), i + 1


def _one(token: Token, c: str) -> bool:
    if token is ANY:
        return True
    if token[0] == "=":
        return token[1] == c
    _, negate, chars, ranges = token
    hit = c in chars or any(low <= c <= high for low, high in ranges)  # type: ignore[attr-defined, operator]
    return hit != negate


def _match_tokens(tokens: tuple[Token, ...], text: str) -> bool:
    """Greedy matching that backtracks only to the last star: O(len(tokens) × len(text))."""
    t = p = 0
    star, resume = -1, 0
    while t < len(text):
        if p < len(tokens) and tokens[p] is STAR:
            star, resume = p, t
            p += 1
        elif p < len(tokens) and _one(tokens[p], text[t]):
            t += 1
            p += 1
        elif star >= 0:
            resume += 1
            t, p = resume, star + 1
        else:
            return False
    while p < len(tokens) and tokens[p] is STAR:
        p += 1
    return p == len(tokens)


def _match_parts(parts: tuple[str, ...], text: str) -> bool:
    """Text and stars only: prefix, suffix, and each middle part found left to right."""
    if len(parts) == 1:
        return text == parts[0]
    first, *middle, last = parts
    if len(first) + len(last) > len(text) or not text.startswith(first):
        return False
    if not text.endswith(last):
        return False
    position, end = len(first), len(text) - len(last)
    for part in middle:
        found = text.find(part, position, end)
        if found < 0:
            return False
        position = found + len(part)
    return True
