"""The Python ends of a ring: round trips from pyarrow, polars and DuckDB,
zero-copy receive and its lease, pipelines mixing Python and the
`laminar-ring` command, SIGKILL of either Python end, and bad input."""

import datetime
import decimal
import gc
import json
import os
import pathlib
import signal
import subprocess
import sys
import textwrap
import threading
import time

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.compute
import pyarrow.ipc
import pytest

import laminar_ring as lr

ROOT = pathlib.Path(__file__).resolve().parents[2]


def command():
    """The `laminar-ring` command built from this repository (release)."""
    path = pathlib.Path(os.environ.get("LAMINAR_RING_BIN", ROOT / "target/release/laminar-ring"))
    if not path.exists():
        pytest.fail(f"{path} is not built: run `cargo build --release` first")
    return str(path)


@pytest.fixture
def ring(tmp_path):
    """A ring name and the directory to keep it in (removed with it)."""
    return "r", tmp_path


def every_type(rows, seed=0):
    """A batch of every type the Rust tests round-trip, nulls included."""
    r = range(seed, seed + rows)
    return pa.record_batch(
        {
            "i8": pa.array([None if i % 3 == 2 else i % 100 for i in r], pa.int8()),
            "i64": pa.array([i * 1_000_003 for i in r], pa.int64()),
            "u16": pa.array([i % 60000 for i in r], pa.uint16()),
            "f32": pa.array([i / 4 for i in r], pa.float32()),
            "f64": pa.array([None if i % 9 == 8 else i * 0.5 for i in r], pa.float64()),
            "bool": pa.array([None if i % 4 == 3 else i % 3 == 0 for i in r], pa.bool_()),
            "utf8": pa.array([None if i % 5 == 4 else ["", "a", "ñu", "日本語"][i % 4] for i in r], pa.string()),
            "large_utf8": pa.array([f"row {i}" for i in r], pa.large_string()),
            "binary": pa.array([None if i % 6 == 5 else bytes([i % 256]) * (i % 4) for i in r], pa.binary()),
            "large_binary": pa.array([b"x" * (i % 3) for i in r], pa.large_binary()),
            "decimal": pa.array([decimal.Decimal(i * 12345) / 1000 for i in r], pa.decimal128(20, 3)),
            "ts": pa.array([i << 20 for i in r], pa.timestamp("us", tz="+01:00")),
            "date": pa.array([datetime.date(2020, 1, 1) + datetime.timedelta(days=i % 1000) for i in r], pa.date32()),
            "list": pa.array([None if i % 7 == 6 else list(range(i % 4)) for i in r], pa.list_(pa.int32())),
            "struct": pa.array([{"a": i, "b": str(i)} for i in r], pa.struct([("a", pa.int64()), ("b", pa.string())])),
            "dict": pa.array([["red", "green", "blue"][i % 3] for i in r], pa.string()).dictionary_encode(),
            "view": pa.array([f"v{i}" for i in r], pa.string_view()),
        }
    )


@pytest.mark.parametrize("copy", [False, True])
def test_every_type_round_trips_from_pyarrow(ring, copy):
    name, d = ring
    sent = [every_type(n, seed=n) for n in (0, 1, 7, 1000)]
    with lr.Consumer(name, dir=d, copy=copy) as rx, lr.Producer(name, dir=d) as tx:
        for b in sent:
            assert tx.send(b) == 1
        got = [rx.recv(timeout=10) for _ in sent]
        assert rx.schema.equals(sent[0].schema)
    for g, b in zip(got, sent):
        assert g.equals(b), f"{g.num_rows} rows differ"


def test_a_table_a_reader_and_iteration(ring):
    name, d = ring
    table = pa.Table.from_batches([every_type(100, s) for s in (0, 100, 200)])
    with lr.Producer(name, dir=d) as tx:
        assert tx.send(table) == 3
        assert tx.send_stream(pa.RecordBatchReader.from_batches(table.schema, table.to_batches())) == 3
    with lr.Consumer(name, dir=d) as rx:
        got = list(rx)
    assert pa.Table.from_batches(got).equals(pa.concat_tables([table, table]))


