"""``SubscribedTopicRegex`` of the consumer group protocol (KIP-848): RE2/J syntax, full match, bounded work.

Kafka 4.0's group coordinator compiles the regex with ``com.google.re2j.Pattern.compile`` (re2j 1.8)
and subscribes a member to every topic for which ``pattern.matcher(topicName).matches()`` holds,
that is a match of the WHOLE name (``GroupMetadataManager.refreshRegularExpressions``). A regex
that does not compile is answered INVALID_REGULAR_EXPRESSION (128) with the message of
``org.apache.kafka.coordinator.group.Utils.throwIfRegularExpressionIsInvalid``:
``SubscribedTopicRegex `<regex>` is not a valid regular expression: <description>.``, where the
description is RE2/J's ``PatternSyntaxException.getDescription()`` ("missing closing )", ...);
:class:`TopicRegexError` carries exactly that message.

Why our own matcher: the pattern comes from any client and is matched against every topic of the
cluster, again whenever topics change, so its cost must not depend on what the client wrote.
Python's ``re`` backtracks (``(a+)+b`` against 249 ``a`` does not finish) and its syntax differs
from RE2's (``\\Z``, ``(?=``, ``\\1``, ``a*+`` are RE2 errors; ``\\z``, ``\\pN``, ``[[:alpha:]]`` are not
``re``). Here: the pattern is parsed with RE2/J's rules (its ``Parser``, read for the rules only)
into a tree, compiled to a Thompson NFA, and run as a DFA built lazily, one transition per
(state, character) seen, cached on the :class:`TopicRegex`. A match costs one dict lookup per
character once warm; a new transition costs at most one pass over the NFA (``MAX_NFA_STATES``),
so a name of n characters costs O(n * MAX_NFA_STATES) at worst, whatever the pattern.

Deliberate differences from RE2/J (every one a refusal of something RE2/J accepts, or a message):

- patterns longer than ``MAX_PATTERN_LENGTH`` characters are refused (checked first, O(1));
- a syntax tree deeper than ``MAX_NESTING_DEPTH`` is refused ("expression nests too deeply", Go's
  text; Go refuses above 1000, RE2/J has no limit);
- a program over ``MAX_NFA_STATES`` NFA states is refused ("expression too large", Go's text):
  ``(a{1000}){1000}`` is a million states; RE2/J builds it;
- ``\\p{Name}`` / ``\\pN``: only ``Any`` and the Unicode general categories (``L``, ``Lu``, ``Nd``,
  ...) are supported, from Python's ``unicodedata`` (its Unicode version, not RE2/J's tables);
  script names (``\\p{Greek}``, ``\\p{Han}``) are refused as not supported by this broker;
- an unbalanced ``)`` is described as "unexpected )" (RE2/J 1.8 says "regexp/syntax: internal error");
- a pattern too long to quote is quoted truncated in the message.

Supported as RE2/J does: literals; ``.`` (no ``\\n`` unless ``(?s)``); escapes of punctuation,
``\\a \\f \\t \\n \\r \\v``, octal ``\\0`` ``\\123`` (a lone ``\\1``-``\\7`` is a backreference: refused),
``\\x41``, ``\\x{10FFFF}``; ``\\d \\D \\s \\S \\w \\W`` (ASCII); bracket classes with ranges, negation
(``[^a]`` matches ``\\n``), Perl classes and POSIX classes ``[[:alpha:]]`` ``[[:^digit:]]``; anchors
``^ $`` (text start/end; line start/end under ``(?m)``), ``\\A \\z \\b \\B`` (ASCII word characters);
groups ``( )``, ``(?: )``, ``(?P<n> )``, ``(?<n> )``; flags ``i m s U`` set, cleared (``(?-i)``) or
scoped (``(?i:...)``); ``|``; ``* + ? {n} {n,} {n,m}`` (n, m <= 1000) and their lazy forms (laziness
cannot change a full match); ``\\Q...\\E``. As in RE2/J, a ``{`` that does not parse as a repeat
is a literal, and a repetition right after it is "invalid nested repetition operator".

Case folding under ``(?i)``: two characters are equal when ``c.upper().lower()`` agree (simple
mappings only), which is Unicode simple case folding for ASCII and close to it elsewhere (``k``
matches KELVIN SIGN and ``s`` LONG S, as in RE2/J). Topic names are ASCII ``[a-zA-Z0-9._-]``, so
the non-ASCII corner cases cannot differ on a legal topic.

Cost (CPython 3.11, this machine: 2 CPUs, load ~2 from a concurrent CI run, so noisy): matching
10,000 topic names of 20-60 characters (half starting ``orders-``), warm, best of 5: ``orders-.*``
11.5 ms (~1 us a name: a dict lookup a character), ``(?i)(orders|payments)-[a-z]+-\\d{2,4}(\\.v\\d+)?``
3.1 ms (most names die at their first characters), ``.*a.*b.*c.*d.*`` 17.8 ms. Compiling is 0.1-0.2 ms;
the first 10,000 names add ~1-5 ms of DFA construction (plus ~40 ms once per process for the case
folding table at the first ``(?i)``). Command (replace the pattern)::

    python -m timeit -s "from shardbroker.broker.topic_regex import compile_topic_regex as c
    import random; r=random.Random(1); a='abcdefghijklmnopqrstuvwxyz0123456789._-'
    ts=[('orders-' if i%2 else '')+''.join(r.choice(a) for _ in range(r.randint(13,53)))
        for i in range(10000)]
    p=c(r'orders-.*'); [p.matches(t) for t in ts]" "[p.matches(t) for t in ts]"

A :class:`TopicRegex` mutates its DFA cache while matching: share one across threads only under a lock.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from typing import Final, Protocol

__all__ = [
    "MAX_DFA_CACHE_ENTRIES",
    "MAX_NESTING_DEPTH",
    "MAX_NFA_STATES",
    "MAX_PATTERN_LENGTH",
    "MAX_REPEAT",
    "TopicRegex",
    "TopicRegexError",
    "compile_topic_regex",
]

#: Longest pattern accepted. Kafka itself has no bound but the request size; a topic name is at most
#: 249 characters, so even an alternation of 30 full names fits, while parsing and compiling stay
#: in the low milliseconds and an error message quoting the pattern stays small.
MAX_PATTERN_LENGTH: Final = 8192
#: Largest repeat count, RE2's (``{1001}`` is "invalid repeat count" in RE2, RE2/J and Go).
MAX_REPEAT: Final = 1000
#: Largest NFA (states after expanding counted repetitions). Bounds the work of one new DFA
#: transition and of compiling; RE2 refuses large programs too (its ``max_mem``), RE2/J does not.
MAX_NFA_STATES: Final = 10_000
#: Deepest syntax tree (a repetition, or a group holding a sequence or an alternation, is one more
#: level; Go's regexp/syntax refuses above 1000). Keeps compiling far from Python's recursion limit;
#: no topic regex nests 200 deep.
MAX_NESTING_DEPTH: Final = 200
#: DFA cache budget of one TopicRegex, in cached transitions plus NFA states held by cached DFA
#: states (a few MB at most); when exceeded the cache is dropped and rebuilt, as RE2 does.
MAX_DFA_CACHE_ENTRIES: Final = 200_000

# RE2/J's PatternSyntaxException descriptions (com.google.re2j.Parser, re2j 1.8).
ERR_INVALID_CHAR_RANGE: Final = "invalid character class range"
ERR_INVALID_ESCAPE: Final = "invalid escape sequence"
ERR_INVALID_NAMED_CAPTURE: Final = "invalid named capture"
ERR_INVALID_PERL_OP: Final = "invalid or unsupported Perl syntax"
ERR_INVALID_REPEAT_OP: Final = "invalid nested repetition operator"
ERR_INVALID_REPEAT_SIZE: Final = "invalid repeat count"
ERR_MISSING_BRACKET: Final = "missing closing ]"
ERR_MISSING_PAREN: Final = "missing closing )"
ERR_MISSING_REPEAT_ARGUMENT: Final = "missing argument to repetition operator"
ERR_TRAILING_BACKSLASH: Final = "trailing backslash at end of expression"
ERR_DUPLICATE_NAMED_CAPTURE: Final = "duplicate capture group name"
# Ours (Go's regexp/syntax wording where Go has one).
ERR_UNEXPECTED_PAREN: Final = "unexpected )"
ERR_NESTING_DEPTH: Final = "expression nests too deeply"
ERR_LARGE: Final = "expression too large"

_QUOTE_LIMIT: Final = 100  # characters of an over-long pattern quoted in the message


class TopicRegexError(ValueError):
    """A SubscribedTopicRegex refused; ``str(error)`` is Kafka's INVALID_REGULAR_EXPRESSION message."""

    def __init__(self, pattern: str, description: str) -> None:
        quoted = pattern if len(pattern) <= MAX_PATTERN_LENGTH else pattern[:_QUOTE_LIMIT] + "..."
        super().__init__(f"SubscribedTopicRegex `{quoted}` is not a valid regular expression: {description}.")
        self.pattern = pattern
        #: RE2/J's ``PatternSyntaxException.getDescription()`` equivalent.
        self.description = description


