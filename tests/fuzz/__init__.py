"""Structure-aware fuzzing of everything that parses bytes a peer sent: the request decoders (every
API, every version), the frame reader, the record batch view and the batch scans.

- ``mutate.py``: where the length, count, varint and tagged-field slots of a valid encoding are,
  and the mutations that aim at them (flipped lengths, negative counts, huge array sizes, truncated
  or overlong varints, wrong api_version, tagged-field garbage), driven by any source of choices.
- ``targets.py``: one target per decoder, each with its seeds (valid inputs), its mutations and its
  property (a value or the codec's ``ProtocolError``, within a memory bound).
- ``__main__.py``: ``python -m tests.fuzz --cases 100000`` runs every target for that many cases
  with a seeded ``random.Random`` (or atheris, ``--engine atheris``) and reports the counts.

``tests/unit/test_fuzz_targets.py`` runs every target for a few cases in CI (hypothesis drives the
choices there, so a finding shrinks).
"""
