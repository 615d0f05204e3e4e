"""A computed, read-only collection of any size for the benchmarks: records come from
their index, so a billion of them cost no memory."""

from __future__ import annotations

from service.tools.demo_upstream.store import Key
from service.tools.demo_upstream.store import Record
from service.tools.demo_upstream.store import format_timestamp
from service.tools.demo_upstream.store import parse_timestamp

_FIRST_NAMES = ("Ada", "Bjørn", "Chloé", "Dmitri", "Eva", "Fatima", "Gustav", "Hana")
_ASCII_FIRST = ("ada", "bjorn", "chloe", "dmitri", "eva", "fatima", "gustav", "hana")
_LAST_NAMES = ("Lovelace", "Hansen", "Dubois", "Ivanov", "Berg", "Haddad", "Lund", "Sato")
_CITIES = ("Oslo", "Bergen", "Trondheim", "Stavanger", "Tromsø", "Lyon", "Kyoto", "Porto")
_STREETS = ("Storgata", "Kirkeveien", "Rue Neuve", "Main Street", "Sakura-dori")
_TAGS = ("customer", "supplier", "partner", "lead", "vip", "archived", "nordic", "beta")
_SYNTHETIC_START = parse_timestamp("2025-01-01T00:00:00.000000Z") or 0


class SyntheticCollection:
    """A read-only collection computed from the record's index, never stored.

    Record i has id `rec-{i:09d}` and shares its `updated_at` with the other records of
    its run of `tie_size`, so index order is (updated_at, id) order and any position is
    found by bisecting over computed keys: memory stays flat whatever the count.
    """

    read_only = True

    def __init__(self, count: int, tie_size: int) -> None:
        self.count = count
        self.tie_size = tie_size
        self.keys = self  # bisect only needs __len__ and __getitem__
        self._last_run: tuple[int, str] = (-1, "")  # a page mostly stays in one run

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, position: int) -> Key:
        if not 0 <= position < self.count:
            raise IndexError(position)
        return (self.updated_at(position), f"rec-{position:09d}")

    def updated_at(self, position: int) -> str:
        run = position // self.tie_size
        last_run, text = self._last_run  # one tuple: safe to share between threads
        if run != last_run:
            text = format_timestamp(_SYNTHETIC_START + run * 1_000_000)
            self._last_run = (run, text)
        return text

    def record_at(self, position: int) -> Record:
        """About 300 bytes of JSON, with the nesting and non-ASCII text real data has."""
        first = _FIRST_NAMES[position % 8]
        last = _LAST_NAMES[(position // 8) % 8]
        return {
            "id": f"rec-{position:09d}",
            "updated_at": self.updated_at(position),
            "deleted": False,
            "name": f"{first} {last}",
            "email": f"{_ASCII_FIRST[position % 8]}.{last.lower()}.{position}@example.com",
            "address": {
                "street": f"{_STREETS[position % 5]} {position % 300 + 1}",
                "city": _CITIES[(position // 3) % 8],
                "postcode": f"{1000 + position % 9000:04d}",
                "country": "NO",
            },
            "tags": [_TAGS[position % 8], _TAGS[(position // 8) % 8]],
            "score": (position * 7919) % 100_003 / 100,
            "description": f"Benchmark record {position} of run {position // self.tie_size}.",
        }

    def get(self, record_id: str) -> Record | None:
        digits = record_id[4:]
        if not (record_id.startswith("rec-") and len(digits) >= 9 and digits.isdecimal()):
            return None
        position = int(digits)
        if position >= self.count or record_id != f"rec-{position:09d}":
            return None
        return self.record_at(position)
