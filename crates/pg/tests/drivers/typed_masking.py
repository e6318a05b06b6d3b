"""Reads typed rows through the gateway with psycopg and loads what it got into the server.

Usage: typed_masking.py GATEWAY_CONNINFO DIRECT_CONNINFO

Through the gateway: SELECT the `typed` table with text and with binary results (psycopg
parses every value as its type), and COPY it out in text, CSV and binary, of the table and
of a query. Straight to the server: each result goes into its own copy of the table
(sel_text, sel_binary, copy_<format>, query_<format>), so the server's own type checks
judge every masked value. Prints the row counts, then "typed masking checks done"; exits
non-zero when anything fails.
"""

import sys

import psycopg
from psycopg.types.json import Json, Jsonb

through, direct = sys.argv[1], sys.argv[2]

COLUMNS = "id, t, v, j, jb, ip, net, b, n8, num, ta, jba"


def adapted(row):
    """A row as psycopg loaded it, ready to be written back (JSON values need wrapping)."""
    id_, t, v, j, jb, ip, net, b, n8, num, ta, jba = row
    if jba is not None:
        jba = [None if x is None else Jsonb(x) for x in jba]
    return (
        id_, t, v,
        None if j is None else Json(j),
        None if jb is None else Jsonb(jb),
        ip, net, b, n8, num, ta, jba,
    )


with psycopg.connect(through, autocommit=True) as gw, psycopg.connect(direct, autocommit=True) as db:
    for binary, table in ((False, "sel_text"), (True, "sel_binary")):
        with gw.cursor(binary=binary) as cur:
            cur.execute(f"SELECT {COLUMNS} FROM typed ORDER BY id")
            rows = cur.fetchall()
        placeholders = ", ".join(["%s"] * len(COLUMNS.split(",")))
        with db.cursor() as cur:
            cur.executemany(
                f"INSERT INTO {table} ({COLUMNS}) VALUES ({placeholders})",
                [adapted(r) for r in rows],
            )
        print(f"{table}: {len(rows)} rows")

    for fmt in ("text", "csv", "binary"):
        for source, prefix in (("typed", "copy"), ("(SELECT * FROM typed ORDER BY id)", "query")):
            with gw.cursor() as cur:
                with cur.copy(f"COPY {source} TO STDOUT (FORMAT {fmt})") as copy:
                    data = b"".join(bytes(chunk) for chunk in copy)
            with db.cursor() as cur:
                with cur.copy(f"COPY {prefix}_{fmt} FROM STDIN (FORMAT {fmt})") as copy:
                    copy.write(data)
            print(f"{prefix}_{fmt}: {len(data)} bytes")

print("typed masking checks done")
