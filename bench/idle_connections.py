"""Holds N idle PostgreSQL connections open until standard input closes.

Usage: idle_connections.py N CONNINFO
Prints "ready N" once every connection has authenticated and run one statement.
"""
import sys

import psycopg


def main(count: int, conninfo: str) -> None:
    conns = []
    for i in range(count):
        conn = psycopg.connect(conninfo, autocommit=True)
        conn.execute("SELECT 1")
        conns.append(conn)
        if (i + 1) % 250 == 0:
            print(f"  {i + 1}/{count} connections open", file=sys.stderr, flush=True)
    print(f"ready {len(conns)}", flush=True)
    sys.stdin.read()
    for conn in conns:
        conn.close()


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2])
