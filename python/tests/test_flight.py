"""`laminar-ring flight serve` seen from pyarrow.flight, a client written
independently of this project: list, describe, read and write rings over
loopback, with a bearer token and with TLS."""

import json
import shutil
import subprocess
import threading
import time

import pyarrow as pa
import pyarrow.flight as flight
import pyarrow.ipc
import pytest

from test_ring import command, every_type


class Server:
    """A `flight serve` process over the rings of `dir`."""

    def __init__(self, dir, *extra):
        self.proc = subprocess.Popen(
            [command(), "flight", "serve", "--listen", "127.0.0.1:0", "--dir", str(dir), *extra],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        line = self.proc.stdout.readline().strip()
        if not line.startswith("listening on "):
            self.proc.kill()
            raise AssertionError(f"unexpected first line {line!r}: {self.proc.stderr.read()}")
        self.url = line[len("listening on "):]
        self.port = int(self.url.rsplit(":", 1)[1])

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise


@pytest.fixture
def server(tmp_path):
    s = Server(tmp_path)
    yield s, tmp_path
    s.stop()


def produce(dir, ring, table, *extra):
    path = dir / f"{ring}.arrows"
    with pa.OSFile(str(path), "wb") as f, pa.ipc.new_stream(f, table.schema) as w:
        w.write_table(table, max_chunksize=100)
    subprocess.run(
        [command(), "produce", ring, "-i", str(path), "--dir", str(dir), *extra],
        check=True,
        capture_output=True,
        timeout=60,
    )


def consume(dir, ring, *extra):
    out = dir / f"{ring}.out.arrows"
    r = subprocess.run(
        [command(), "consume", ring, "-o", str(out), "--dir", str(dir), *extra],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    return pa.ipc.open_stream(str(out)).read_all()


def table(rows=700, seed=0):
    return pa.Table.from_batches([every_type(rows, seed)])


def test_a_client_lists_describes_and_reads_a_ring(server):
    s, dir = server
    t = table()
    produce(dir, "trades", t)
    client = flight.connect(s.url)
    listed = list(client.list_flights())
    assert [f.descriptor.path for f in listed] == [[b"trades"]]
    assert listed[0].schema == t.schema
    info = client.get_flight_info(flight.FlightDescriptor.for_path("trades"))
    assert info.schema == t.schema
    assert [e.ticket.ticket for e in info.endpoints] == [b"trades"]
    # The info's app_metadata is the ring's `info --json`.
    meta = json.loads(info.app_metadata)
    assert meta["name"] == "trades" and meta["kind"] == "arrow"
    assert client.get_schema(flight.FlightDescriptor.for_path("trades")).schema == t.schema
    got = client.do_get(info.endpoints[0].ticket).read_all()
    assert got.equals(t)


def test_a_client_writes_a_ring_that_consume_reads(server):
    s, dir = server
    t = table(1000, seed=5)
    client = flight.connect(s.url)
    writer, reader = client.do_put(flight.FlightDescriptor.for_path("uploads"), t.schema)
    writer.write_table(t, max_chunksize=64)
    writer.close()
    assert consume(dir, "uploads").equals(t)


def test_a_session_stream_that_ends_without_saying_how_is_not_a_clean_end(tmp_path):
    """A `DoPut` under a session (the path `flight push` uses) whose stream
    ends without its closing message is a pusher that went away mid-call:
    its producer waits out the resume grace, then the ring's stream ends as
    a dead producer's (consume exits 3), never as a whole one."""
    s = Server(tmp_path, "--resume-grace", "1s")
    try:
        t = table(300, seed=9)
        client = flight.connect(s.url)
        path = flight.FlightDescriptor.for_path("sessioned", "session=test-1")
        writer, _ = client.do_put(path, t.schema)
        # A session's batches carry their numbers, as `push` sends them.
        for seq, b in enumerate(t.to_batches(max_chunksize=100), start=1):
            writer.write_with_metadata(b, pa.py_buffer(seq.to_bytes(8, "little")))
        writer.close()
        out = tmp_path / "sessioned.out.arrows"
        r = subprocess.run(
            [command(), "consume", "sessioned", "-o", str(out), "--dir", str(tmp_path)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert r.returncode == 3, r.stderr
        assert pa.ipc.open_stream(str(out)).read_all().equals(t)
    finally:
        s.stop()


def test_each_subscriber_of_a_ticket_reads_every_batch(server):
    s, dir = server
    t = table(300, seed=9)
    # Two names subscribe before the stream: both read all of it.
    subprocess.run([command(), "create", "multi", "--dir", str(dir)], check=True, timeout=30)
    for name in ["archiver", "checker"]:
        subprocess.run(
            [command(), "consume", "multi", "--as", name, "-o", "/dev/null", "--dir", str(dir), "--timeout", "50ms"],
            capture_output=True,
            timeout=30,
        )
    produce(dir, "multi", t)
    client = flight.connect(s.url)
    assert client.do_get(flight.Ticket(b"multi\narchiver")).read_all().equals(t)
    assert client.do_get(flight.Ticket(b"multi\nchecker")).read_all().equals(t)


def test_a_missing_ring_is_not_found(server):
    s, _ = server
    client = flight.connect(s.url)
    with pytest.raises(KeyError, match="no ring 'nope' on this server"):
        client.do_get(flight.Ticket(b"nope")).read_all()
    with pytest.raises(KeyError, match="no ring 'nope' on this server"):
        client.get_flight_info(flight.FlightDescriptor.for_path("nope"))
    with pytest.raises(pa.ArrowInvalid, match="bad ring name"):
        client.do_get(flight.Ticket(b"../etc")).read_all()


def test_a_wrong_or_missing_token_is_refused(tmp_path):
    (tmp_path / "token").write_text("let-me-in\n")
    s = Server(tmp_path, "--token-file", str(tmp_path / "token"))
    try:
        produce(tmp_path, "r", table(10))
        client = flight.connect(s.url)
        with pytest.raises(flight.FlightUnauthenticatedError, match="needs `authorization"):
            list(client.list_flights())
        wrong = flight.FlightCallOptions(headers=[(b"authorization", b"Bearer let-me-out")])
        with pytest.raises(flight.FlightUnauthenticatedError, match="wrong bearer token"):
            client.do_get(flight.Ticket(b"r"), options=wrong).read_all()
        right = flight.FlightCallOptions(headers=[(b"authorization", b"Bearer let-me-in")])
        assert client.do_get(flight.Ticket(b"r"), options=right).read_all().equals(table(10))
    finally:
        s.stop()


def test_tls(tmp_path):
    assert shutil.which("openssl"), "the openssl command makes the test's certificate"
    # A CA, and the server's certificate signed by it (rustls refuses a CA
    # certificate presented by a server).
    ca, ca_key = tmp_path / "ca.pem", tmp_path / "ca.key"
    cert, key, csr, ext = (tmp_path / n for n in ["cert.pem", "key.pem", "cert.csr", "ext.cnf"])
    ext.write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    for args in [
        ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=laminar test CA",
         "-keyout", ca_key, "-out", ca],
        ["req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost", "-keyout", key, "-out", csr],
        ["x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial", "-days", "1",
         "-extfile", ext, "-out", cert],
    ]:
        subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True, timeout=60)
    s = Server(tmp_path, "--tls-cert", str(cert), "--tls-key", str(key))
    try:
        assert s.url.startswith("grpc+tls://")
        produce(tmp_path, "secure", table(50))
        client = flight.connect(f"grpc+tls://localhost:{s.port}", tls_root_certs=ca.read_bytes())
        assert client.do_get(flight.Ticket(b"secure")).read_all().equals(table(50))
        # Not trusted without the certificate.
        with pytest.raises(flight.FlightUnavailableError):
            flight.connect(f"grpc+tls://localhost:{s.port}").do_get(flight.Ticket(b"secure")).read_all()
        # The command's own client, trusting the same certificate.
        produce(tmp_path, "pulled", table(80, seed=3))
        other = tmp_path / "other"
        other.mkdir()
        r = subprocess.run(
            [command(), "flight", "pull", f"grpc+tls://localhost:{s.port}", "pulled", "--tls-ca", str(ca), "--dir", str(other)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert r.returncode == 0, r.stderr
        assert consume(other, "pulled").equals(table(80, seed=3))
    finally:
        s.stop()


def test_a_client_metadata_on_its_batches_is_its_own(server):
    # Plain DoPut clients may put anything in app_metadata: every batch lands.
    s, dir = server
    t = table(500, seed=2)
    client = flight.connect(s.url)
    writer, _ = client.do_put(flight.FlightDescriptor.for_path("tagged"), t.schema)
    for b in t.to_batches(max_chunksize=50):
        writer.write_with_metadata(b, pa.py_buffer(b"\x01" * 8))
    writer.close()
    assert consume(dir, "tagged").equals(t)


def test_the_server_stops_on_sigterm_with_a_reader_waiting(tmp_path):
    s = Server(tmp_path)
    subprocess.run([command(), "create", "waiting", "--dir", str(tmp_path)], check=True, timeout=30)
    client = flight.connect(s.url)
    # A reader of a ring whose stream has not begun waits in the server
    # (pyarrow's do_get waits for the schema).
    failed = []

    def read():
        try:
            client.do_get(flight.Ticket(b"waiting")).read_all()
        except flight.FlightError as e:
            failed.append(e)

    t = threading.Thread(target=read)
    t.start()
    time.sleep(0.5)
    assert t.is_alive()
    start = time.monotonic()
    s.proc.terminate()
    assert s.proc.wait(timeout=15) == 0
    assert time.monotonic() - start < 10
    t.join(timeout=30)
    assert not t.is_alive() and len(failed) == 1, failed
