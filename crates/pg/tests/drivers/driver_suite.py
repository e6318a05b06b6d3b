"""Runs psycopg2's own unittest suite (the tests/ folder of its sdist) against one
PostgreSQL endpoint and writes what became of every test as JSON, so the same tests can be
run directly against the server and through the gateway and the two maps compared
(crates/pg/tests/driver_suite.rs, scripts/driver-suite).

Usage:
  driver_suite.py --suite DIR --host H --port P --user U --password W --dbname D \
      --out FILE [--timeout SECONDS] [--log FILE] [--replication] [--exclude NAME ...]
      [NAME ...]

DIR is the unpacked sdist (it holds tests/__init__.py). Each NAME selects a module, a
class or one test, relative to the tests package (test_cursor, test_cursor.CursorTests,
test_cursor.CursorTests.test_null_name); none selects the whole suite, as its own
tests.test_suite() lists it. --exclude takes names the same way, out of the selection.
With --replication the replication tests connect to the same endpoint in replication
mode (the server must allow it); without, they skip, as psycopg2's suite does by default.

FILE gets {"tests": {TEST_ID: {"outcome", "message", "seconds"}}, "seconds": total},
TEST_ID relative to the tests package. An outcome is one of pass, fail, error, skip, xfail
(an expected failure), xpass (an unexpected success) or timeout; the message is the
exception's last line or the skip reason, cut short.

The suite runs in a worker process watched by this one: psycopg2 blocks inside libpq
(which retries on EINTR), so no in-process alarm can stop a test that waits for an answer
that never comes. When one test outlives --timeout, or the worker dies, the test is
recorded as timeout (or error) and a fresh worker carries on with the tests after it;
after --max-timeouts of them the rest are reported as not run.
"""
import argparse
import json
import os
import select
import subprocess
import sys
import time
import traceback
import unittest

MESSAGE_CHARS = 300
PACKAGE = "tests"


def short(text):
    text = " ".join(str(text).split())
    return text if len(text) <= MESSAGE_CHARS else text[: MESSAGE_CHARS - 1] + "…"


def last_line(err):
    """The exception's own line, which says what went wrong without the traceback."""
    kind, value, _ = err
    lines = traceback.format_exception_only(kind, value)
    return short(lines[-1] if lines else kind.__name__)


def relative(test_id):
    prefix = PACKAGE + "."
    return test_id[len(prefix):] if test_id.startswith(prefix) else test_id


# ---------------------------------------------------------------------------------------
# The worker: imports the suite and runs the tests it is given, reporting each on a pipe.


class Reporter(unittest.TestResult):
    """Sends one JSON line per test: "start" before it runs, "done" with its outcome."""

    def __init__(self, channel):
        super().__init__()
        self.channel = channel
        self.current = None

    def send(self, message):
        self.channel.write(json.dumps(message) + "\n")
        self.channel.flush()

    def startTest(self, test):
        super().startTest(test)
        self.current = {"outcome": "pass", "message": "", "started": time.monotonic()}
        self.send({"start": relative(test.id())})

    def stopTest(self, test):
        super().stopTest(test)
        cur = self.current or {"outcome": "error", "message": "no start", "started": 0}
        self.send({
            "done": relative(test.id()),
            "outcome": cur["outcome"],
            "message": cur["message"],
            "seconds": round(time.monotonic() - cur["started"], 3),
        })
        self.current = None

    def settle(self, test, outcome, message):
        # Class and module fixtures report as pseudo-tests outside start/stop.
        if self.current is None:
            self.send({"done": relative(test.id()), "outcome": outcome,
                       "message": message, "seconds": 0})
            return
        # The first bad outcome of a test (or of its subtests) is the one kept.
        if self.current["outcome"] in ("pass", "skip"):
            self.current["outcome"] = outcome
            self.current["message"] = message

    def addError(self, test, err):
        self.settle(test, "error", last_line(err))

    def addFailure(self, test, err):
        self.settle(test, "fail", last_line(err))

    def addSkip(self, test, reason):
        self.settle(test, "skip", short(reason))

    def addExpectedFailure(self, test, err):
        self.settle(test, "xfail", last_line(err))

    def addUnexpectedSuccess(self, test):
        self.settle(test, "xpass", "")

    def addSubTest(self, test, subtest, err):
        if err is not None:
            failed = issubclass(err[0], test.failureException)
            self.settle(test, "fail" if failed else "error",
                        short(f"{subtest.id()[len(test.id()):].strip()}: {last_line(err)}"))


def worker(fd):
    channel = os.fdopen(fd, "w")
    ids = json.load(sys.stdin)
    # The supervisor starts the worker in the unpacked sdist, which holds the package.
    sys.path.insert(0, os.getcwd())
    import importlib
    importlib.import_module(PACKAGE)
    loader = unittest.TestLoader()
    suite = unittest.TestSuite()
    for test_id in ids:
        suite.addTests(loader.loadTestsFromName(f"{PACKAGE}.{test_id}"))
    suite.run(Reporter(channel))
    channel.close()
    # Tests may leave threads or connections behind; nothing more is wanted from them.
    os._exit(0)


def selects(name, test_id):
    return test_id == name or test_id.startswith(name + ".")


