"""Crash rounds: an acked write survives `kill -9` at any moment (PROTOCOL.md §8).

    python bench/crash.py --rounds N [--seed S] [--writers K] [--data-dir D] [--rows R]

Starts the real server (`python run.py`) on a free port with a short `CSV_FLUSH_S`, so
checkpoints (forked CSV exports, renames, backups) happen all through the storm, and on a
generated table in a temporary DATA_DIR (or `--data-dir`, kept afterwards). Each round:

- K writers (python-socketio AsyncClient, one user each) lock rows of their own and send
  `update_csv` / `add_csv` / `delete_csv` back to back, with `version`; every ok ack is
  recorded (row id, version, values) the moment it is decoded. A reader downloads the whole
  table (`GET /api/fetch_csv?format=csv`, Bearer) in a loop; each complete download must
  parse as CSV under the right header.
- After a random delay (from the seed) the server gets SIGKILL. The CSV left on disk must be
  whole; then the server is started again and every row is fetched over Socket.IO: each row
  must be exactly as last acked (values and version), deleted rows absent, added rows present,
  untouched rows unchanged. A write in flight at the kill (sent, not acked) may or may not
  be there; what the server holds for it is taken from then on.

At the end the server is stopped cleanly: the CSV on disk must hold what was served, and a
start on it must serve the same table at the same `seq`.

stdout: one JSON object per round (`round`, `seed`, `acked`, `lost`, `kill_after_s`,
`in_flight`, `in_flight_applied`, `downloads`, `mid_checkpoint` (the kill cut a CSV export
short), `rows`, `seq`, `restart_s`, `relogins`, `seconds`, `errors`), then a summary
(`rounds`, `acked`, `lost`, `seconds`, `seed`, `errors`, `final_ok`, ...). Details of anything
lost go to stderr. Exit status 1 when an acked write was lost or a check failed (rerun with
the printed `--seed` to retry the same kill delays and operations; the interleaving itself is
up to the machine).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import socketio

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.crash_clients import CALL_TIMEOUT_S, Accounts, RoundState, Writer, close_client, fetch_all, reader
from bench.crash_model import Model, Row, check_csv, compare_disk
from bench.crash_server import crash_server
from bench.harness import CSV_NAME, BenchError, Server, emit, note, write_table

KILL_AFTER_S = (0.2, 1.2)
WORKING_ROWS = 30  # rows each writer starts with; the rest of the table stays untouched


@dataclass
class Totals:
    rounds: int = 0
    acked: int = 0
    lost: int = 0
    errors: int = 0
    downloads: int = 0
    mid_checkpoint: int = 0


class CrashRun:
    def __init__(self, server: Server, accounts: Accounts, seed: int, writers: int) -> None:
        self.server = server
        self.accounts = accounts
        self.seed = seed
        self.writer_count = writers
        self.writers: list[Writer] = []
        self.model: Model | None = None
        self.totals = Totals()

    async def begin(self) -> None:
        columns, rows, seq = await self.check_served()
        if not rows:
            raise BenchError("the table is empty")
        ids = sorted(rows)
        self.model = Model(columns=columns, rows=rows, seq=seq, ids_seen=set(ids), acked_version=seq)
        self.writers = [Writer(k, ids[k :: self.writer_count][:WORKING_ROWS]) for k in range(self.writer_count)]

    async def check_served(self) -> tuple[list[dict[str, str]], dict[int, Row], int]:
        client = await self.accounts.connect("crash_checker")
        try:
            return await fetch_all(client)
        finally:
            await close_client(client)

    async def round(self, number: int) -> dict[str, Any]:
        model = self.model
        assert model is not None
        started = time.perf_counter()
        rng = random.Random(f"{self.seed}:{number}")
        kill_after = round(rng.uniform(*KILL_AFTER_S), 3)
        state = RoundState()
        relogins = self.accounts.relogins
        clients = [await self.accounts.connect(writer.username) for writer in self.writers]
        tasks = [
            asyncio.create_task(
                writer.storm(client, model, state, random.Random(f"{self.seed}:{number}:{writer.index}"), f"r{number}")
            )
            for writer, client in zip(self.writers, clients, strict=True)
        ]
        token = await self.accounts.token("crash_reader")
        tasks.append(asyncio.create_task(reader(self.accounts.http, self.server.url, token, model.names, state)))
        await asyncio.sleep(kill_after)
        state.killing = True
        await asyncio.to_thread(self.server.kill)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for client in clients:
            await close_client(client)
        # §8: the CSV on disk is complete and parseable at every moment, a crash's included.
        state.errors.extend(check_csv((self.server.data_dir / CSV_NAME).read_bytes(), model.names, "CSV on disk"))
        in_flight = len(model.pending)
        # A temp file left behind means the kill landed in the middle of a CSV checkpoint.
        mid_checkpoint = any(self.server.data_dir.glob(f"{CSV_NAME}.*.tmp"))
        restart_s = await asyncio.to_thread(self.server.start)
        columns, served, seq = await self.check_served()
        if columns != model.columns:
            state.errors.append(f"columns changed: {columns}")
        verdict = model.verify(served, seq)
        for index, row_id in verdict.applied.items():
            self.writers[index].owned.append(row_id)
        for writer in self.writers:  # settled in-flight deletes, and whatever was lost
            writer.owned = [row_id for row_id in writer.owned if row_id in served]
        model.adopt(served, seq)
        for line in verdict.lost + verdict.errors:
            note(f"round {number} (seed {self.seed}): {line}")
        for line in state.errors:
            note(f"round {number} (seed {self.seed}): {line}")
        errors = state.errors + verdict.errors
        totals = self.totals
        totals.rounds += 1
        totals.acked += state.acked
        totals.lost += len(verdict.lost)
        totals.errors += len(errors)
        totals.downloads += state.downloads
        totals.mid_checkpoint += mid_checkpoint
        return {
            "round": number,
            "seed": self.seed,
            "acked": state.acked,
            "lost": len(verdict.lost),
            "kill_after_s": kill_after,
            "in_flight": in_flight,
            "in_flight_applied": verdict.applied_count,
            "downloads": state.downloads,
            "mid_checkpoint": mid_checkpoint,
            "rows": len(served),
            "seq": seq,
            "restart_s": round(restart_s, 3),
            "relogins": self.accounts.relogins - relogins,
            "seconds": round(time.perf_counter() - started, 3),
            "errors": errors[:5],
        }

    async def finish(self) -> list[str]:
        """After a clean stop the CSV on disk holds what was served, and a start on it serves
        the same table at the same seq."""
        model = self.model
        assert model is not None
        columns, served, seq = await self.check_served()
        code = await asyncio.to_thread(self.server.stop)
        problems = [] if code == 0 else [f"clean stop exited with {code}"]
        data = (self.server.data_dir / CSV_NAME).read_bytes()
        problems += check_csv(data, model.names, "CSV after a clean stop")
        if not problems:
            problems += compare_disk(data, columns, served)
        await asyncio.to_thread(self.server.start)
        columns_again, served_again, seq_again = await self.check_served()
        if (columns_again, served_again, seq_again) != (columns, served, seq):
            changed = sorted(i for i in served.keys() | served_again.keys() if served.get(i) != served_again.get(i))
            problems.append(f"after a clean restart: seq {seq} -> {seq_again}, rows changed: {changed[:10]}")
        code = await asyncio.to_thread(self.server.stop)
        if code != 0:
            problems.append(f"second clean stop exited with {code}")
        for line in problems:
            note(f"final check (seed {self.seed}): {line}")
        return problems


def prepare(args: argparse.Namespace) -> tuple[Path, Path]:
    """A work directory (server log; the data unless `--data-dir`), and a DATA_DIR with a table."""
    workdir = Path(tempfile.mkdtemp(prefix="tablecast-crash-"))
    data_dir = Path(args.data_dir).resolve() if args.data_dir else workdir / "data"
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    if not (data_dir / CSV_NAME).exists():
        write_table(data_dir / CSV_NAME, args.rows, args.seed)
    return workdir, data_dir


async def run(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    workdir, data_dir = prepare(args)
    server = crash_server(data_dir, workdir / "server.log")
    summary: dict[str, Any] = {"rounds": 0, "acked": 0, "lost": 0}
    failed = True
    try:
        await asyncio.to_thread(server.start)
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=CALL_TIMEOUT_S * 3)) as http:
            crash = CrashRun(server, Accounts(http, server), args.seed, args.writers)
            await crash.begin()
            for number in range(args.rounds):
                emit(await crash.round(number))
            problems = await crash.finish()
        totals = crash.totals
        summary = {
            "rounds": totals.rounds,
            "acked": totals.acked,
            "lost": totals.lost,
            "seconds": round(time.perf_counter() - started, 1),
            "seed": args.seed,
            "writers": args.writers,
            "downloads": totals.downloads,
            "mid_checkpoint": totals.mid_checkpoint,
            "errors": totals.errors + len(problems),
            "final_ok": not problems,
        }
        failed = totals.lost > 0 or summary["errors"] > 0
    except (BenchError, OSError, socketio.exceptions.SocketIOError, aiohttp.ClientError, TimeoutError) as exc:
        note(f"failed (seed {args.seed}): {type(exc).__name__}: {exc}")
        summary = {**summary, "seconds": round(time.perf_counter() - started, 1), "seed": args.seed, "error": str(exc)}
    finally:
        with contextlib.suppress(BenchError, AttributeError):  # AttributeError: never started
            await asyncio.to_thread(server.stop)
        if failed:
            note(f"server log and data kept in {workdir} (and {data_dir}); log tail:\n{server.log_tail()}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    emit(summary)
    return 1 if failed else 0


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, required=True, help="kill -9 rounds")
    parser.add_argument("--seed", type=int, default=None, help="kill delays and operations (default: random)")
    parser.add_argument("--writers", type=int, default=4, help="concurrent writers, one user each")
    parser.add_argument("--data-dir", default=None, help="DATA_DIR to use and keep (default: a temporary one)")
    parser.add_argument("--rows", type=int, default=2000, help="rows of the generated table, when there is none")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.writers < 1 or args.rows < 1:
        parser.error("--rounds, --writers and --rows must be positive")
    if args.seed is None:
        args.seed = random.SystemRandom().randrange(2**32)
    return args


if __name__ == "__main__":
    sys.exit(asyncio.run(run(parse_args(sys.argv[1:]))))