# ---------------------------------------------------------------------------------------------
# Character classes: predicates, evaluated only when a DFA transition is built.


class _Class(Protocol):
    def contains(self, ch: str) -> bool: ...


@dataclass(frozen=True, slots=True)
class _Ranges:
    ranges: tuple[tuple[int, int], ...]

    def contains(self, ch: str) -> bool:
        cp = ord(ch)
        return any(lo <= cp <= hi for lo, hi in self.ranges)


@dataclass(frozen=True, slots=True)
class _Categories:
    names: frozenset[str]  # two-letter general categories

    def contains(self, ch: str) -> bool:
        return unicodedata.category(ch) in self.names


@dataclass(frozen=True, slots=True)
class _AnyChar:
    def contains(self, ch: str) -> bool:
        return True


@dataclass(frozen=True, slots=True)
class _Not:
    inner: _Class

    def contains(self, ch: str) -> bool:
        return not self.inner.contains(ch)


@dataclass(frozen=True, slots=True)
class _Union:
    items: tuple[_Class, ...]

    def contains(self, ch: str) -> bool:
        return any(item.contains(ch) for item in self.items)


@dataclass(frozen=True, slots=True)
class _Folded:
    inner: _Class

    def contains(self, ch: str) -> bool:
        return any(self.inner.contains(other) for other in _fold_orbit(ch))


