"""The server's hot-path rewrites count exactly what the general code counted.

The request tally's slot for the request that arrived last (beside its dict of the
others), the answer budget's moves (one step for a batched RESULT's release and charge,
conditionals instead of ``max``) and the latency histogram's bucket (a loop
instead of ``bisect_left``) are checked against the formulas they replaced, over
many random sequences: a user sees these numbers in the metrics and in refusals.
"""

from __future__ import annotations

import random
from bisect import bisect_left

from bridge.server.budget import Account, AnswerBudget
from bridge.server.stats import LATENCY_BOUNDS, ServerStats
from bridge.server.tally import RequestTally, bucket
from protocol.errors import ErrorCode
from protocol.events import Error, I2CRequest
from protocol.virtio import chain, read, write


class Reference:
    """The budget's arithmetic as it was: max(), one move per call."""

    def __init__(self, total: int, per_client: int, floor: int) -> None:
        self.total, self.per_client, self.floor = total, per_client, floor
        self.used = self.excess = 0
        self.held: dict[int, tuple[int, int]] = {}

    def move(self, c: int, owed: int, buffered: int) -> None:
        o, b = self.held.get(c, (0, 0))
        before, after = o + b, owed + buffered
        self.used += after - before
        self.excess += max(0, after - self.floor) - max(0, before - self.floor)
        self.held[c] = (owed, buffered)

    def refusal(self, c: int, cost: int) -> bool:
        o, b = self.held.get(c, (0, 0))
        if o + b + cost > self.per_client:
            return True
        more = max(0, o + b + cost - self.floor) - max(0, o + b - self.floor)
        if more and self.excess + more > self.total:
            return True
        self.move(c, o + cost, b)
        return False


def test_bucket_is_bisect_left() -> None:
    rng = random.Random(3)
    samples = [*LATENCY_BOUNDS, 0.0, -1.0, 1e9, *(b * 1.0000001 for b in LATENCY_BOUNDS),
               *(rng.uniform(0, 6) for _ in range(2000)),
               *(rng.uniform(0, 0.001) for _ in range(2000))]
    for took in samples:
        assert bucket(took) == bisect_left(LATENCY_BOUNDS, took), took


def test_budget_moves_match_the_formulas_they_replaced() -> None:
    rng = random.Random(19)
    for _ in range(50):
        total, per_client, floor = (rng.choice([1000, 5000, 20000]), rng.choice([800, 4000]),
                                    rng.choice([0, 500, 2000]))
        conns = [Account() for _ in range(3)]  # its note_buffer() measures nothing
        budget = AnswerBudget(total, per_client, lambda cs=conns: cs, floor=floor)
        ref = Reference(total, per_client, floor)
        reserved: list[tuple[int, int]] = []
        for _ in range(300):
            k = rng.randrange(3)
            c = conns[k]
            op = rng.random()
            if op < 0.45:
                cost = rng.randint(1, 700)
                refused = budget.refusal(c, cost) is not None
                assert refused == ref.refusal(k, cost)
                if not refused:
                    reserved.append((k, cost))
            elif op < 0.75 and reserved:
                k, cost = reserved.pop(rng.randrange(len(reserved)))
                size = rng.randint(0, 300)
                budget.answered(conns[k], cost, size)
                o, b = ref.held[k]
                ref.move(k, o - cost, b + size)
            elif op < 0.85 and reserved:
                k, cost = reserved.pop(rng.randrange(len(reserved)))
                budget.release(conns[k], cost)
                o, b = ref.held[k]
                ref.move(k, o - cost, b)
            else:
                size = rng.randint(0, 900)
                budget.buffer(c, size)
                ref.move(k, ref.held.get(k, (0, 0))[0], size)
            assert (budget.used, budget.excess) == (ref.used, ref.excess)
            assert [(x.owed, x.buffered) for x in conns] == \
                [ref.held.get(i, (0, 0)) for i in range(3)]


def test_tally_slot_counts_what_the_dict_alone_counted() -> None:
    """The request that arrived last waits in the tally's slot, not in its dict: whatever
    order requests are answered in (RESULTs, ERRORs, the connection closing), every bus
    counter a user sees is what one pending entry per request gives."""
    rng = random.Random(23)
    for _ in range(40):
        stats = ServerStats()
        counts = {name: stats.bus("i2c", name) for name in ("1", "2")}
        tally = RequestTally(stats)
        pending: dict[int, tuple[str, I2CRequest, bool]] = {}  # id -> bus, frame, still timed
        want = {name: {"in_flight": 0, "answers": 0, "read": 0, "written": 0}
                for name in counts}
        codes: dict[str, int] = {}
        closed = False
        next_id = 1
        for _ in range(200):
            op = rng.random()
            if op < 0.45 and not closed:
                bus = rng.choice(["1", "2", "nope"])
                n = rng.randint(1, 3)
                ev = I2CRequest(next_id, bus, tuple(chain([write(0x48, b"\x01" * n),
                                                           read(0x48, n)])))
                tally.arrived(ev)
                if bus in counts:
                    pending[next_id] = (bus, ev, True)
                    want[bus]["in_flight"] += 1
                next_id += 1
            elif op < 0.8 and pending:
                rid = rng.choice(list(pending))
                bus, ev, timed = pending.pop(rid)
                if timed:
                    want[bus]["in_flight"] -= 1
                    want[bus]["answers"] += 1
                if rng.random() < 0.7:
                    n = ev.msgs[1].length
                    tally.result(rid, bytes(2), [b"\x00" * n], [])
                    want[bus]["read"] += n
                    want[bus]["written"] += n
                else:
                    tally.error(Error(rid, ErrorCode.BUSY, "leased"))
                    codes[bus] = codes.get(bus, 0) + 1
            elif op < 0.83 and not closed:
                tally.close()
                closed = True
                for rid, (bus, ev, timed) in pending.items():
                    if timed:
                        want[bus]["in_flight"] -= 1
                    pending[rid] = (bus, ev, False)
            elif op < 0.9:
                tally.result(10_000 + next_id, b"", [], [])  # not pending: nothing counts
            for name, c in counts.items():
                assert (c.in_flight, sum(c.latency), c.bytes_read, c.bytes_written,
                        c.by_code.get("busy", 0)) == (
                    want[name]["in_flight"], want[name]["answers"], want[name]["read"],
                    want[name]["written"], codes.get(name, 0))