def test_polars_frames_round_trip(ring):
    name, d = ring
    df = pl.DataFrame(
        {
            "id": list(range(5000)),
            "px": [i * 0.25 if i % 7 else None for i in range(5000)],
            "tag": [["alpha", "beta", None, "delta"][i % 4] for i in range(5000)],
            "flag": [i % 2 == 0 for i in range(5000)],
            "day": [datetime.date(2024, 1, 1) + datetime.timedelta(days=i % 30) for i in range(5000)],
        }
    )
    with lr.Producer(name, dir=d) as tx:
        assert tx.send(df) >= 1
    with lr.Consumer(name, dir=d) as rx:
        back = pl.from_arrow(pa.Table.from_batches(list(rx)))
    assert back.equals(df)


def test_duckdb_results_round_trip(ring):
    name, d = ring
    query = """
        select i as id, i * 0.5 as half, 'row ' || i::varchar as label,
               case when i % 3 = 0 then null else i % 10 end as maybe,
               date '2024-01-01' + i::integer as day
        from range(20000) t(i)
    """
    with lr.Producer(name, dir=d) as tx:
        assert tx.send(duckdb.connect().sql(query)) >= 1
    with lr.Consumer(name, dir=d) as rx:
        got = pa.Table.from_batches(list(rx))
    rel = duckdb.connect().sql(query)
    want = rel.to_arrow_table() if hasattr(rel, "to_arrow_table") else rel.fetch_arrow_table()
    assert got.equals(want)
    # And DuckDB reads what came through the ring.
    assert duckdb.connect().sql("select sum(id) as s from got").fetchall()[0][0] == sum(range(20000))


def addresses(batch):
    for col in batch.columns:
        for buf in col.buffers():
            if buf is not None and buf.size > 0:
                yield buf.address


def test_zero_copy_buffers_lie_in_the_mapping_and_hold_the_lease_until_dropped(ring):
    name, d = ring
    b = every_type(4096).select(["i64", "f64", "utf8", "bool"])
    with lr.Consumer(name, dir=d) as rx, lr.Producer(name, dir=d) as tx:
        tx.send(b)
        tx.send(b)
        got = rx.recv(timeout=10)
        maps = rx.mapped_ranges()
        addrs = list(addresses(got))
        assert len(addrs) >= 6
        assert all(any(lo <= a < hi for lo, hi in maps) for a in addrs), "a zero-copy buffer outside the mapping"
        assert rx.outstanding() >= 1
        # An array taken from the batch keeps the lease on its own.
        column = got.column(0)
        del got
        gc.collect()
        assert rx.outstanding() >= 1, "released while an array of the batch lives"
        before = lr.info(name, dir=d)["subscribers"][0]["read_seq"]
        del column
        gc.collect()
        assert rx.outstanding() == 0, "not released after the last reference died"
        assert lr.info(name, dir=d)["subscribers"][0]["read_seq"] > before
        # A copy lies in process memory and holds nothing.
        rx.close()
    with lr.Consumer(name, dir=d, copy=True) as rx:
        got = rx.recv(timeout=10)
        maps = rx.mapped_ranges()
        assert got.equals(b)
        assert not any(lo <= a < hi for a in addresses(got) for lo, hi in maps)
        assert rx.outstanding() == 0