def _fold_key(ch: str) -> str:
    upper = ch.upper()
    if len(upper) != 1:
        upper = ch
    lower = upper.lower()
    return lower if len(lower) == 1 else upper


_fold_members: dict[str, tuple[str, ...]] = {}


def _fold_orbit(ch: str) -> tuple[str, ...]:
    """``ch`` and every character case-equivalent to it (built once, ~40 ms, on first use)."""
    if not _fold_members:
        members: dict[str, list[str]] = {}
        for cp in range(0x1F000):  # no cased character above U+1E943
            c = chr(cp)
            key = _fold_key(c)
            if key != c or c.upper() != c:
                members.setdefault(key, [key]).append(c)
        _fold_members.update((k, tuple(dict.fromkeys(v))) for k, v in members.items())
    key = _fold_key(ch)
    orbit = _fold_members.get(key)
    if orbit is None:
        return (ch,) if key == ch else (ch, key)
    return orbit if ch in orbit else (ch, *orbit)


def _r(*pairs: tuple[str, str]) -> tuple[tuple[int, int], ...]:
    return tuple((ord(lo), ord(hi)) for lo, hi in pairs)


_DIGIT = _r(("0", "9"))
_WORD = _r(("0", "9"), ("A", "Z"), ("_", "_"), ("a", "z"))
_PERL_GROUPS: Final[dict[str, tuple[tuple[int, int], ...]]] = {
    "d": _DIGIT,
    "s": _r(("\t", "\n"), ("\f", "\r"), (" ", " ")),
    "w": _WORD,
}
_POSIX_GROUPS: Final[dict[str, tuple[tuple[int, int], ...]]] = {
    "alnum": _r(("0", "9"), ("A", "Z"), ("a", "z")),
    "alpha": _r(("A", "Z"), ("a", "z")),
    "ascii": _r(("\x00", "\x7f")),
    "blank": _r(("\t", "\t"), (" ", " ")),
    "cntrl": _r(("\x00", "\x1f"), ("\x7f", "\x7f")),
    "digit": _DIGIT,
    "graph": _r(("!", "~")),
    "lower": _r(("a", "z")),
    "print": _r((" ", "~")),
    "punct": _r(("!", "/"), (":", "@"), ("[", "`"), ("{", "~")),
    "space": _r(("\t", "\r"), (" ", " ")),
    "upper": _r(("A", "Z")),
    "word": _WORD,
    "xdigit": _r(("0", "9"), ("A", "F"), ("a", "f")),
}
# Go's unicode.Categories (what RE2/J's tables hold): "C" is Cc|Cf|Co|Cs (not Cn).
_CATEGORY_NAMES: Final = frozenset(
    [
        "Cc",
        "Cf",
        "Co",
        "Cs",
        "Ll",
        "Lm",
        "Lo",
        "Lt",
        "Lu",
        "Mc",
        "Me",
        "Mn",
        "Nd",
        "Nl",
        "No",
        "Pc",
        "Pd",
        "Pe",
        "Pf",
        "Pi",
        "Po",
        "Ps",
        "Sc",
        "Sk",
        "Sm",
        "So",
        "Zl",
        "Zp",
        "Zs",
    ]
)


