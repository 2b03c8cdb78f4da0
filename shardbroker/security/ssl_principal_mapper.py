"""``ssl.principal.mapping.rules``: a client certificate's subject -> the principal's name.

Kafka's SslPrincipalMapper, rule for rule: the value is a comma-separated list of
``RULE:pattern/replacement/[LU]`` and ``DEFAULT``; the first rule whose pattern matches the
whole distinguished name (RFC 2253 form, ``CN=alice,OU=apps,O=example``) gives the name:
every match of the pattern in the name is replaced by ``replacement`` (``$1`` refers to a
group; a reference beyond the pattern's groups is kept literally, as Kafka does), then lower-
(``L``) or upper-cased (``U``). ``DEFAULT`` gives the name unchanged. No rule matching raises
``NoMatchingRule`` (Kafka then fails the authentication). The rule splitter and parser are
Kafka's regular expressions, so what Kafka accepts or refuses is accepted or refused here
(``ValueError``, Kafka's IllegalArgumentException). Deviation: patterns are Python regular
expressions, which are Java's for everything but possessive quantifiers, ``\\p{..}`` classes
and a few other rarities.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

__all__ = ["NoMatchingRule", "SslPrincipalMapper"]

_RULE_PATTERN: Final = r"(DEFAULT)|RULE:((\\.|[^\\/])*)/((\\.|[^\\/])*)/([LU]?).*?|(.*?)"
_RULE_SPLITTER: Final = re.compile(r"\s*(" + _RULE_PATTERN + r")\s*(,\s*|$)")
_RULE_PARSER: Final = re.compile(_RULE_PATTERN)
_BACK_REFERENCE: Final = re.compile(r"\$(\d+)")


class NoMatchingRule(ValueError):
    """No rule applies to the distinguished name."""


def _escape_literal_back_references(replacement: str, groups: int) -> str:
    """Kafka's (from Apache NiFi): a ``$n`` beyond the pattern's groups is shortened to a group
    that exists (``$12`` -> ``$1`` then ``2``), or escaped into a literal ``$n`` when none does.
    As in Kafka, the references are found in the original text and each escape is inserted at
    that original position of the text escaped so far."""
    if groups == 0:
        return replacement
    value = replacement
    for ref in _BACK_REFERENCE.finditer(replacement):
        digits = ref.group(1)
        if digits.startswith("0"):
            continue
        index = int(digits)
        while index > groups and index >= 10:
            index //= 10
        if index > groups:
            at = ref.start(1) - 1
            value = value[:at] + "\\" + value[at:]
    return value


def _java_replacement(replacement: str, match: re.Match[str]) -> str:
    """Java's Matcher.appendReplacement: ``\\x`` is x, ``$n`` the group (digits taken while the
    number stays a group), ``${name}`` a named group."""
    out: list[str] = []
    groups = len(match.groups())
    i, n = 0, len(replacement)
    while i < n:
        c = replacement[i]
        if c == "\\":
            i += 1
            if i == n:
                raise ValueError("character to be escaped is missing")
            out.append(replacement[i])
            i += 1
        elif c == "$":
            i += 1
            if i == n:
                raise ValueError("Illegal group reference: group index is missing")
            if replacement[i] == "{":
                end = replacement.find("}", i)
                if end < 0:
                    raise ValueError("named capturing group is missing trailing '}'")
                ref: int | str = replacement[i + 1 : end]
                i = end + 1
            else:
                if not replacement[i].isdigit():
                    raise ValueError("Illegal group reference")
                number = int(replacement[i])
                i += 1
                while i < n and replacement[i].isdigit() and number * 10 + int(replacement[i]) <= groups:
                    number = number * 10 + int(replacement[i])
                    i += 1
                if number > groups:
                    raise ValueError(f"No group {number}")
                ref = number
            try:
                out.append(match.group(ref) or "")
            except IndexError:
                raise ValueError(f"No group with name {{{ref}}}") from None
        else:
            out.append(c)
            i += 1
    return "".join(out)


@dataclass(frozen=True, slots=True)
class _Rule:
    #: None: DEFAULT.
    pattern: re.Pattern[str] | None = None
    replacement: str = ""
    to_lower: bool = False
    to_upper: bool = False

    def apply(self, name: str) -> str | None:
        if self.pattern is None:
            return name
        if self.pattern.fullmatch(name) is None:
            return None
        replacement = _escape_literal_back_references(self.replacement, self.pattern.groups)
        result = self.pattern.sub(lambda m: _java_replacement(replacement, m), name)
        if self.to_lower:
            return result.lower()
        if self.to_upper:
            return result.upper()
        return result

    def __str__(self) -> str:
        if self.pattern is None:
            return "DEFAULT"
        case = "/L" if self.to_lower else "/U" if self.to_upper else ""
        return f"RULE:{self.pattern.pattern}/{self.replacement}{case}"


def _split(rules: str) -> list[str]:
    return [m.group(1) for m in _RULE_SPLITTER.finditer(rules.strip())]


def _parse(rule: str) -> _Rule | None:
    match = _RULE_PARSER.match(rule)
    if match is None:
        raise ValueError(f"Invalid rule: {rule}")
    if match.end() != len(rule):
        raise ValueError(f"Invalid rule: `{rule}`, unmatched substring: `{rule[match.end() :]}`")
    if match.group(1) is not None:
        return _Rule()
    if match.group(2) is not None:
        try:
            pattern = re.compile(match.group(2))
        except re.error as exc:
            raise ValueError(f"Invalid rule: `{rule}`: {exc}") from None
        flag = match.group(6)
        return _Rule(pattern, match.group(4), flag == "L", flag == "U")
    return None  # an empty rule is ignored


class SslPrincipalMapper:
    """The parsed rules of ``ssl.principal.mapping.rules`` (ValueError if they do not parse)."""

    def __init__(self, rules: str) -> None:
        parsed = (_parse(r) for r in _split(rules))
        self.rules: tuple[_Rule, ...] = tuple(r for r in parsed if r is not None)

    def name(self, distinguished_name: str) -> str:
        """The principal name of a certificate subject, or NoMatchingRule."""
        for rule in self.rules:
            try:
                result = rule.apply(distinguished_name)
            except ValueError as exc:
                raise NoMatchingRule(f"Rule {rule} fails on {distinguished_name}: {exc}") from None
            if result is not None:
                return result
        raise NoMatchingRule(f"No rules apply to {distinguished_name}, rules {self}")

    def __str__(self) -> str:
        return "[" + ", ".join(map(str, self.rules)) + "]"