def test_recv_times_out_and_releases_the_gil(ring):
    name, d = ring
    with lr.Consumer(name, dir=d) as rx:
        ticks = []
        go = threading.Event()

        def count():
            go.wait()
            end = time.monotonic() + 2
            while time.monotonic() < end:
                ticks.append(time.monotonic())

        t = threading.Thread(target=count)
        t.start()
        go.set()
        start = time.monotonic()
        with pytest.raises(TimeoutError):
            rx.recv(timeout=0.5)
        stop = time.monotonic()
        t.join()
        # The other thread ran all through recv's wait: Rust code that held
        # the GIL would give it no turn at all until it returned.
        inside = [x for x in ticks if start + 0.05 < x < stop - 0.05]
        assert len(inside) > 1000
        assert max(b - a for a, b in zip(inside, inside[1:])) < 0.05


def run_python(code, *args, **kw):
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), *map(str, args)], **kw)


def test_ctrl_c_interrupts_a_blocking_recv(ring):
    name, d = ring
    lr.create(name, dir=d)
    p = run_python(
        """
        import sys, laminar_ring as lr
        rx = lr.Consumer(sys.argv[1], dir=sys.argv[2])
        print("waiting", flush=True)
        try:
            rx.recv()
        except KeyboardInterrupt:
            print("interrupted", flush=True)
        """,
        name,
        d,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert p.stdout.readline().strip() == "waiting"
    time.sleep(0.2)
    sent = time.monotonic()
    p.send_signal(signal.SIGINT)
    out, _ = p.communicate(timeout=10)
    took = time.monotonic() - sent
    assert out.strip() == "interrupted"
    assert took < 2, f"took {took:.2f} s to notice Ctrl-C"


def test_a_python_producer_feeds_the_consume_sidecar(ring, tmp_path):
    name, d = ring
    out = tmp_path / "out.arrow"
    sidecar = subprocess.Popen([command(), "consume", name, "--dir", str(d), "-o", str(out), "--quiet"])
    batches = [every_type(500, s).select(["i64", "utf8", "f64", "list"]) for s in range(0, 5000, 500)]
    with lr.Producer(name, dir=d) as tx:
        for b in batches:
            tx.send(b)
    assert sidecar.wait(timeout=60) == 0
    with pa.OSFile(str(out)) as f:
        got = pa.ipc.open_file(f).read_all()
    assert got.equals(pa.Table.from_batches(batches))


def test_the_produce_command_feeds_a_python_consumer(ring, tmp_path):
    name, d = ring
    table = pa.Table.from_batches([every_type(700, s).select(["i64", "utf8", "bool"]) for s in range(0, 7000, 700)])
    src = tmp_path / "in.arrow"
    with pa.OSFile(str(src), "wb") as f, pa.ipc.new_stream(f, table.schema) as w:
        w.write_table(table)
    with lr.Consumer(name, dir=d) as rx:
        producer = subprocess.Popen([command(), "produce", name, "--dir", str(d), "-i", str(src), "--quiet"])
        got = pa.Table.from_batches(list(rx))
        assert producer.wait(timeout=60) == 0
    assert got.equals(table)


PRODUCER = """
import sys, pyarrow as pa, laminar_ring as lr
tx = lr.Producer(sys.argv[1], dir=sys.argv[2])
i = 0
while True:
    tx.send(pa.record_batch({"seq": pa.array(range(i * 100, i * 100 + 100), pa.int64())}))
    i += 1
    if i == 1:
        print("attached", flush=True)
"""


def check_sequence(batches, start=0):
    seq = [v for b in batches for v in b.column(0).to_pylist()]
    assert seq == list(range(start, start + len(seq))), "a gap or a repeat in the sequence"
    return len(seq)


def test_a_killed_python_producer_leaves_whole_batches_for_the_consume_sidecar(ring, tmp_path):
    name, d = ring
    for trial in range(3):
        out = tmp_path / f"out{trial}.arrows"
        lr.create(f"{name}{trial}", dir=d)
        sidecar = subprocess.Popen(
            [command(), "consume", f"{name}{trial}", "--dir", str(d), "-o", str(out), "--quiet"]
        )
        try:
            p = run_python(PRODUCER, f"{name}{trial}", d, stdout=subprocess.PIPE, text=True)
            assert p.stdout.readline().strip() == "attached"
            time.sleep(0.05 + 0.05 * trial)
            p.kill()
            p.wait()
            # 3: the producer died; everything it committed was written.
            assert sidecar.wait(timeout=60) == 3
        finally:
            sidecar.kill()
        with pa.OSFile(str(out)) as f:
            got = pa.ipc.open_stream(f).read_all()
        n = check_sequence(got.to_batches())
        assert n > 0 and n % 100 == 0


def test_a_killed_python_producer_leaves_whole_batches_then_peer_gone(ring):
    name, d = ring
    for trial in range(5):
        lr.create(f"{name}{trial}", dir=d)
        # copy: the test keeps every batch, more than the leases a ring
        # lends at once.
        with lr.Consumer(f"{name}{trial}", dir=d, copy=True) as rx:
            p = run_python(PRODUCER, f"{name}{trial}", d, stdout=subprocess.PIPE, text=True)
            assert p.stdout.readline().strip() == "attached"
            time.sleep(0.05 + 0.03 * trial)
            p.kill()
            p.wait()
            got = []
            with pytest.raises(lr.PeerGone):
                while True:
                    b = rx.recv(timeout=10)
                    assert b is not None, "a clean end after a kill"
                    got.append(b)
            n = check_sequence(got)
            assert n > 0 and n % 100 == 0


# Reads until the end of the stream, or 3 s without a batch (a consumer
# that attaches after an earlier one read the end waits for the next
# producer, as the ring promises).
CONSUMER = """
import sys, laminar_ring as lr
rx = lr.Consumer(sys.argv[1], dir=sys.argv[2])
out = open(sys.argv[3], "a")
# A consumer killed in the middle of a write may leave half a line (a
# fatal signal cuts a write between pages): end it, so that it stays apart
# from this consumer's first line (its numbers are prefixes of ones
# already seen, so they change neither check).
out.write("\\n")
out.flush()
while True:
    try:
        b = rx.recv(timeout=3)
    except TimeoutError:
        break
    if b is None:
        break
    out.write(" ".join(map(str, b.column(0).to_pylist())) + "\\n")
    out.flush()
    del b
"""


def test_a_killed_python_consumer_resumes_at_least_once(ring, tmp_path):
    name, d = ring
    total = 400_000
    lr.create(name, dir=d, slots=64, arena_bytes=1 << 20)
    log = tmp_path / "seen.txt"
    # The producer is the `laminar-ring produce` command (Rust).
    src = tmp_path / "seq.arrows"
    schema = pa.schema([("seq", pa.int64())])
    with pa.OSFile(str(src), "wb") as f, pa.ipc.new_stream(f, schema) as w:
        for i in range(0, total, 100):
            w.write_batch(pa.record_batch({"seq": pa.array(range(i, i + 100), pa.int64())}))
    feeder = subprocess.Popen([command(), "produce", name, "--dir", str(d), "-i", str(src), "--quiet"])
    kills = 0
    for trial in range(6):
        before = log.stat().st_size if log.exists() else 0
        c = run_python(CONSUMER, name, d, log)
        # Killed once it has read something, at a random moment after.
        limit = time.monotonic() + 30
        while (log.stat().st_size if log.exists() else 0) == before and c.poll() is None:
            assert time.monotonic() < limit, f"consumer {trial} read nothing"
            time.sleep(0.005)
        time.sleep(0.01 * trial)
        if c.poll() is not None:
            # It read to the end of the stream before the kill came: the
            # later trials have nothing left to interrupt.
            assert c.returncode == 0, f"consumer {trial} failed"
            break
        c.kill()
        c.wait()
        kills += 1
    assert kills >= 3, f"only {kills} consumers were killed mid-stream"
    last = run_python(CONSUMER, name, d, log)
    assert feeder.wait(timeout=120) == 0
    assert last.wait(timeout=120) == 0
    lines = [list(map(int, l.split())) for l in log.read_text().splitlines() if l.strip()]
    seen = [v for l in lines for v in l]
    # Every value at least once; in order apart from a restart's repeats.
    assert set(seen) == set(range(total))
    first = {}
    for v in seen:
        first.setdefault(v, True)
    assert sorted(first) == list(first), "values out of order"


def test_bad_input_raises_and_never_crashes(ring):
    name, d = ring
    with pytest.raises(lr.RingError):
        lr.Consumer("no/such name", dir=d)
    with pytest.raises(ValueError):
        lr.Consumer(name, dir=d, from_="middle")
    tx = lr.Producer(name, dir=d)
    with pytest.raises(TypeError, match="Arrow data"):
        tx.send(42)
    with pytest.raises(TypeError, match="Arrow stream"):
        tx.send_stream([1, 2, 3])
    tx.send(pa.record_batch({"a": pa.array([1])}))
    with pytest.raises(lr.SchemaMismatch):
        tx.send(pa.record_batch({"b": pa.array(["x"])}))
    tx.close()
    with pytest.raises(lr.Closed):
        tx.send(pa.record_batch({"a": pa.array([1])}))
    rx = lr.Consumer(name, dir=d)
    assert rx.recv(timeout=5).num_rows == 1
    assert rx.recv(timeout=5) is None
    rx.close()
    with pytest.raises(lr.Closed):
        rx.recv()
    with pytest.raises(ValueError):
        lr.Consumer(name, dir=d).recv(timeout=-1)


def test_a_failed_with_block_ends_the_stream_with_its_reason(ring):
    name, d = ring
    with pytest.raises(RuntimeError):
        with lr.Producer(name, dir=d) as tx:
            tx.send(pa.record_batch({"a": pa.array([1, 2])}))
            raise RuntimeError("the source went away")
    with lr.Consumer(name, dir=d) as rx:
        assert rx.recv(timeout=5).num_rows == 2
        with pytest.raises(lr.ProducerFailed, match="the source went away"):
            rx.recv(timeout=5)


def test_create_ls_info_rm(ring):
    name, d = ring
    lr.create(name, dir=d, slots=128, consumers=4)
    with pytest.raises(lr.RingError):
        lr.create(name, dir=d)
    assert lr.ls(dir=d) == [name]
    with lr.Producer(name, dir=d) as tx, lr.Consumer(name, dir=d, as_="dash") as rx:
        tx.send(pa.record_batch({"a": pa.array([1, 2, 3])}))
        i = lr.info(name, dir=d)
        assert i["kind"] == "arrow" and i["capacity"] == 128 and i["max_consumers"] == 4
        assert i["producer"]["alive"] and i["producer"]["pid"] == os.getpid()
        sub = [s for s in i["subscribers"] if s["name"] == "dash"][0]
        assert sub["alive"] and sub["lag"] == 2  # the schema and the batch
        # The same keys and values as `laminar-ring info --json`, less times.
        out = subprocess.run(
            [command(), "info", name, "--dir", str(d), "--json"], capture_output=True, text=True, check=True
        )
        cli = json.loads(out.stdout)

        def untimed(v):
            if isinstance(v, dict):
                return {k: untimed(x) for k, x in v.items() if k not in ("waiting_s", "created", "created_unix_s")}
            if isinstance(v, list):
                return [untimed(x) for x in v]
            return v

        cli = untimed(cli)
        for k, v in i.items():
            assert cli[k] == v, f"{k}: {v!r} here, {cli[k]!r} from the command"
        # `schema` is JSON there; Consumer.schema gives it as pyarrow's.
        missing = set(cli) - set(i) - {"lanes", "schema"}
        assert not missing, f"info lacks {missing}"
        rx.recv(timeout=5)
    lr.rm(name, dir=d)
    assert lr.ls(dir=d) == []
    with pytest.raises(lr.RingError):
        lr.info(name, dir=d)


def test_send_returns_only_once_the_batch_is_in_the_ring(ring):
    name, d = ring
    lr.create(name, dir=d, slots=4, arena_bytes=1 << 20)
    with lr.Consumer(name, dir=d, copy=True) as rx:  # attached, reading nothing yet
        p = run_python(
            """
            import sys, time, pyarrow as pa, laminar_ring as lr
            tx = lr.Producer(sys.argv[1], dir=sys.argv[2])
            sent = 0
            while True:
                try:
                    tx.send(pa.record_batch({"seq": pa.array(range(sent * 10000, sent * 10000 + 10000))}), timeout=0.3)
                except TimeoutError:
                    break
                sent += 1
            print(sent, flush=True)
            time.sleep(60)
            """,
            name,
            d,
            stdout=subprocess.PIPE,
            text=True,
        )
        sent = int(p.stdout.readline())
        p.kill()
        p.wait()
        assert sent >= 1
        got = []
        with pytest.raises(lr.PeerGone):
            while True:
                got.append(rx.recv(timeout=10))
        # Every batch send returned for, and none it timed out on.
        assert check_sequence(got) == sent * 10000


def test_a_producer_dropped_unclosed_ends_the_stream_abandoned(ring):
    name, d = ring
    with lr.Consumer(name, dir=d) as rx:
        tx = lr.Producer(name, dir=d)
        tx.send(pa.record_batch({"a": pa.array([1, 2])}))
        del tx
        gc.collect()
        assert rx.recv(timeout=5).num_rows == 2
        with pytest.raises(lr.PeerGone):
            rx.recv(timeout=5)


def test_a_forked_child_leaves_the_parents_ring_alone(ring):
    name, d = ring
    with lr.Consumer(name, dir=d) as rx, lr.Producer(name, dir=d) as tx:
        tx.send(pa.record_batch({"a": pa.array(range(1000), pa.int64())}))
        held = rx.recv(timeout=5)
        before = lr.info(name, dir=d)["subscribers"][0]["read_seq"]
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                rx.outstanding()
                code = 10  # the child must not use the parent's consumer
            except lr.RingError:
                pass
            try:
                tx.send(pa.record_batch({"a": pa.array([1], pa.int64())}))
                code = 11
            except lr.RingError:
                pass
            del held
            gc.collect()
            os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.WEXITSTATUS(status) == 0
        # The child dropped its copies: nothing was released or closed.
        assert lr.info(name, dir=d)["subscribers"][0]["read_seq"] == before
        assert lr.info(name, dir=d)["producer"]["state"] == "attached"
        tx.send(pa.record_batch({"a": pa.array([7], pa.int64())}))
        assert held.column(0).to_pylist() == list(range(1000))
        assert rx.recv(timeout=5).column(0).to_pylist() == [7]


def test_close_from_another_thread_ends_a_waiting_recv(ring):
    name, d = ring
    rx = lr.Consumer(name, dir=d)
    caught = []

    def wait():
        try:
            rx.recv()
        except lr.Closed as e:
            caught.append(e)

    t = threading.Thread(target=wait)
    t.start()
    time.sleep(0.2)
    rx.close()
    t.join(timeout=5)
    assert not t.is_alive() and caught


def test_two_python_producers_and_the_command_feed_one_consumer(ring, tmp_path):
    name, d = ring
    src = tmp_path / "c.arrows"
    schema = pa.schema([("who", pa.string()), ("seq", pa.int64())])

    def rows(who, n):
        return pa.record_batch({"who": pa.array([who] * n), "seq": pa.array(range(n), pa.int64())}, schema=schema)

    with pa.OSFile(str(src), "wb") as f, pa.ipc.new_stream(f, schema) as w:
        w.write_batch(rows("cmd", 300))
    with lr.Consumer(name, dir=d) as rx:
        a = lr.Producer(name, dir=d)
        b = lr.Producer(name, dir=d)  # joins on a lane of its own
        a.send(rows("a", 100))
        b.send(rows("b", 200))
        cmd = subprocess.Popen([command(), "produce", name, "--dir", str(d), "-i", str(src), "--quiet"])
        assert cmd.wait(timeout=60) == 0
        a.close()
        b.close()
        got = pa.Table.from_batches(list(rx))
    counts = {w: got.filter(pa.compute.equal(got["who"], w)).num_rows for w in ("a", "b", "cmd")}
    assert counts == {"a": 100, "b": 200, "cmd": 300}
    assert lr.ls(dir=d) == [name]
    # The batches held keep their lanes' mappings (and consumer roles).
    del got
    gc.collect()
    lr.rm(name, dir=d)
    assert [f for f in os.listdir(d) if f.startswith(name)] == []


def test_ls_and_rm_know_rings_from_other_files(ring):
    name, d = ring
    (d / "notes.txt").write_text("not a ring")
    lr.create(name, dir=d)
    assert lr.ls(dir=d) == [name]
    with pytest.raises(lr.RingError, match="not a ring"):
        lr.rm("notes.txt", dir=d)
    assert (d / "notes.txt").exists()
    with lr.Consumer(name, dir=d):
        with pytest.raises(lr.RingError, match="force=True"):
            lr.rm(name, dir=d)
        lr.rm(name, dir=d, force=True)
    assert lr.ls(dir=d) == []


def test_a_stream_that_raises_comes_through_as_it_is(ring):
    name, d = ring
    schema = pa.schema([("a", pa.int64())])

    def gen():
        yield pa.record_batch({"a": pa.array([1, 2])}, schema=schema)
        raise ValueError("the source broke")

    with lr.Consumer(name, dir=d) as rx, lr.Producer(name, dir=d) as tx:
        with pytest.raises(ValueError, match="the source broke"):
            tx.send(pa.RecordBatchReader.from_batches(schema, gen()))
        assert rx.recv(timeout=5).num_rows == 2


def test_a_batch_larger_than_the_ring_goes_in_parts_and_far_timeouts_mean_none(ring):
    name, d = ring
    lr.create(name, dir=d, arena_bytes=1 << 20)
    big = pa.record_batch({"a": pa.array(range(400_000), pa.int64())})  # 3.2 MB
    with lr.Consumer(name, dir=d, copy=True) as rx, lr.Producer(name, dir=d) as tx:
        t = threading.Thread(target=lambda: (tx.send(big, timeout=1e300), tx.close(timeout=float("inf"))))
        t.start()
        got = []
        while (b := rx.recv(timeout=1e300)) is not None:
            got.append(b)
        t.join()
    assert pa.Table.from_batches(got).column(0).to_pylist() == list(range(400_000))
    assert len(got) > 1


def test_the_ring_directory_comes_from_laminar_ring_dir_as_for_the_command(ring, monkeypatch):
    """Without `dir`, Python looks where the command does: in
    `$LAMINAR_RING_DIR` when it is set."""
    _, d = ring
    name = f"envdir-{os.getpid()}"
    monkeypatch.setenv("LAMINAR_RING_DIR", str(d))
    with lr.Producer(name) as tx:
        tx.send(every_type(5))
    # The command, told nothing but the variable, sees the ring there.
    env = dict(os.environ, LAMINAR_RING_DIR=str(d))
    info = subprocess.run(
        [command(), "info", name, "--json"], capture_output=True, text=True, check=True, env=env
    )
    assert json.loads(info.stdout)["name"] == name
    assert name in lr.ls()
    with lr.Consumer(name) as rx:
        assert rx.recv(timeout=10).equals(every_type(5))
    lr.rm(name)
    assert not (d / name).exists()
    monkeypatch.delenv("LAMINAR_RING_DIR")
    assert name not in lr.ls()