def _category(name: str) -> _Class | None:
    if name == "Any":
        return _AnyChar()
    if name in _CATEGORY_NAMES:
        return _Categories(frozenset({name}))
    if len(name) == 1:
        names = frozenset(n for n in _CATEGORY_NAMES if n[0] == name)
        if names:
            return _Categories(names)
    return None


def _is_word(ch: str) -> bool:
    return ch == "_" or (ch.isascii() and ch.isalnum())


# ---------------------------------------------------------------------------------------------
# Syntax tree.

_BEGIN_TEXT, _END_TEXT, _BEGIN_LINE, _END_LINE, _WORD_BOUNDARY, _NO_WORD_BOUNDARY = range(6)


@dataclass(slots=True)
class _Char:
    cls: _Class
    depth: int = 0


@dataclass(slots=True)
class _Assert:
    kind: int
    depth: int = 0


@dataclass(slots=True)
class _Concat:
    items: list[_Node]
    depth: int


@dataclass(slots=True)
class _Alt:
    items: list[_Node]
    depth: int


@dataclass(slots=True)
class _Repeat:
    sub: _Node
    min: int
    max: int  # -1: unbounded
    depth: int


_Node = _Char | _Assert | _Concat | _Alt | _Repeat


def _height(items: list[_Node]) -> int:
    return 1 + max((item.depth for item in items), default=0)


# Parse flags.
_FOLD, _DOT_NL, _MULTI_LINE, _NON_GREEDY = 1, 2, 4, 8
_FLAG_BITS: Final = {"i": _FOLD, "s": _DOT_NL, "m": _MULTI_LINE, "U": _NON_GREEDY}


@dataclass(slots=True)
class _Frame:
    saved_flags: int
    alternatives: list[list[_Node]]
    items: list[_Node]

    def node(self) -> _Node:
        branches = [*self.alternatives, self.items]
        nodes: list[_Node] = [b[0] if len(b) == 1 else _Concat(b, _height(b)) for b in branches]
        return nodes[0] if len(nodes) == 1 else _Alt(nodes, _height(nodes))


