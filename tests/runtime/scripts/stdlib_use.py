import collections
import dataclasses
import datetime
import decimal
import fractions
import hashlib
import itertools
import json
import re
import statistics
import textwrap


@dataclasses.dataclass(frozen=True)
class Point:
    x: int
    y: int


counts = collections.Counter("abracadabra")
print(json.dumps(counts.most_common(3)))
print(re.sub(r"(\w+)@(\w+)", r"\2 at \1", "user@example"))
print(statistics.median([3, 1, 4, 1, 5, 9, 2, 6]), statistics.pstdev([1, 2, 3, 4]))
print(decimal.Decimal("1.1") + decimal.Decimal("2.2"), fractions.Fraction(3, 4) ** 2)
print(hashlib.sha256(b"pyisolate").hexdigest()[:16])
print(list(itertools.islice(itertools.permutations("abc"), 3)))
print(datetime.date(2026, 11, 28).isoformat(), datetime.timedelta(hours=25))
print(Point(1, 2), dataclasses.asdict(Point(3, 4)))
print(textwrap.fill("the quick brown fox jumps over the lazy dog", 12))
print(sorted({"b": 1, "a": 2}.items()), f"{1 / 3:.5f}", 2**100)
