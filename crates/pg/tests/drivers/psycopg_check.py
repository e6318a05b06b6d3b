"""Drives the gateway with psycopg 3: binary parameters and results, server-side cursors,
COPY, pipeline mode, an error inside a pipeline, LISTEN/NOTIFY and notices. Exits non-zero on any mismatch.

Usage: psycopg_check.py CONNINFO
"""
import sys

import psycopg


def main(conninfo: str) -> None:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        # Binary parameters and binary results (extended protocol, unnamed statements).
        with conn.cursor(binary=True) as cur:
            cur.execute("SELECT id, name FROM customers WHERE id = %s", (2,), binary=True)
            assert cur.fetchall() == [(2, "Grace")], "binary select"

        # A prepared statement used many times (named statement, Bind/Execute only).
        with conn.cursor() as cur:
            for _ in range(6):
                cur.execute("SELECT count(*) FROM customers WHERE id > %s", (0,), prepare=True)
                assert cur.fetchone() == (2,), "prepared select"

        # Server-side cursor: DECLARE + FETCH in batches inside a transaction.
        with conn.transaction():
            with conn.cursor(name="walk") as cur:
                cur.itersize = 1
                cur.execute("SELECT generate_series(1, 5)")
                assert [r[0] for r in cur] == [1, 2, 3, 4, 5], "server-side cursor"

        # COPY in and out.
        with conn.cursor() as cur:
            with cur.copy("COPY customers (id, name, email) FROM STDIN") as copy:
                copy.write_row((20, "Frances", "f@example.com"))
                copy.write_row((21, "Radia", "r@example.com"))
            out = []
            with cur.copy("COPY (SELECT name FROM customers WHERE id >= 20 ORDER BY id) TO STDOUT") as copy:
                for row in copy.rows():
                    out.append(row[0])
            assert out == ["Frances", "Radia"], f"copy out {out}"

        # Pipeline mode: several statements in flight, one of them failing.
        with conn.pipeline() as p:
            c1 = conn.execute("SELECT 1")
            c2 = conn.execute("SELECT name FROM customers WHERE id = %s", (1,))
            p.sync()
            assert c1.fetchone() == (1,), "pipeline 1"
            assert c2.fetchone() == ("Ada",), "pipeline 2"
        # Repeated: the error can come back before the rest of the pipeline is sent,
        # which is the case the gateway must not lose track in.
        for _ in range(20):
          try:
            with conn.pipeline() as p:
                conn.execute("SELECT 1/0")
                conn.execute("SELECT 2")
                p.sync()
            raise AssertionError("the division by zero should have failed")
          except psycopg.errors.DivisionByZero:
            pass
          assert conn.execute("SELECT 3").fetchone() == (3,), "session usable after a pipeline error"

        # A guardrail denial through the extended protocol is a proper error, and the
        # session goes on.
        try:
            conn.execute("DELETE FROM customers")
            raise AssertionError("the unbounded DELETE should have been denied")
        except psycopg.errors.InsufficientPrivilege as e:
            assert "no-unbounded-writes" in str(e), str(e)
        assert conn.execute("SELECT count(*) FROM customers").fetchone() == (4,), "nothing deleted"

    # LISTEN/NOTIFY between two sessions, and a notice, all through the gateway. The
    # notifications reach a listener that is idle, with no statement of its own running.
    with psycopg.connect(conninfo, autocommit=True) as listener, \
            psycopg.connect(conninfo, autocommit=True) as talker:
        listener.execute("LISTEN gatehouse_events")
        talker.execute("NOTIFY gatehouse_events, 'hello'")
        talker.execute("SELECT pg_notify('gatehouse_events', 'again')")
        got = [(n.channel, n.payload) for n in listener.notifies(timeout=10, stop_after=2)]
        assert got == [("gatehouse_events", "hello"), ("gatehouse_events", "again")], got
        notices = []
        talker.add_notice_handler(lambda d: notices.append(d.message_primary))
        talker.execute("DO $$ BEGIN RAISE NOTICE 'careful'; END $$")
        assert notices == ["careful"], notices
    print("psycopg checks passed")


if __name__ == "__main__":
    main(sys.argv[1])