class _Parser:
    """RE2/J's grammar (``Pattern.compile`` flags: Perl, one-line), left to right, first error wins."""

    def __init__(self, pattern: str) -> None:
        self.p = pattern
        self.n = len(pattern)
        self.pos = 0
        self.flags = 0
        self.frames = [_Frame(0, [], [])]
        self.names: set[str] = set()

    def fail(self, description: str) -> TopicRegexError:
        return TopicRegexError(self.p, description)

    @property
    def items(self) -> list[_Node]:
        return self.frames[-1].items

    def literal(self, cp: int) -> None:
        cls: _Class = _Ranges(((cp, cp),))
        ch = chr(cp)
        if self.flags & _FOLD and not ch.lower() == ch.upper() == ch:
            cls = _Folded(cls)
        self.items.append(_Char(cls))

    def parse(self) -> _Node:
        p, n = self.p, self.n
        last_repeat = False
        while self.pos < n:
            c = p[self.pos]
            repeat = False
            if c == "(":
                if p.startswith("(?", self.pos):
                    self.perl_flags()
                else:
                    self.open_group(self.flags)
                    self.pos += 1
            elif c == "|":
                frame = self.frames[-1]
                frame.alternatives.append(frame.items)
                frame.items = []
                self.pos += 1
            elif c == ")":
                if len(self.frames) == 1:
                    raise self.fail(ERR_UNEXPECTED_PAREN)
                frame = self.frames.pop()
                self.flags = frame.saved_flags
                self.items.append(self.checked(frame.node()))
                self.pos += 1
            elif c == "^":
                self.items.append(_Assert(_BEGIN_LINE if self.flags & _MULTI_LINE else _BEGIN_TEXT))
                self.pos += 1
            elif c == "$":
                self.items.append(_Assert(_END_LINE if self.flags & _MULTI_LINE else _END_TEXT))
                self.pos += 1
            elif c == ".":
                dot: _Class = _AnyChar() if self.flags & _DOT_NL else _Not(_Ranges(((10, 10),)))
                self.items.append(_Char(dot))
                self.pos += 1
            elif c == "[":
                self.items.append(_Char(self.bracket_class()))
            elif c in "*+?":
                self.pos += 1
                bounds = {"*": (0, -1), "+": (1, -1), "?": (0, 1)}[c]
                self.repeat(*bounds, last_repeat)
                repeat = True
            elif c == "{":
                # RE2/J marks a repeat position before trying {n,m}, even when '{' turns out literal.
                repeat = True
                bounds_or_none = self.counted_repeat()
                if bounds_or_none is None:
                    self.literal(ord("{"))
                    self.pos += 1
                else:
                    self.repeat(*bounds_or_none, last_repeat)
            elif c == "\\":
                self.escape()
            else:
                self.literal(ord(c))
                self.pos += 1
            last_repeat = repeat
        if len(self.frames) != 1:
            raise self.fail(ERR_MISSING_PAREN)
        return self.checked(self.frames[0].node())

    def checked(self, node: _Node) -> _Node:
        if node.depth > MAX_NESTING_DEPTH:
            raise self.fail(ERR_NESTING_DEPTH)
        return node

    def open_group(self, saved_flags: int) -> None:
        self.frames.append(_Frame(saved_flags, [], []))

    def repeat(self, lo: int, hi: int, last_repeat: bool) -> None:
        if self.pos < self.n and self.p[self.pos] == "?":
            self.pos += 1  # lazy: same full-match answer
        if last_repeat:
            raise self.fail(ERR_INVALID_REPEAT_OP)
        items = self.items
        if not items:
            raise self.fail(ERR_MISSING_REPEAT_ARGUMENT)
        items[-1] = self.checked(_Repeat(items[-1], lo, hi, items[-1].depth + 1))

    def counted_repeat(self) -> tuple[int, int] | None:
        """``{n}``, ``{n,}``, ``{n,m}`` at pos (advanced past it), or None if '{' is a literal."""
        p, n = self.p, self.n
        i = self.pos + 1

        def number(i: int) -> tuple[int, int] | None:  # (value or -2 if too long, end)
            j = i
            while j < n and "0" <= p[j] <= "9":
                j += 1
            digits = p[i:j]
            if not digits or (len(digits) > 1 and digits[0] == "0"):
                return None
            return (int(digits) if len(digits) <= 8 else -2), j

        lo_end = number(i)
        if lo_end is None:
            return None
        lo, i = lo_end
        if i >= n:
            return None
        if p[i] != ",":
            hi = lo
        else:
            i += 1
            if i >= n:
                return None
            if p[i] == "}":
                hi = -1
            else:
                hi_end = number(i)
                if hi_end is None:
                    return None
                hi, i = hi_end
                if hi == -2:
                    hi = MAX_REPEAT + 1
        if i >= n or p[i] != "}":
            return None
        self.pos = i + 1
        if lo < 0 or lo > MAX_REPEAT or hi > MAX_REPEAT or (hi >= 0 and lo > hi):
            raise self.fail(ERR_INVALID_REPEAT_SIZE)
        return lo, hi

    def perl_flags(self) -> None:
        p, start = self.p, self.pos
        if p.startswith("(?P<", start) or p.startswith("(?<", start):
            begin = start + (4 if p[start + 2] == "P" else 3)
            end = p.find(">", begin)
            if end < 0:
                raise self.fail(ERR_INVALID_NAMED_CAPTURE)
            name = p[begin:end]
            if not name or not all(ch == "_" or (ch.isascii() and ch.isalnum()) for ch in name):
                raise self.fail(ERR_INVALID_NAMED_CAPTURE)
            self.pos = end + 1
            self.open_group(self.flags)
            if name in self.names:
                raise self.fail(ERR_DUPLICATE_NAMED_CAPTURE)
            self.names.add(name)
            return
        self.pos = start + 2
        flags, negated, saw_flag = self.flags, False, False
        while self.pos < self.n:
            c = p[self.pos]
            self.pos += 1
            if c in _FLAG_BITS:
                flags = flags & ~_FLAG_BITS[c] if negated else flags | _FLAG_BITS[c]
                saw_flag = True
            elif c == "-" and not negated:
                negated, saw_flag = True, False
            elif c in ":)" and not (negated and not saw_flag):
                if c == ":":
                    self.open_group(self.flags)
                self.flags = flags
                return
            else:
                break
        raise self.fail(ERR_INVALID_PERL_OP)

    def escape(self) -> None:
        p, pos = self.p, self.pos
        if pos + 1 < self.n:
            c = p[pos + 1]
            assertion = {"A": _BEGIN_TEXT, "z": _END_TEXT, "b": _WORD_BOUNDARY, "B": _NO_WORD_BOUNDARY}
            if c in assertion:
                self.items.append(_Assert(assertion[c]))
                self.pos += 2
                return
            if c == "C":
                raise self.fail(ERR_INVALID_ESCAPE)  # any byte: not in RE2/J
            if c == "Q":
                end = p.find("\\E", pos + 2)
                text = p[pos + 2 :] if end < 0 else p[pos + 2 : end]
                for ch in text:
                    self.literal(ord(ch))
                self.pos = self.n if end < 0 else end + 2
                return
        cls = self.unicode_class()
        if cls is None:
            cls = self.perl_class()
        if cls is None:
            self.literal(self.single_escape())
        else:
            self.items.append(_Char(cls))

    def unicode_class(self) -> _Class | None:
        p, start = self.p, self.pos
        if not (p.startswith("\\p", start) or p.startswith("\\P", start)):
            return None
        negated = p[start + 1] == "P"
        i = start + 2
        if i >= self.n:
            raise self.fail(ERR_INVALID_CHAR_RANGE)
        if p[i] != "{":
            name, i = p[i], i + 1
        else:
            end = p.find("}", i + 1)
            if end < 0:
                raise self.fail(ERR_INVALID_CHAR_RANGE)
            name, i = p[i + 1 : end], end + 1
        if name.startswith("^"):
            negated, name = not negated, name[1:]
        cls = _category(name)
        if cls is None:
            raise self.fail(
                f"unsupported Unicode class {p[start:i]}: this broker supports only \\p{{Any}} "
                "and the Unicode general categories (L, Lu, Nd, ...), not scripts"
            )
        self.pos = i
        return self._group(cls, negated)

    def _group(self, cls: _Class, negated: bool) -> _Class:
        if self.flags & _FOLD:
            cls = _Folded(cls)
        return _Not(cls) if negated else cls

    def perl_class(self) -> _Class | None:
        pos = self.pos
        if pos + 1 >= self.n:
            return None
        c = self.p[pos + 1]
        group = _PERL_GROUPS.get(c.lower()) if c in "dDsSwW" else None
        if group is None:
            return None
        self.pos = pos + 2
        return self._group(_Ranges(group), c.isupper())

    def single_escape(self) -> int:
        """The character of the escape at pos (advanced past it); RE2/J's ``parseEscape``."""
        p, n, start = self.p, self.n, self.pos
        if start + 1 >= n:
            raise self.fail(ERR_TRAILING_BACKSLASH)
        c = p[start + 1]
        i = start + 2
        if c.isascii() and not c.isalnum():
            self.pos = i
            return ord(c)
        if "0" <= c <= "7":
            # \1-\7 alone would be a backreference; with a second octal digit it is octal.
            if c != "0" and not (i < n and "0" <= p[i] <= "7"):
                raise self.fail(ERR_INVALID_ESCAPE)
            value = int(c)
            for _ in range(2):
                if i < n and "0" <= p[i] <= "7":
                    value = value * 8 + int(p[i])
                    i += 1
            self.pos = i
            return value
        if c == "x":
            return self.hex_escape(i)
        simple = {"a": 7, "f": 12, "n": 10, "r": 13, "t": 9, "v": 11}
        if c in simple:
            self.pos = i
            return simple[c]
        raise self.fail(ERR_INVALID_ESCAPE)

    def hex_escape(self, i: int) -> int:
        p, n = self.p, self.n
        hexdigits = "0123456789abcdefABCDEF"
        if i < n and p[i] == "{":
            i += 1
            value, count = 0, 0
            while i < n and p[i] != "}":
                if p[i] not in hexdigits:
                    raise self.fail(ERR_INVALID_ESCAPE)
                value = value * 16 + int(p[i], 16)
                if value > 0x10FFFF:
                    raise self.fail(ERR_INVALID_ESCAPE)
                count += 1
                i += 1
            if i >= n or count == 0:
                raise self.fail(ERR_INVALID_ESCAPE)
            self.pos = i + 1
            return value
        if i + 1 < n and p[i] in hexdigits and p[i + 1] in hexdigits:
            self.pos = i + 2
            return int(p[i : i + 2], 16)
        raise self.fail(ERR_INVALID_ESCAPE)

    def bracket_class(self) -> _Class:
        p, n = self.p, self.n
        self.pos += 1
        negated = self.pos < n and p[self.pos] == "^"
        if negated:
            self.pos += 1  # with RE2/J's Perl flags, [^a] matches \n too
        items: list[_Class] = []
        fold = bool(self.flags & _FOLD)
        first = True
        while self.pos >= n or p[self.pos] != "]" or first:
            first = False
            if p.startswith("[:", self.pos):
                end = p.find(":]", self.pos)
                if end >= 0:
                    name = p[self.pos + 2 : end]
                    negated_group = name.startswith("^")
                    group = _POSIX_GROUPS.get(name[1:] if negated_group else name)
                    if group is None:
                        raise self.fail(ERR_INVALID_CHAR_RANGE)
                    self.pos = end + 2
                    items.append(self._group(_Ranges(group), negated_group))
                    continue
            cls = self.unicode_class()
            if cls is None:
                cls = self.perl_class()
            if cls is not None:
                items.append(cls)
                continue
            before = self.pos
            lo = self.class_char()
            hi = lo
            if self.pos < n and p[self.pos] == "-":
                if self.pos + 1 < n and p[self.pos + 1] == "]":
                    pass  # [a-] is a and -: the '-' is read next round
                else:
                    self.pos += 1
                    hi = self.class_char()
                    if hi < lo:
                        self.pos = before
                        raise self.fail(ERR_INVALID_CHAR_RANGE)
            rng: _Class = _Ranges(((lo, hi),))
            items.append(_Folded(rng) if fold else rng)
        self.pos += 1
        union: _Class = items[0] if len(items) == 1 else _Union(tuple(items))
        return _Not(union) if negated else union

    def class_char(self) -> int:
        if self.pos >= self.n:
            raise self.fail(ERR_MISSING_BRACKET)
        if self.p[self.pos] == "\\":
            return self.single_escape()
        self.pos += 1
        return ord(self.p[self.pos - 1])


