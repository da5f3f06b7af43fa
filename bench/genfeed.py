#!/usr/bin/env python3
"""Deterministic product feeds for the tests and ``make bench``.

    python bench/genfeed.py --rows 1000000 --out feed.csv
    python bench/genfeed.py --rows 1000000 --seed 2 --base-seed 1 --change-pct 1 --out v2.csv
    python bench/genfeed.py --rows 1000000 --base-seed 1 --drop-pct 1 --out gone.csv
    python bench/genfeed.py --rows 10000 --dirty-pct 5 --messy-pct 20 --gzip --out dirty.csv.gz
    python bench/genfeed.py --rows 1000000 --wide 19 --out wide.csv  # 30 columns

The same arguments always give the same bytes. Row ``i`` has sku ``SKU-<i, 8 digits>`` and
values drawn from the *value seed* (``--base-seed`` if given, else ``--seed``); everything
optional (which rows break, change, go missing or are spelled messily) is drawn from
``--seed``. So a file made with ``--base-seed 1`` is the ``--seed 1`` file except:
``--change-pct`` of its rows with a new price and quantity, ``--drop-pct`` of its rows left
out (a snapshot with skus gone), ``--dirty-pct`` of its rows broken on purpose, one fault
each (the summary counts them by rejection code), ``--messy-pct`` of the valid rows spelled
as a careless exporter would (``$1,234.50``, `` usd ``, ``YES``, GTINs with dashes) yet
cleaning to the very same values. ``--wide N`` adds N columns of the merchant's own
(``attr_01``...), which a load keeps as each product's attributes.

A JSON summary goes to stderr as the last line (and is returned by :func:`write_feed`):
``{"rows", "valid", "rejected", "rejected_by_code", "changed", "dropped"}``.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import random
import sys
from collections import Counter
from pathlib import Path
from typing import IO, Any

if __package__ in (None, ""):  # run as a script: python bench/genfeed.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from service.core.product import NAMES as COLUMNS

CATEGORIES = [
    "Shoes",
    "Apparel",
    "Electronics",
    "Home & Garden",
    "Toys",
    "Books",
    "Beauty",
    "Tools",
]
BRANDS = ["Acme", "Globex", "Initech", "Umbrella", "Stark", "Wayne", "Hooli", "Soylent"]
CURRENCIES = ["USD", "EUR", "GBP"]
ADJECTIVES = [
    "soft",
    "sturdy",
    "classic",
    "compact",
    "premium",
    "eco",
    "wireless",
    "handmade",
    "vintage",
    "ultra",
    "light",
    "waterproof",
]
# Each breaks one rule of the feed format, and names the rejection code it must get.
FAULTS = [
    "INVALID_PRICE",
    "INVALID_CURRENCY",
    "INVALID_SKU",
    "INVALID_GTIN",
    "DUPLICATE_SKU",
    "INVALID_TIMESTAMP",
    "INVALID_BOOLEAN",
    "ROW_LENGTH",
    "INVALID_QUANTITY",
    "INVALID_NAME",
]
POOL = 4096  # descriptions and GTINs are drawn once, then picked by index: fast


def gtin13(rng: random.Random) -> str:
    """Twelve random digits and the GS1 check digit that makes them valid."""
    body = [rng.randrange(10) for _ in range(12)]
    weighted = sum(d * (3 if pos % 2 else 1) for pos, d in enumerate(body))
    return "".join(map(str, body)) + str(-weighted % 10)


class _Pools:
    def __init__(self) -> None:
        rng = random.Random(0)
        self.descriptions = []
        for _ in range(POOL):
            words = " ".join(rng.choice(ADJECTIVES) for _ in range(rng.randint(0, 10)))
            # Some hold the delimiter and quotes, so that quoting is exercised.
            self.descriptions.append(
                f'{words.capitalize()} goods, "{{brand}}" made' if words else ""
            )
        self.gtins = [gtin13(rng) for _ in range(POOL)]


def _row(i: int, bits: int, pools: _Pools) -> list[str]:
    """Row ``i``, every value taken from a different slice of one 64-bit draw."""
    brand = BRANDS[bits & 7]
    month, day, hour = (bits >> 30) % 12 + 1, (bits >> 34) % 28 + 1, (bits >> 39) % 24
    return [
        f"SKU-{i:08d}",
        f"{brand} {ADJECTIVES[(bits >> 15) % len(ADJECTIVES)]} item {i}",
        pools.descriptions[(bits >> 3) % POOL].replace("{brand}", brand),
        f"{((bits >> 19) % 9_999_999 + 1) / 100:.2f}",
        CURRENCIES[(bits >> 43) % 3],
        str((bits >> 45) % 501),
        CATEGORIES[(bits >> 54) & 7],
        brand,
        pools.gtins[(bits >> 2) % POOL] if (bits >> 57) & 1 else "",
        f"2026-{month:02d}-{day:02d}T{hour:02d}:00:00Z",
        "true" if (bits >> 58) & 1 else "false",
    ]


def _messy(row: list[str], rng: random.Random) -> None:
    """Spell a valid row as a careless exporter would; it cleans back to the same values."""
    units, cents = row[3].split(".")
    if len(units) > 3 and rng.random() < 0.5:
        units = f"{int(units):,}"
    row[3] = f" ${units}.{cents} " if rng.random() < 0.5 else f"{units}.{cents}"
    row[4] = f" {row[4].lower()} "
    truthy, falsy = ["YES", "1", "y", "True"], ["no", "0", "N", "FALSE"]
    row[10] = rng.choice(truthy if row[10] == "true" else falsy)
    row[1] = "  " + row[1].replace(" ", "   ", 1) + " "
    if row[8]:
        row[8] = f"{row[8][0]}-{row[8][1:7]}-{row[8][7:]}"


def _break(row: list[str], fault: str, i: int, rng: random.Random) -> list[str]:
    if fault == "INVALID_PRICE":
        row[3] = rng.choice(["-5.00", "abc", "12.345", "", "1e9999"])
    elif fault == "INVALID_CURRENCY":
        row[4] = rng.choice(["XXQ", "dollars", "", "US"])
    elif fault == "INVALID_SKU":
        row[0] = rng.choice(["", "bad sku!", "x" * 65])
    elif fault == "INVALID_GTIN":
        good = gtin13(rng)
        row[8] = good[:-1] + str((int(good[-1]) + 1) % 10)
    elif fault == "DUPLICATE_SKU":
        row[0] = f"SKU-{i - 1:08d}"  # the row before is always a valid one
    elif fault == "INVALID_TIMESTAMP":
        row[9] = rng.choice(["2026-13-01", "yesterday", "2026-02-30T00:00:00Z"])
    elif fault == "INVALID_BOOLEAN":
        row[10] = rng.choice(["maybe", "2", "on?"])
    elif fault == "ROW_LENGTH":
        return row[:-2] if rng.random() < 0.5 else [*row, "extra"]
    elif fault == "INVALID_QUANTITY":
        row[5] = rng.choice(["-1", "3.5", "lots", "99999999999"])
    elif fault == "INVALID_NAME":
        row[1] = rng.choice(["", "   "])
    return row


def write_feed(
    out: IO[str],
    rows: int,
    *,
    seed: int = 1,
    base_seed: int | None = None,
    change_pct: float = 0.0,
    drop_pct: float = 0.0,
    dirty_pct: float = 0.0,
    messy_pct: float = 0.0,
    wide: int = 0,
) -> dict[str, Any]:
    """Write the feed to ``out`` (text, newline="") and return its summary."""
    values = random.Random(seed if base_seed is None else base_seed)
    choices = random.Random(seed * 7919 + 17)
    pools = _Pools()
    writer = csv.writer(out, lineterminator="\n")
    extra = [f"attr_{k + 1:02d}" for k in range(wide)]
    writer.writerow([*COLUMNS, *extra])  # the product's own column order, then the others
    faults: Counter[str] = Counter()
    changed = dropped = written = 0
    last_valid = False  # row 0 is never broken; a duplicate always repeats a valid row
    batch: list[list[str]] = []
    for i in range(rows):
        bits = values.getrandbits(64)
        row = _row(i, bits, pools)
        if wide:  # short texts, some empty, from the same draw
            row += [
                "" if (bits >> (k % 60)) % 11 == 0 else f"{extra[k]} value {(bits >> k) % 97}"
                for k in range(wide)
            ]
        if base_seed is not None and drop_pct and choices.random() * 100 < drop_pct:
            dropped += 1
            last_valid = False
            continue
        written += 1
        if last_valid and choices.random() * 100 < dirty_pct:
            fault = choices.choice(FAULTS)
            faults[fault] += 1
            batch.append(_break(row, fault, i, choices))
            last_valid = False
            continue
        last_valid = True
        if base_seed is not None and choices.random() * 100 < change_pct:
            row[3] = f"{float(row[3]) + 1:.2f}"
            row[5] = str(int(row[5]) + 1)
            changed += 1
        if choices.random() * 100 < messy_pct:
            _messy(row, choices)
        batch.append(row)
        if len(batch) >= 10_000:
            writer.writerows(batch)
            batch.clear()
    writer.writerows(batch)
    rejected = sum(faults.values())
    return {
        "rows": written,
        "valid": written - rejected,
        "rejected": rejected,
        "rejected_by_code": dict(faults),
        "changed": changed,
        "dropped": dropped,
    }


def generate(path: Path, rows: int, *, gzipped: bool = False, **options: Any) -> dict[str, Any]:
    """Write the feed to ``path`` (gzip-compressed if asked); returns its summary."""
    if gzipped:
        with gzip.open(path, "wt", encoding="utf-8", newline="", compresslevel=5) as f:
            return write_feed(f, rows, **options)
    with open(path, "w", encoding="utf-8", newline="") as plain:
        return write_feed(plain, rows, **options)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, required=True)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--base-seed", type=int, help="the feed this one is a new version of")
    parser.add_argument("--change-pct", type=float, default=0.0, help="rows with new values")
    parser.add_argument("--drop-pct", type=float, default=0.0, help="rows (skus) left out")
    parser.add_argument("--dirty-pct", type=float, default=0.0, help="rows broken on purpose")
    parser.add_argument("--messy-pct", type=float, default=0.0, help="valid rows spelled messily")
    parser.add_argument("--wide", type=int, default=0, help="columns of the merchant's own")
    parser.add_argument("--gzip", action="store_true")
    parser.add_argument("--out", required=True)
    a = parser.parse_args(argv)
    summary = generate(
        Path(a.out),
        a.rows,
        gzipped=a.gzip,
        seed=a.seed,
        base_seed=a.base_seed,
        change_pct=a.change_pct,
        drop_pct=a.drop_pct,
        dirty_pct=a.dirty_pct,
        messy_pct=a.messy_pct,
        wide=a.wide,
    )
    print(json.dumps(summary), file=sys.stderr)


if __name__ == "__main__":
    main()