def expand(names, excluded):
    """The individual test ids NAMES select but EXCLUDED do not, in suite order; every
    name must exist."""
    import importlib
    package = importlib.import_module(PACKAGE)
    if names:
        loader = unittest.TestLoader()
        suite = unittest.TestSuite(loader.loadTestsFromName(f"{PACKAGE}.{n}") for n in names)
    else:
        # The suite as psycopg2 runs it. Its test_suite() connects once first and exits
        # when it cannot, which is the early failure wanted here too.
        suite = package.test_suite()
    ids = []

    def walk(node):
        if isinstance(node, unittest.TestSuite):
            for child in node:
                walk(child)
        elif isinstance(node, unittest.loader._FailedTest):
            # What the loader makes of a name it cannot import or find.
            raise SystemExit(f"no such test, class or module: {node.id().split('.')[-1]} "
                             f"({str(node._exception).strip().splitlines()[-1]})")
        else:
            ids.append(relative(node.id()))

    walk(suite)
    for name in excluded:
        if not any(selects(name, i) for i in ids):
            raise SystemExit(f"--exclude {name}: no such test in the selection")
    seen = set()
    return [i for i in ids
            if not (i in seen or seen.add(i) or any(selects(n, i) for n in excluded))]


# ---------------------------------------------------------------------------------------
# The supervisor: runs workers, enforces the per-test timeout, collects outcomes.


def supervise(args, ids):
    results = {}
    remaining = list(ids)
    timeouts = 0
    log = open(args.log, "ab") if args.log else subprocess.DEVNULL
    while remaining:
        if timeouts >= args.max_timeouts:
            # Something hangs every test (a dead endpoint); the caller's own time limit
            # would cut the whole run off with nothing reported.
            for test_id in remaining:
                results[test_id] = {"outcome": "error", "seconds": 0,
                                    "message": f"not run: {timeouts} tests timed out before"}
            break
        read_fd, write_fd = os.pipe()
        proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--worker", str(write_fd)],
            stdin=subprocess.PIPE, stdout=log, stderr=log, pass_fds=[write_fd],
            cwd=args.suite, env=os.environ,
        )
        os.close(write_fd)
        proc.stdin.write(json.dumps(remaining).encode())
        proc.stdin.close()
        current, started, buffer, ended = None, time.monotonic(), b"", None
        while ended is None:
            wait = args.timeout - (time.monotonic() - started)
            ready, _, _ = select.select([read_fd], [], [], max(wait, 0))
            if not ready:
                proc.kill()
                proc.wait()
                ended = ("timeout", f"no result within {args.timeout:g} s; worker killed")
                break
            chunk = os.read(read_fd, 65536)
            if not chunk:
                code = proc.wait()
                ended = None if current is None else ("error", f"worker died (exit {code})")
                break
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                msg = json.loads(line)
                if "start" in msg:
                    current, started = msg["start"], time.monotonic()
                else:
                    done = msg.pop("done")
                    results[done] = msg
                    if done == current:
                        current, started = None, time.monotonic()
        os.close(read_fd)
        if ended is not None and ended[0] == "timeout":
            timeouts += 1
        if current is not None and ended is not None:
            results[current] = {"outcome": ended[0], "message": ended[1],
                                "seconds": round(time.monotonic() - started, 3)}
        elif ended is not None and ended[0] == "timeout":
            # Stuck between tests (a class fixture, the import): nothing more to gain.
            for test_id in remaining:
                results.setdefault(test_id, {"outcome": "error", "seconds": 0,
                                             "message": "worker stuck outside a test"})
        proc.wait()
        remaining = [i for i in remaining if i not in results]
        if current is None and remaining:
            # The worker ended cleanly yet left tests unrun (it could not load them).
            for test_id in remaining:
                results[test_id] = {"outcome": "error", "seconds": 0,
                                    "message": "not run (worker ended; see the log)"}
            remaining = []
    if log is not subprocess.DEVNULL:
        log.close()
    return results


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        worker(int(sys.argv[2]))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--suite", required=True, help="the unpacked psycopg2 sdist")
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", required=True)
    parser.add_argument("--user", required=True)
    parser.add_argument("--password", required=True)
    parser.add_argument("--dbname", required=True)
    parser.add_argument("--out", required=True, help="where the JSON goes")
    parser.add_argument("--log", help="where the tests' own output goes")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per test")
    parser.add_argument("--max-timeouts", type=int, default=5,
                        help="timeouts after which the remaining tests are not run")
    parser.add_argument("--replication", action="store_true",
                        help="run the replication tests against the same endpoint")
    parser.add_argument("--exclude", action="append", default=[], metavar="NAME",
                        help="a module, class or test to leave out")
    parser.add_argument("names", nargs="*", help="modules, classes or tests (none: all)")
    args = parser.parse_args()
    args.suite = os.path.abspath(args.suite)

    # tests/testconfig.py reads these when the suite is imported; the workers inherit them.
    os.environ.update({
        "PSYCOPG2_TESTDB": args.dbname,
        "PSYCOPG2_TESTDB_HOST": args.host,
        "PSYCOPG2_TESTDB_PORT": str(args.port),
        "PSYCOPG2_TESTDB_USER": args.user,
        "PSYCOPG2_TESTDB_PASSWORD": args.password,
    })
    # The replication tests run only when given a DSN for replication connections; an
    # empty one means the test DSN itself.
    if args.replication:
        os.environ["PSYCOPG2_TEST_REPL_DSN"] = ""
    else:
        os.environ.pop("PSYCOPG2_TEST_REPL_DSN", None)
    sys.path.insert(0, args.suite)
    os.chdir(args.suite)

    began = time.monotonic()
    ids = expand(args.names, args.exclude)
    results = supervise(args, ids)
    report = {"tests": {i: results[i] for i in ids if i in results},
              "seconds": round(time.monotonic() - began, 3)}
    with open(args.out, "w") as out:
        json.dump(report, out, indent=1, sort_keys=True)


if __name__ == "__main__":
    main()