# ---------------------------------------------------------------------------------------------
# Thompson NFA.

_CHAR_STATE, _SPLIT, _ASSERT_STATE, _MATCH = range(4)
_NOTHING: Final = _Ranges(())


def _nfa_size(node: _Node) -> int:
    """States :class:`_Nfa` will build for ``node`` (computed before building anything)."""
    if isinstance(node, _Char | _Assert):
        return 1
    if isinstance(node, _Concat):
        return sum(_nfa_size(item) for item in node.items)
    if isinstance(node, _Alt):
        return sum(_nfa_size(item) for item in node.items) + len(node.items) - 1
    sub = _nfa_size(node.sub)
    if node.max < 0:
        return max(node.min, 1) * sub + 1
    return node.min * sub + (node.max - node.min) * (sub + 1)


class _Nfa:
    def __init__(self, root: _Node) -> None:
        self.kind: list[int] = []
        self.cls: list[_Class] = []  # of a character state (an empty class for the others)
        self.assertion: list[int] = []  # of an assertion state
        self.out: list[int] = []
        self.out2: list[int] = []
        match = self.emit(_MATCH, None, -1)
        self.start = self.build(root, match)

    def emit(self, kind: int, arg: _Class | int | None, out: int, out2: int = -1) -> int:
        self.kind.append(kind)
        self.cls.append(_NOTHING if arg is None or isinstance(arg, int) else arg)
        self.assertion.append(arg if isinstance(arg, int) else -1)
        self.out.append(out)
        self.out2.append(out2)
        return len(self.kind) - 1

    def build(self, node: _Node, nxt: int) -> int:
        """The entry state of ``node`` followed by state ``nxt``."""
        if isinstance(node, _Char):
            return self.emit(_CHAR_STATE, node.cls, nxt)
        if isinstance(node, _Assert):
            return self.emit(_ASSERT_STATE, node.kind, nxt)
        if isinstance(node, _Concat):
            for item in reversed(node.items):
                nxt = self.build(item, nxt)
            return nxt
        if isinstance(node, _Alt):
            starts = [self.build(item, nxt) for item in node.items]
            entry = starts[-1]
            for start in reversed(starts[:-1]):
                entry = self.emit(_SPLIT, None, start, entry)
            return entry
        if node.max < 0:
            loop = self.emit(_SPLIT, None, -1, nxt)
            body = self.build(node.sub, loop)
            self.out[loop] = body
            entry = body if node.min >= 1 else loop
            for _ in range(node.min - 1):
                entry = self.build(node.sub, entry)
            return entry
        entry = nxt
        for _ in range(node.max - node.min):
            entry = self.emit(_SPLIT, None, self.build(node.sub, entry), nxt)
        for _ in range(node.min):
            entry = self.build(node.sub, entry)
        return entry


