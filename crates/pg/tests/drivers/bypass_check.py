"""Tries, with psycopg's low-level libpq API, to make the gateway decide one statement
while the server runs another. Prints one JSON line: what each step got back (its SQLSTATE,
or "ok", or the rows), for the test to judge.

Usage: bypass_check.py CONNINFO SCENARIO
"""
import json
import sys

import psycopg
from psycopg import pq


def outcome(res):
    """A result's SQLSTATE, "ok", or its first column's values."""
    status = res.status
    if status == pq.ExecStatus.FATAL_ERROR:
        return (res.error_field(pq.DiagnosticField.SQLSTATE) or b"?").decode()
    if status == pq.ExecStatus.PIPELINE_ABORTED:
        return "aborted"
    if status == pq.ExecStatus.PIPELINE_SYNC:
        return "sync"
    if status == pq.ExecStatus.TUPLES_OK:
        return [res.get_value(i, 0).decode() for i in range(res.ntuples)]
    return "ok"


def pipeline_results(pgconn, syncs):
    """Every result up to the `syncs`-th sync, in order."""
    out = []
    seen = 0
    while seen < syncs:
        res = pgconn.get_result()
        if res is None:
            continue
        out.append(outcome(res))
        if res.status == pq.ExecStatus.PIPELINE_SYNC:
            seen += 1
    return out


def reprepare(pgconn):
    # The reviewer's reproduction: "s" stays the DELETE after a refused second Parse.
    return [
        outcome(pgconn.prepare(b"s", b"DELETE FROM customers")),
        outcome(pgconn.prepare(b"s", b"SELECT 1")),
        outcome(pgconn.exec_prepared(b"s", [])),
    ]


def unknown(pgconn):
    return [outcome(pgconn.exec_prepared(b"never_prepared", []))]


def pipelined_redefinition(pgconn):
    steps = [outcome(pgconn.prepare(b"s", b"DELETE FROM customers"))]
    pgconn.enter_pipeline_mode()
    # A failing Parse skips the Close and the new Parse after it, so at the next
    # segment "s" is still the DELETE, whatever the client meant.
    pgconn.send_prepare(b"bad", b"SELEC oops")
    pgconn.send_close_prepared(b"s")
    pgconn.send_prepare(b"s", b"SELECT 1")
    pgconn.pipeline_sync()
    pgconn.send_query_prepared(b"s", [])
    pgconn.pipeline_sync()
    steps += pipeline_results(pgconn, 2)
    pgconn.exit_pipeline_mode()
    return steps


def sql_execute(pgconn):
    return [
        outcome(pgconn.prepare(b"s", b"DELETE FROM customers")),
        outcome(pgconn.exec_(b"EXECUTE s")),
        outcome(pgconn.exec_params(b"EXPLAIN ANALYZE EXECUTE s", [])),
        outcome(pgconn.exec_(b"EXECUTE never_prepared")),
        # A statement prepared by SQL is visible to the extended protocol.
        outcome(pgconn.exec_(b"PREPARE q AS SELECT count(*) FROM customers")),
        outcome(pgconn.exec_prepared(b"q", [])),
        outcome(pgconn.exec_(b"DEALLOCATE q")),
        outcome(pgconn.exec_prepared(b"q", [])),
    ]


def lexical_pipeline(pgconn):
    pgconn.enter_pipeline_mode()
    pgconn.send_query_params(
        b"SELECT set_config('standard_conforming_strings', 'off', false)", []
    )
    # With standard strings, two columns and a comment; with them off, one string.
    pgconn.send_query_params(b"SELECT 'a\\', 1 -- '", [])
    pgconn.pipeline_sync()
    steps = pipeline_results(pgconn, 1)
    pgconn.exit_pipeline_mode()
    # The refusal failed the segment at the server too, as an error would have: the
    # set_config before it was rolled back.
    steps.append(outcome(pgconn.exec_(b"SHOW standard_conforming_strings")))
    steps.append(
        outcome(pgconn.exec_(b"SELECT set_config('standard_conforming_strings', 'off', false)"))
    )
    # Settled: the same text is now read as the server reads it.
    steps.append(outcome(pgconn.exec_(b"SELECT 'a\\', 1 -- '")))
    steps.append(outcome(pgconn.exec_(b"SELECT 'it\\'s'")))
    return steps


SCENARIOS = {
    "reprepare": reprepare,
    "unknown": unknown,
    "pipelined_redefinition": pipelined_redefinition,
    "sql_execute": sql_execute,
    "lexical_pipeline": lexical_pipeline,
}


def main(conninfo, scenario):
    with psycopg.connect(conninfo, autocommit=True) as conn:
        print(json.dumps(SCENARIOS[scenario](conn.pgconn)))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
