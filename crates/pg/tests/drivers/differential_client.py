"""Runs the differential suite's plan with psycopg's low-level libpq API and reports what
the client saw for every text, for the test to compare with the ledger. The plan comes as
JSON on stdin; one JSON document goes to stdout.

Usage: differential_client.py CONNINFO < plan.json

Plan: {"mode": "gateway", "sessions": [SESSION...]} or {"mode": "direct", "cases": [...]}.

A gateway SESSION is {"name", "shape", "options", "steps"}:
- shape "simple": each step is one case, sent as one Query message (PQsendQuery), every
  result read before the next;
- shape "extended": each step is one case, run with PQexecParams ("via": "params") or
  PQprepare + PQexecPrepared ("via": "prepared");
- shape "pipeline": each step is a window of segments (each a list of cases, then a
  Sync), all sent before any of their results is read.

A case is {"id", "sql", "via"}. For each, the report gives the results the client got (in
order: status, command tag, SQLSTATE), the standard_conforming_strings and client_encoding
the client had last heard of when it sent the case, and whether anything was in flight.

In "direct" mode each case also names "scs" and "enc"; it runs straight against the server
inside a transaction that is rolled back, for what the server makes of a text the gateway
refused.
"""
import json
import sys

from psycopg import pq

ES = pq.ExecStatus


def describe(res):
    status = ES(res.status)
    out = {"s": status.name.lower(), "tag": None, "code": None}
    if status in (ES.TUPLES_OK, ES.COMMAND_OK):
        tag = res.command_status
        out["tag"] = tag.decode() if tag else None
    elif status == ES.FATAL_ERROR:
        code = res.error_field(pq.DiagnosticField.SQLSTATE)
        out["code"] = code.decode() if code else "?"
    return out


def heard(pgconn, name):
    value = pgconn.parameter_status(name.encode())
    return value.decode() if value is not None else None


def settings(pgconn):
    return heard(pgconn, "standard_conforming_strings"), heard(pgconn, "client_encoding")


def query_results(pgconn):
    """Every result of the one query sent, up to the NULL that ends them."""
    out = []
    while True:
        res = pgconn.get_result()
        if res is None:
            return out
        out.append(describe(res))
        if res.status == ES.FATAL_ERROR and pgconn.status != pq.ConnStatus.OK:
            return out


def pipeline_item(pgconn):
    """The results of one queued pipeline item (a query or a prepare)."""
    out = []
    nulls = 0
    while True:
        res = pgconn.get_result()
        if res is None:
            if out:
                return out
            nulls += 1
            if nulls > 1000 or pgconn.status != pq.ConnStatus.OK:
                raise RuntimeError("pipeline: no result for a queued item")
            continue
        out.append(describe(res))


def pipeline_sync(pgconn):
    while True:
        res = pgconn.get_result()
        if res is None:
            if pgconn.status != pq.ConnStatus.OK:
                raise RuntimeError("pipeline: connection lost before the sync")
            continue
        if res.status == ES.PIPELINE_SYNC:
            return
        raise RuntimeError(f"pipeline: unexpected {ES(res.status).name} before the sync")


def run_simple(pgconn, steps, report):
    for case in steps:
        scs, enc = settings(pgconn)
        pgconn.send_query(case["sql"].encode())
        report.append(entry(case, query_results(pgconn), scs, enc, False))


def run_extended(pgconn, steps, report):
    for case in steps:
        scs, enc = settings(pgconn)
        sql = case["sql"].encode()
        if case["via"] == "prepared":
            name = f"p{case['id']}".encode()
            prepared = describe(pgconn.prepare(name, sql))
            if prepared["s"] == "fatal_error":
                prepared["stage"] = "prepare"
                results = [prepared]
            else:
                results = [describe(pgconn.exec_prepared(name, []))]
        else:
            results = [describe(pgconn.exec_params(sql, []))]
        report.append(entry(case, results, scs, enc, False))


def run_pipeline(pgconn, steps, report):
    pgconn.enter_pipeline_mode()
    for window in steps:
        scs, enc = settings(pgconn)
        # What was queued, in order: (case, how many libpq items it queued, idle), and a
        # None for each Sync.
        queued = []
        idle = True
        for segment in window:
            for case in segment:
                sql = case["sql"].encode()
                if case["via"] == "prepared":
                    name = f"p{case['id']}".encode()
                    pgconn.send_prepare(name, sql)
                    pgconn.send_query_prepared(name, [])
                    queued.append((case, 2, idle))
                else:
                    pgconn.send_query_params(sql, [])
                    queued.append((case, 1, idle))
                idle = False
            pgconn.pipeline_sync()
            queued.append((None, 0, False))
        pgconn.flush()
        for case, items, idle in queued:
            if case is None:
                pipeline_sync(pgconn)
                continue
            results = []
            for item in range(items):
                got = pipeline_item(pgconn)
                if items == 2 and item == 0:
                    # The Parse of a prepared case: only its failure is worth reporting.
                    for r in got:
                        if r["s"] != "command_ok":
                            r["stage"] = "prepare"
                            results.append(r)
                else:
                    results.extend(got)
            report.append(entry(case, results, scs, enc, not idle))
    pgconn.exit_pipeline_mode()


def entry(case, results, scs, enc, inflight):
    return {
        "id": case["id"],
        "results": results,
        "scs": scs,
        "enc": enc,
        "inflight": inflight,
    }


def connect(conninfo):
    pgconn = pq.PGconn.connect(conninfo.encode())
    if pgconn.status != pq.ConnStatus.OK:
        raise RuntimeError(pgconn.get_error_message())
    # Notices (nonstandard backslashes) are expected by the hundred: not worth printing.
    pgconn.notice_handler = lambda _res: None
    return pgconn


def gateway(conninfo, plan):
    out = []
    for session in plan["sessions"]:
        report = []
        failure = None
        try:
            pgconn = connect(f"{conninfo} {session['options']}")
            try:
                shape = session["shape"]
                if shape == "simple":
                    run_simple(pgconn, session["steps"], report)
                elif shape == "extended":
                    run_extended(pgconn, session["steps"], report)
                else:
                    run_pipeline(pgconn, session["steps"], report)
            finally:
                pgconn.finish()
        except Exception as e:  # reported, so the test names the session and where it broke
            failure = f"{type(e).__name__}: {e}"
        out.append({"name": session["name"], "cases": report, "failure": failure})
    return {"sessions": out}


def direct(conninfo, plan):
    pgconn = connect(conninfo)
    out = []
    for case in plan["cases"]:
        # The settings first (reported back, so the test sees they took), then the text
        # alone in a transaction: nothing it does outlives the ROLLBACK. The generated
        # texts hold no transaction control of their own.
        now = settings(pgconn)
        if now[0] != case["scs"]:
            describe(pgconn.exec_(f"SET standard_conforming_strings = {case['scs']}".encode()))
        if now[1] != case["enc"]:
            describe(pgconn.exec_(f"SET client_encoding = '{case['enc']}'".encode()))
        now = settings(pgconn)
        pgconn.exec_(b"BEGIN")
        pgconn.send_query(case["sql"].encode())
        results = query_results(pgconn)
        pgconn.exec_(b"ROLLBACK")
        out.append(entry(case, results, now[0], now[1], False))
    pgconn.finish()
    return {"cases": out}


def main(conninfo):
    plan = json.load(sys.stdin)
    if plan["mode"] == "direct":
        print(json.dumps(direct(conninfo, plan)))
    else:
        print(json.dumps(gateway(conninfo, plan)))


if __name__ == "__main__":
    main(sys.argv[1])