# ---------------------------------------------------------------------------------------------
# Lazily built DFA.

# What the previous character was, for ^ \A (start), ^ under (?m) (newline) and \b \B (word).
_CTX_START, _CTX_WORD, _CTX_NEWLINE, _CTX_OTHER = range(4)


def _context(ch: str) -> int:
    if _is_word(ch):
        return _CTX_WORD
    return _CTX_NEWLINE if ch == "\n" else _CTX_OTHER


class _DState:
    """NFA states reached (before the epsilon moves, which depend on the next character)."""

    __slots__ = ("accept", "context", "kernel", "trans")

    def __init__(self, kernel: tuple[int, ...], context: int) -> None:
        self.kernel = kernel
        self.context = context
        self.trans: dict[str, _DState] = {}
        self.accept: bool | None = None


_DEAD: Final = _DState((), _CTX_OTHER)


class TopicRegex:
    """A compiled SubscribedTopicRegex; :meth:`matches` is RE2/J's ``matcher(topic).matches()``."""

    def __init__(self, pattern: str, nfa: _Nfa) -> None:
        self._pattern = pattern
        self._nfa = nfa
        self._start = _DState((nfa.start,), _CTX_START)
        self._states: dict[tuple[int, tuple[int, ...]], _DState] = {}
        self._cache_entries = 0
        self._nfa_steps = 0
        self._intern(self._start)

    @property
    def pattern(self) -> str:
        return self._pattern

    @property
    def nfa_size(self) -> int:
        return len(self._nfa.kind)

    @property
    def nfa_steps(self) -> int:
        """NFA states visited so far while building DFA transitions (the work beyond dict lookups)."""
        return self._nfa_steps

    @property
    def dfa_states(self) -> int:
        return len(self._states)

    def __repr__(self) -> str:
        return f"TopicRegex({self._pattern!r})"

    def matches(self, topic: str) -> bool:
        """Whether the whole of ``topic`` matches (RE2 semantics)."""
        state = self._start
        for ch in topic:
            nxt = state.trans.get(ch)
            if nxt is None:
                nxt = self._step(state, ch)
            if nxt is _DEAD:
                return False
            state = nxt
        accept = state.accept
        if accept is None:
            accept = state.accept = self._closure(state, None)[1]
        return accept

    def _intern(self, state: _DState) -> None:
        self._states[(state.context, state.kernel)] = state
        self._cache_entries += len(state.kernel) + 1

    def _step(self, state: _DState, ch: str) -> _DState:
        nfa = self._nfa
        chars, _ = self._closure(state, ch)
        cls, out = nfa.cls, nfa.out
        kernel = tuple(sorted({out[s] for s in chars if cls[s].contains(ch)}))
        if not kernel:
            nxt = _DEAD
        else:
            key = (_context(ch), kernel)
            found = self._states.get(key)
            if found is None:
                if self._cache_entries + len(kernel) + 1 > MAX_DFA_CACHE_ENTRIES:
                    self._flush()
                found = _DState(kernel, key[0])
                self._intern(found)
            nxt = found
        state.trans[ch] = nxt
        self._cache_entries += 1
        return nxt

    def _flush(self) -> None:
        for cached in self._states.values():
            cached.trans.clear()
        self._states = {}
        self._cache_entries = 0
        self._intern(self._start)

    def _closure(self, state: _DState, ch: str | None) -> tuple[list[int], bool]:
        """Character states reachable from ``state`` before ``ch`` (None: the end), and whether
        the match state is."""
        nfa = self._nfa
        kind, assertion, out, out2 = nfa.kind, nfa.assertion, nfa.out, nfa.out2
        context = state.context
        prev_word = context == _CTX_WORD
        next_word = ch is not None and _is_word(ch)
        seen: set[int] = set()
        stack = list(state.kernel)
        chars: list[int] = []
        matched = False
        while stack:
            s = stack.pop()
            if s in seen:
                continue
            seen.add(s)
            k = kind[s]
            if k == _CHAR_STATE:
                chars.append(s)
            elif k == _SPLIT:
                stack.append(out2[s])
                stack.append(out[s])
            elif k == _ASSERT_STATE:
                a = assertion[s]
                if (
                    (a == _BEGIN_TEXT and context == _CTX_START)
                    or (a == _BEGIN_LINE and context in (_CTX_START, _CTX_NEWLINE))
                    or (a == _END_TEXT and ch is None)
                    or (a == _END_LINE and (ch is None or ch == "\n"))
                    or (a == _WORD_BOUNDARY and prev_word != next_word)
                    or (a == _NO_WORD_BOUNDARY and prev_word == next_word)
                ):
                    stack.append(out[s])
            else:
                matched = True
        self._nfa_steps += len(seen)
        return chars, matched


def compile_topic_regex(pattern: str) -> TopicRegex:
    """Compile a SubscribedTopicRegex as RE2/J would, or raise :class:`TopicRegexError`."""
    if len(pattern) > MAX_PATTERN_LENGTH:
        raise TopicRegexError(
            pattern,
            f"pattern of {len(pattern)} characters, longer than the {MAX_PATTERN_LENGTH} this broker accepts",
        )
    root = _Parser(pattern).parse()
    size = _nfa_size(root) + 1
    if size > MAX_NFA_STATES:
        raise TopicRegexError(
            pattern, f"{ERR_LARGE} ({size} NFA states, more than the {MAX_NFA_STATES} this broker accepts)"
        )
    return TopicRegex(pattern, _Nfa(root))
