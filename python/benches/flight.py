"""A stream across "hosts" (separate ring directories, every end its own
process) through Arrow Flight on loopback, beside the local ring and plain
Arrow IPC over TCP loopback, interleaved:

- local ring: a Rust producer (`examples/arrow_source.rs`, one batch built
  once and sent again and again) into a ring, read by
  `laminar_ring.Consumer` (zero-copy);
- ring -> Flight -> ring, one hop over loopback, both ways: the same
  producer into ring `src` of the directory `flight serve` serves,
  `laminar-ring flight pull` into ring `dst` of another directory; or into
  ring `src` of a directory `laminar-ring flight push` sends from, to ring
  `dst` of the served directory; `dst` read by `laminar_ring.Consumer`;
- TCP: a pyarrow writer process (`pyarrow.ipc.new_stream` over a TCP
  socket on 127.0.0.1, 4 MiB socket buffers), read with
  `pyarrow.ipc.open_stream` in this process.

Throughput: GB/s of Arrow array data of 65,536-row batches, from the first
batch received to the last. Latency: one-row batches sent one every
millisecond by a Python writer (`laminar_ring.Producer`, or pyarrow over
TCP) carrying their send time; the reader's receive time minus it
(one way, one clock), p50 and p99. Medians over rounds; ratios to TCP.

    cargo build --release --examples
    python3 python/benches/flight.py [--rounds 5] [--batches 400]
"""

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import pyarrow as pa
import pyarrow.ipc

import laminar_ring as lr

from receive import batch


class Chain:
    """One hop through Flight, from ring `src` in directory `write_dir` to
    ring `dst` in directory `read_dir`: with `pull`, `flight serve` over
    `src` and `flight pull src` into `dst` on the reading side; with `push`,
    `flight push src` to a `flight serve` over `dst`."""

    def __init__(self, binary, root, how):
        a, s, b = (os.path.join(root, n) for n in ["a", "s", "b"])
        for d in [a, s, b]:
            os.makedirs(d, exist_ok=True)
        served = s
        self.write_dir, self.read_dir = (s, b) if how == "pull" else (a, s)
        for ring, d in [("src", self.write_dir), ("dst", self.read_dir)]:
            subprocess.run([binary, "rm", ring, "--dir", d, "--force"], capture_output=True)
            subprocess.run([binary, "create", ring, "--dir", d], check=True, capture_output=True)
        self.server = subprocess.Popen(
            [binary, "flight", "serve", "--listen", "127.0.0.1:0", "--dir", served],
            stdout=subprocess.PIPE, text=True,
        )
        url = self.server.stdout.readline().strip().removeprefix("listening on ")
        quiet = dict(stderr=subprocess.DEVNULL)
        if how == "pull":
            cmd = [binary, "flight", "pull", url, "src", "--into", "dst", "--dir", self.read_dir]
        else:
            cmd = [binary, "flight", "push", "src", url, "--into", "dst", "--dir", self.write_dir]
        self.bridge = subprocess.Popen(cmd, **quiet)

    def close(self):
        assert self.bridge.wait(timeout=120) == 0
        self.server.terminate()
        self.server.wait(timeout=30)


def receive(rx, n):
    """Reads `n` batches and the end: seconds from the first to the last,
    scaled to `n` batches."""
    got, start = 0, None
    while True:
        b = rx.recv(timeout=120)
        if b is None:
            break
        if start is None:
            start = time.perf_counter()
        got += 1
        del b
    secs = time.perf_counter() - start
    assert got == n, f"{got} of {n} batches"
    return secs * n / (n - 1)


def ring_run(source, rows, root, n):
    d = os.path.join(root, "local")
    os.makedirs(d, exist_ok=True)
    try:
        lr.rm("bench", dir=d, force=True)
    except lr.RingError:
        pass
    rx = lr.Consumer("bench", dir=d)
    p = subprocess.Popen([source, "--dir", d, "bench", str(n), str(rows)])
    secs = receive(rx, n)
    assert p.wait(timeout=60) == 0
    rx.close()
    return secs


def flight_run(binary, source, rows, root, n, how):
    chain = Chain(binary, os.path.join(root, "flight-" + how), how)
    rx = lr.Consumer("dst", dir=chain.read_dir)
    p = subprocess.Popen([source, "--dir", chain.write_dir, "src", str(n), str(rows)])
    secs = receive(rx, n)
    assert p.wait(timeout=60) == 0
    rx.close()
    chain.close()
    return secs


TCP_WRITER = """
import socket, sys, time, pyarrow as pa, pyarrow.ipc
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
if sys.argv[2] == "latency":
    f = s.makefile("wb", buffering=0)
    schema = pa.schema([("sent_ns", pa.int64())])
    with pa.ipc.new_stream(f, schema) as w:
        for _ in range(int(sys.argv[3])):
            w.write_batch(pa.record_batch([pa.array([time.time_ns()], pa.int64())], schema=schema))
            time.sleep(0.001)
else:
    src = pa.ipc.open_stream(pa.memory_map(sys.argv[2]))
    f = s.makefile("wb", buffering=1 << 20)
    with pa.ipc.new_stream(f, src.schema) as w:
        for b in src:
            w.write_batch(b)
    f.close()
s.close()
"""


