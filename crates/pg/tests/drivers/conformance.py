"""Runs one conformance scenario with psycopg 3 against the server directly and through the
gateway, and prints what each showed as one JSON line, so the Rust test can hold them equal
(or, where policy speaks, hold the gateway to what the server would have done).

Usage: conformance.py SCENARIO GATEWAY_CONNINFO DIRECT_CONNINFO
"""
import json
import sys
import time

import psycopg
from psycopg import errors, pq


def syntax(conninfo):
    """Texts the parser rejects: SQLSTATE, message and position, in the simple protocol
    (no parameters) and the extended one (a parameter)."""
    texts = [
        "SELEC 1",
        "SELECT 1 +",
        "SELECT 'é' FORM t",
        "SELECT 1; SELECT * FORM customers; SELECT 2",
        "SELECT 'abc",
        "SELECT 1 FROM FROM",
    ]
    seen = []
    with psycopg.connect(conninfo, autocommit=True) as conn:
        for text in texts:
            for params in (None, [1]):
                query = text if params is None else text + " /* %s */"
                try:
                    conn.execute(query, params)
                    seen.append([text, params is not None, "ran"])
                except psycopg.Error as e:
                    seen.append(
                        [
                            text,
                            params is not None,
                            e.sqlstate,
                            e.diag.message_primary,
                            e.diag.statement_position,
                        ]
                    )
        # The session goes on as after any error.
        seen.append(conn.execute("SELECT 41 + 1").fetchone()[0])
    return seen


def pid(conninfo):
    """The pid the client was told is the backend's own: pg_backend_pid() and the sender of
    its own notifications match it."""
    with psycopg.connect(conninfo, autocommit=True) as conn:
        told = conn.info.backend_pid
        backend = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
        conn.execute("LISTEN conformance")
        conn.execute("NOTIFY conformance, 'hello'")
        sender = None
        for note in conn.notifies(timeout=5, stop_after=1):
            sender = note.pid
        return {
            "backend_is_told": backend == told,
            "sender_is_told": sender == told,
        }


def terminate(conninfo, direct):
    """The server ends the backend: the client gets the server's FATAL and the connection
    closes."""
    conn = psycopg.connect(conninfo, autocommit=True)
    victim = conn.info.backend_pid
    with psycopg.connect(direct, autocommit=True) as admin:
        ended = admin.execute("SELECT pg_terminate_backend(%s)", [victim]).fetchone()[0]
    # Let the FATAL arrive (the server sends it as the backend exits).
    time.sleep(0.5)
    try:
        conn.execute("SELECT 1")
        outcome = ["ran"]
    except psycopg.Error as e:
        outcome = [type(e).__name__, e.sqlstate]
    return {"terminated": ended, "outcome": outcome, "closed": conn.closed}


def refusal_in_transaction(conninfo, direct):
    """A statement the gateway refuses inside a transaction block leaves it failed, as any
    error would: in the simple protocol, the extended one, and a pipeline."""
    seen = {}
    with psycopg.connect(conninfo) as conn:
        for protocol in ("simple", "extended"):
            conn.execute("INSERT INTO customers VALUES (%s, 'Radia', 'r@example.com')", [30])
            try:
                if protocol == "simple":
                    conn.execute("DELETE FROM customers")
                else:
                    conn.execute("DELETE FROM customers", prepare=True)
                seen[protocol] = "ran"
            except psycopg.Error as e:
                status = conn.info.transaction_status
                try:
                    conn.execute("SELECT 1")
                    after = "ran"
                except errors.InFailedSqlTransaction:
                    after = "25P02"
                seen[protocol] = [e.sqlstate, status == pq.TransactionStatus.INERROR, after]
            conn.rollback()
    with psycopg.connect(conninfo, autocommit=True) as conn:
        try:
            with conn.pipeline():
                conn.execute("INSERT INTO customers VALUES (%s, 'Radia', 'r@example.com')", [31])
                conn.execute("DELETE FROM customers")
            seen["pipeline"] = "ran"
        except psycopg.Error as e:
            seen["pipeline"] = [e.sqlstate]
    with psycopg.connect(direct, autocommit=True) as conn:
        seen["rows_left"] = conn.execute(
            "SELECT count(*) FROM customers WHERE id IN (30, 31)"
        ).fetchone()[0]
    return seen


def encoding(conninfo):
    """A session in LATIN9: statements with non-ASCII characters run, values and error texts
    come back in the session's encoding (masked where masking applies)."""
    seen = []
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("SET client_encoding TO 'LATIN9'")
        seen.append(conn.execute("SHOW client_encoding").fetchone()[0])
        seen.append(list(conn.execute("SELECT 'café €', 'ada@example.com'").fetchone()))
        seen.append(list(conn.execute("SELECT %s::text", ["prix 5 €"]).fetchone()))
        try:
            conn.execute("SELECT 'é'::int")
        except psycopg.Error as e:
            seen.append([e.sqlstate, e.diag.message_primary])
        notices = []
        conn.add_notice_handler(lambda d: notices.append(d.message_primary))
        conn.execute("DO $$ BEGIN RAISE NOTICE 'déjà vu %', 'ada@example.com'; END $$")
        seen.append(notices)
    return seen


def main():
    scenario, gateway, direct = sys.argv[1:4]
    if scenario == "syntax":
        result = {"gateway": syntax(gateway), "direct": syntax(direct)}
    elif scenario == "pid":
        result = {"gateway": pid(gateway), "direct": pid(direct)}
    elif scenario == "terminate":
        result = {"gateway": terminate(gateway, direct), "direct": terminate(direct, direct)}
    elif scenario == "encoding":
        result = {"gateway": encoding(gateway), "direct": encoding(direct)}
    elif scenario == "refusal_in_transaction":
        result = {"gateway": refusal_in_transaction(gateway, direct)}
    else:
        raise SystemExit(f"unknown scenario {scenario}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