def tcp_reader(mode, *args):
    srv = socket.create_server(("127.0.0.1", 0))
    p = subprocess.Popen([sys.executable, "-c", TCP_WRITER, str(srv.getsockname()[1]), mode, *args])
    conn, _ = srv.accept()
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    return p, srv, conn, pa.ipc.open_stream(conn.makefile("rb", buffering=0 if mode == "latency" else 1 << 20))


def tcp_run(src, n):
    p, srv, conn, reader = tcp_reader(src)
    got, start = 0, None
    for b in reader:
        if start is None:
            start = time.perf_counter()
        got += 1
    secs = time.perf_counter() - start
    assert p.wait(timeout=60) == 0
    conn.close()
    srv.close()
    assert got == n
    return secs * n / (n - 1)


RING_WRITER = """
import sys, time, pyarrow as pa, laminar_ring as lr
schema = pa.schema([("sent_ns", pa.int64())])
with lr.Producer(sys.argv[1], dir=sys.argv[2]) as tx:
    for _ in range(int(sys.argv[3])):
        tx.send(pa.record_batch([pa.array([time.time_ns()], pa.int64())], schema=schema))
        time.sleep(0.001)
"""


def latencies(batches):
    """Receive time minus send time of each one-row batch, in µs."""
    out = []
    for b in batches:
        now = time.time_ns()
        out.append((now - b.column(0)[0].as_py()) / 1e3)
    return out


def ring_batches(rx):
    while (b := rx.recv(timeout=120)) is not None:
        yield b


def latency_run(path, binary, root, n):
    """p50 and p99 one-way latency of one-row batches, µs."""
    if path == "tcp":
        p, srv, conn, reader = tcp_reader("latency", str(n))
        lat = latencies(reader)
        assert p.wait(timeout=60) == 0
        conn.close()
        srv.close()
    else:
        if path == "local":
            d = os.path.join(root, "lat-local")
            os.makedirs(d, exist_ok=True)
            try:
                lr.rm("lat", dir=d, force=True)
            except lr.RingError:
                pass
            write_dir, read_dir, write_ring, read_ring, chain = d, d, "lat", "lat", None
        else:
            chain = Chain(binary, os.path.join(root, "lat-" + path), path)
            write_dir, read_dir, write_ring, read_ring = chain.write_dir, chain.read_dir, "src", "dst"
        rx = lr.Consumer(read_ring, dir=read_dir)
        p = subprocess.Popen([sys.executable, "-c", RING_WRITER, write_ring, write_dir, str(n)])
        lat = latencies(ring_batches(rx))
        assert p.wait(timeout=60) == 0
        rx.close()
        if chain:
            chain.close()
    assert len(lat) == n, f"{len(lat)} of {n}"
    lat.sort()
    return lat[len(lat) // 2], lat[len(lat) * 99 // 100]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--batches", type=int, default=400)
    ap.add_argument("--rows", type=int, default=65536)
    ap.add_argument("--pings", type=int, default=2000)
    ap.add_argument("--bin", default="target/release/laminar-ring")
    ap.add_argument("--source", default="target/release/examples/arrow_source")
    a = ap.parse_args()
    binary = os.path.abspath(a.bin)
    source = os.path.abspath(a.source)
    b = batch(a.rows)
    data = sum(buf.size for col in b.columns for buf in col.buffers() if buf is not None)
    with tempfile.TemporaryDirectory(dir="/dev/shm" if os.path.isdir("/dev/shm") else None) as root:
        src = os.path.join(root, "in.arrows")
        with pa.OSFile(src, "wb") as f, pa.ipc.new_stream(f, b.schema) as w:
            for _ in range(a.batches):
                w.write_batch(b)
        paths = {
            "local ring": lambda: ring_run(source, a.rows, root, a.batches),
            "ring -> flight serve -> flight pull -> ring": lambda: flight_run(binary, source, a.rows, root, a.batches, "pull"),
            "ring -> flight push -> flight serve -> ring": lambda: flight_run(binary, source, a.rows, root, a.batches, "push"),
            "Arrow IPC over TCP (pyarrow)": lambda: tcp_run(src, a.batches),
        }
        lat_paths = dict(zip(paths, ["local", "pull", "push", "tcp"]))
        times = {k: [] for k in paths}
        lats = {k: [] for k in paths}
        for r in range(a.rounds):
            order = list(paths) if r % 2 == 0 else list(reversed(paths))
            for k in order:
                times[k].append(paths[k]())
                lats[k].append(latency_run(lat_paths[k], binary, root, a.pings))
        print(f"{a.rounds} rounds; throughput: {a.batches} batches of {a.rows} rows (Int64, Float64, Utf8), "
              f"{data / 1e6:.2f} MB of Arrow data each; latency: {a.pings} one-row batches, one per ms; medians\n")
        print("| path | GB/s | vs TCP | one-row p50 (µs) | p99 (µs) |")
        print("|---|---:|---:|---:|---:|")
        tcp = statistics.median(times["Arrow IPC over TCP (pyarrow)"])
        for k, v in times.items():
            m = statistics.median(v)
            p50 = statistics.median(x[0] for x in lats[k])
            p99 = statistics.median(x[1] for x in lats[k])
            print(f"| {k} | {data * a.batches / m / 1e9:.2f} | {tcp / m:.2f}x | {p50:.0f} | {p99:.0f} |")


if __name__ == "__main__":
    main()
