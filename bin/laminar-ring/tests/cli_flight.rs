//! `flight serve`, `flight push`, `flight pull`: streams between "hosts"
//! (separate directories of rings, each end its own process) over Flight
//! on loopback, with the server killed and restarted under a puller.

mod cli_support;

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;
use arrow_array::{Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};
use cli_support::{Dir, ipc_stream, rich_batches, rows, run_limited};

/// A `flight serve` process, killed when dropped.
struct Server {
    child: Child,
    url: String,
}

impl Server {
    /// Starts `flight serve` on `listen` (port 0: a free one) over the
    /// rings of `d`, and waits for its `listening on` line.
    fn start(d: &Dir, listen: &str, extra: &[&str]) -> Self {
        let mut args = vec!["flight", "serve", "--listen", listen];
        args.extend_from_slice(extra);
        let mut child = d
            .cmd(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let url = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
            .to_owned();
        Self { child, url }
    }

    fn port(&self) -> &str {
        self.url.rsplit(':').next().unwrap()
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A child process, killed if a failed assertion leaves it running.
struct Kid(Option<Child>);

impl Drop for Kid {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn spawn(d: &Dir, args: &[&str]) -> Kid {
    Kid(Some(
        d.cmd(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    ))
}

/// Waits for `kid` (killing it after `limit`): its exit code and stderr.
fn finish(mut kid: Kid, limit: Duration) -> (Option<i32>, String) {
    let child = kid.0.take().expect("not finished yet");
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(out) => {
            let out = out.unwrap();
            (
                out.status.code(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        }
        Err(_) => {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            panic!("process {pid} did not exit within {limit:?}");
        }
    }
}

fn wait_until(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn read_stream(path: &std::path::Path) -> Vec<RecordBatch> {
    arrow_ipc::reader::StreamReader::try_new(File::open(path).unwrap(), None)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// `produce RING -i -` in `d`, fed `batches` and then left waiting for
/// more (the stream's end marker is never written): a producer attached
/// with its batches committed, to be killed.
fn open_producer(d: &Dir, ring: &str, batches: &[RecordBatch]) -> Kid {
    use std::io::Write;
    let mut child = d
        .cmd(&["produce", ring, "-i", "-", "--batch-rows", "100"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let bytes = ipc_stream(batches);
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(&bytes[..bytes.len() - 8]).unwrap();
    stdin.flush().unwrap();
    // Kept open for the child's life: end of input would end the stream.
    std::mem::forget(stdin);
    Kid(Some(child))
}

/// Messages published into `ring` so far (0 while it does not exist).
fn write_seq(d: &Dir, ring: &str) -> u64 {
    let r = d.run(&["info", ring, "--json"]);
    if r.code != Some(0) {
        return 0;
    }
    serde_json::from_slice::<serde_json::Value>(&r.stdout).unwrap()["write_seq"]
        .as_u64()
        .unwrap()
}

/// Batches of an `id` column counting from 0 and a text column made from
/// it, `rows` each.
fn counted(batches: usize, rows: usize) -> Vec<RecordBatch> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("text", DataType::Utf8, false),
    ]));
    (0..batches)
        .map(|b| {
            let ids: Vec<i64> = ((b * rows) as i64..((b + 1) * rows) as i64).collect();
            let text: Vec<String> = ids.iter().map(|i| format!("row {i}")).collect();
            RecordBatch::try_new(
                schema.clone(),
                vec![
                    Arc::new(Int64Array::from(ids)),
                    Arc::new(StringArray::from(text)),
                ],
            )
            .unwrap()
        })
        .collect()
}

/// Every id and its text, in the order received.
fn ids_of(batches: &[RecordBatch]) -> Vec<i64> {
    let mut out = Vec::new();
    for b in batches {
        let ids = b.column(0).as_primitive::<Int64Type>();
        let text = b.column(1).as_string::<i32>();
        for i in 0..b.num_rows() {
            assert_eq!(
                text.value(i),
                format!("row {}", ids.value(i)),
                "a row corrupted"
            );
            out.push(ids.value(i));
        }
    }
    out
}

#[test]
fn a_file_crosses_hosts_through_push_serve_and_pull_unchanged() {
    let (sender, server_host, receiver) = (
        Dir::new("flight-sender"),
        Dir::new("flight-server"),
        Dir::new("flight-receiver"),
    );
    // Every type the command carries, dictionaries and unions included.
    let input = rich_batches(40, 300, true);
    std::fs::write(sender.path("in.arrows"), ipc_stream(&input)).unwrap();
    let server = Server::start(&server_host, "127.0.0.1:0", &[]);
    let consume = spawn(
        &receiver,
        &["consume", "dst", "-o", &receiver.s("out.arrows")],
    );
    let push = spawn(
        &sender,
        &["flight", "push", "src", &server.url, "--into", "mid"],
    );
    sender
        .run(&[
            "produce",
            "src",
            "-i",
            &sender.s("in.arrows"),
            "--batch-rows",
            "100",
        ])
        .assert_ok();
    // The server makes `mid` at the first DoPut; pull reads it from there.
    wait_until("the pushed ring", Duration::from_secs(30), || {
        server_host.path("mid").exists()
    });
    let pull = spawn(
        &receiver,
        &["flight", "pull", &server.url, "mid", "--into", "dst"],
    );
    for (what, child) in [("push", push), ("pull", pull), ("consume", consume)] {
        let (code, err) = finish(child, Duration::from_secs(60));
        assert_eq!(code, Some(0), "{what}: {err}");
        assert!(!err.contains("panicked"), "{what}: {err}");
    }
    let out = read_stream(&receiver.path("out.arrows"));
    assert_eq!(rows(&out), rows(&input));
}

#[test]
fn the_puller_resumes_when_the_server_is_killed_and_restarted() {
    let (server_host, receiver) = (Dir::new("flight-kill-server"), Dir::new("flight-kill-recv"));
    let n_batches = 400;
    let input = counted(n_batches, 500);
    std::fs::write(server_host.path("in.arrows"), ipc_stream(&input)).unwrap();
    // A small ring: the producer waits for the server's reads, so the
    // stream is under way when the server dies.
    let produce = spawn(
        &server_host,
        &[
            "produce",
            "feed",
            "-i",
            &server_host.s("in.arrows"),
            "--batch-rows",
            "500",
            "--slots",
            "8",
            "--arena",
            "1MiB",
        ],
    );
    wait_until("the ring fed", Duration::from_secs(30), || {
        server_host.path("feed").exists()
    });
    let mut server = Server::start(&server_host, "127.0.0.1:0", &[]);
    let port = server.port().to_owned();
    let consume = spawn(
        &receiver,
        &["consume", "dst", "-o", &receiver.s("out.arrows")],
    );
    let pull = spawn(
        &receiver,
        &[
            "flight",
            "pull",
            &server.url,
            "feed",
            "--into",
            "dst",
            "--retry",
        ],
    );
    for kill in 1..=3u64 {
        wait_until(
            "batches through the server",
            Duration::from_secs(60),
            || write_seq(&receiver, "dst") >= kill * 40,
        );
        server.kill();
        std::thread::sleep(Duration::from_millis(300));
        server = Server::start(&server_host, &format!("127.0.0.1:{port}"), &[]);
    }
    let (code, err) = finish(pull, Duration::from_secs(120));
    assert_eq!(code, Some(0), "pull: {err}");
    assert!(err.contains("again in"), "the puller reconnected: {err}");
    let (code, err) = finish(consume, Duration::from_secs(60));
    assert_eq!(code, Some(0), "consume: {err}");
    let (code, err) = finish(produce, Duration::from_secs(60));
    assert_eq!(code, Some(0), "produce: {err}");
    // At-least-once: every row, in order; after a restart the rows the
    // dead server had sent but not released may come again.
    let ids = ids_of(&read_stream(&receiver.path("out.arrows")));
    let expected = (n_batches * 500) as i64;
    let mut next = 0i64;
    for (k, &id) in ids.iter().enumerate() {
        assert!(
            id <= next,
            "row {id} skipped ahead of {next} at {k}: a row was lost"
        );
        next = next.max(id + 1);
    }
    assert_eq!(next, expected, "every row arrived");
    assert!(
        ids.len() as i64 - expected <= 3 * 64 * 500,
        "repeats bounded by what was unacknowledged: {} rows for {expected}",
        ids.len()
    );
}

#[test]
fn a_wrong_token_is_refused_and_a_missing_ring_is_not_found() {
    let (server_host, client) = (
        Dir::new("flight-auth-server"),
        Dir::new("flight-auth-client"),
    );
    std::fs::write(server_host.path("token"), "s3cret\n").unwrap();
    std::fs::write(client.path("wrong"), "guess").unwrap();
    std::fs::write(client.path("right"), "s3cret").unwrap();
    // A host name listens on its address.
    let server = Server::start(
        &server_host,
        "localhost:0",
        &["--token-file", &server_host.s("token")],
    );
    assert!(
        server.url.starts_with("grpc://127.0.0.1:"),
        "{}",
        server.url
    );
    let r = run_limited(
        server_host.cmd(&["flight", "serve", "--listen", "localhost"]),
        None,
        Duration::from_secs(30),
    );
    assert_eq!(r.code, Some(2), "{}", r.stderr);
    assert!(
        r.stderr.contains("not an address to listen on"),
        "{}",
        r.stderr
    );
    let help = run_limited(
        server_host.cmd(&["flight", "serve", "--help"]),
        None,
        Duration::from_secs(30),
    );
    assert!(
        help.stdout
            .starts_with(b"Serve the rings of --dir over Arrow Flight"),
        "{}",
        String::from_utf8_lossy(&help.stdout)
    );
    let pull = |extra: &[&str]| {
        let mut args = vec!["flight", "pull", &server.url, "feed"];
        args.extend_from_slice(extra);
        run_limited(client.cmd(&args), None, Duration::from_secs(30))
    };
    pull(&[]).assert_fails(1, "needs `authorization: Bearer TOKEN`");
    pull(&["--token-file", &client.s("wrong")]).assert_fails(1, "wrong bearer token");
    pull(&["--token-file", &client.s("right")]).assert_fails(1, "no ring 'feed' on this server");
    // A refused call is not retried: --retry is for lost connections.
    pull(&["--token-file", &client.s("wrong"), "--retry"]).assert_fails(1, "wrong bearer token");
    // Nothing listens: one line, and no local ring made.
    let r = run_limited(
        client.cmd(&["flight", "pull", "grpc://127.0.0.1:1", "feed"]),
        None,
        Duration::from_secs(30),
    );
    r.assert_fails(1, "cannot connect");
    assert!(!client.path("feed").exists());
    // A usage error (exit 2) before anything is reached.
    let r = run_limited(
        client.cmd(&["flight", "pull", "http://x:1", "feed"]),
        None,
        Duration::from_secs(30),
    );
    assert_eq!(r.code, Some(2), "{}", r.stderr);
    assert!(r.stderr.contains("not a Flight location"), "{}", r.stderr);
    // With --retry either side may start first: the ring is waited for.
    let pull = spawn(
        &client,
        &[
            "flight",
            "pull",
            &server.url,
            "later",
            "--retry",
            "--token-file",
            &client.s("right"),
        ],
    );
    std::thread::sleep(Duration::from_millis(500));
    let input = counted(3, 10);
    std::fs::write(server_host.path("in.arrows"), ipc_stream(&input)).unwrap();
    server_host
        .run(&["produce", "later", "-i", &server_host.s("in.arrows")])
        .assert_ok();
    let (code, err) = finish(pull, Duration::from_secs(60));
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("no ring 'later' on this server"), "{err}");
    client
        .run(&["consume", "later", "-o", &client.s("later.arrows")])
        .assert_ok();
    assert_eq!(
        ids_of(&read_stream(&client.path("later.arrows"))),
        (0..30).collect::<Vec<i64>>()
    );
}

#[test]
fn a_dead_producer_ends_the_remote_stream_as_dead() {
    let (sender, server_host, receiver) = (
        Dir::new("flight-dead-sender"),
        Dir::new("flight-dead-server"),
        Dir::new("flight-dead-recv"),
    );
    let server = Server::start(&server_host, "127.0.0.1:0", &[]);
    // A producer fed through a pipe, killed after its first batches.
    let produce = open_producer(&sender, "src", &counted(10, 100));
    let push = spawn(
        &sender,
        &["flight", "push", "src", &server.url, "--into", "mid"],
    );
    wait_until("the pushed ring", Duration::from_secs(30), || {
        server_host.path("mid").exists()
    });
    let pull = spawn(
        &receiver,
        &["flight", "pull", &server.url, "mid", "--into", "dst"],
    );
    let consume = spawn(
        &receiver,
        &["consume", "dst", "-o", &receiver.s("out.arrows")],
    );
    // The schema message and the ten batches.
    wait_until("rows at the receiver", Duration::from_secs(30), || {
        write_seq(&receiver, "dst") >= 11
    });
    drop(produce);
    for (what, child) in [("push", push), ("pull", pull), ("consume", consume)] {
        let (code, err) = finish(child, Duration::from_secs(60));
        assert_eq!(code, Some(3), "{what} exits 3 for a dead producer: {err}");
        assert!(err.contains("died"), "{what}: {err}");
    }
    assert_eq!(
        ids_of(&read_stream(&receiver.path("out.arrows"))),
        (0..1000).collect::<Vec<i64>>()
    );
}

/// A TCP proxy on loopback to `target` whose connections can be cut while
/// it keeps accepting new ones: a network that drops, with both ends alive.
struct Proxy {
    port: u16,
    live: Arc<std::sync::Mutex<Vec<std::net::TcpStream>>>,
}

impl Proxy {
    fn start(target: &str) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let target = target.trim_start_matches("grpc://").to_owned();
        let live: Arc<std::sync::Mutex<Vec<std::net::TcpStream>>> = Arc::default();
        let conns = live.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let Ok(server) = std::net::TcpStream::connect(&target) else {
                    continue;
                };
                {
                    let mut l = conns.lock().unwrap();
                    l.push(client.try_clone().unwrap());
                    l.push(server.try_clone().unwrap());
                }
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        Self { port, live }
    }

    fn url(&self) -> String {
        format!("grpc://127.0.0.1:{}", self.port)
    }

    /// Cuts every connection made so far.
    fn cut(&self) {
        for s in self.live.lock().unwrap().drain(..) {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }
}

#[test]
fn dropped_connections_resume_a_push_without_loss_or_repeats_and_a_pull_without_loss() {
    let (sender, server_host, receiver) = (
        Dir::new("flight-drop-sender"),
        Dir::new("flight-drop-server"),
        Dir::new("flight-drop-recv"),
    );
    let n_batches = 300;
    let input = counted(n_batches, 500);
    std::fs::write(sender.path("in.arrows"), ipc_stream(&input)).unwrap();
    let server = Server::start(&server_host, "127.0.0.1:0", &[]);
    let proxy = Proxy::start(&server.url);
    let url = proxy.url();
    // Small rings all along: each end waits for the next, so the stream is
    // under way at every cut.
    let small = ["--slots", "8", "--arena", "1MiB"];
    for (d, ring) in [(&sender, "src"), (&server_host, "mid"), (&receiver, "dst")] {
        let mut args = vec!["create", ring];
        args.extend_from_slice(&small);
        d.run(&args).assert_ok();
    }
    // On the server's host, a sidecar of the pushed ring (exactly once).
    let direct = spawn(
        &server_host,
        &[
            "consume",
            "mid",
            "--as",
            "direct",
            "-o",
            &server_host.s("direct.arrows"),
        ],
    );
    // And a puller through the same flaky network (at least once).
    let consume = spawn(
        &receiver,
        &["consume", "dst", "-o", &receiver.s("out.arrows")],
    );
    let pull = spawn(
        &receiver,
        &["flight", "pull", &url, "mid", "--into", "dst", "--retry"],
    );
    let push = spawn(
        &sender,
        &["flight", "push", "src", &url, "--into", "mid", "--retry"],
    );
    let produce = spawn(
        &sender,
        &[
            "produce",
            "src",
            "-i",
            &sender.s("in.arrows"),
            "--batch-rows",
            "500",
        ],
    );
    for cut in 1..=3u64 {
        wait_until("batches through the proxy", Duration::from_secs(60), || {
            write_seq(&receiver, "dst") >= cut * 60
        });
        proxy.cut();
    }
    for (what, child) in [
        ("produce", produce),
        ("push", push),
        ("pull", pull),
        ("consume", consume),
        ("direct consume", direct),
    ] {
        let (code, err) = finish(child, Duration::from_secs(120));
        assert_eq!(code, Some(0), "{what}: {err}");
        if what == "push" || what == "pull" {
            assert!(err.contains("again in"), "{what} reconnected: {err}");
        }
    }
    let expected: Vec<i64> = (0..(n_batches * 500) as i64).collect();
    // The pushed stream is one stream, as sent: nothing lost, nothing twice.
    assert_eq!(
        ids_of(&read_stream(&server_host.path("direct.arrows"))),
        expected
    );
    // The pulled one: everything, in order; cut batches may come twice.
    let ids = ids_of(&read_stream(&receiver.path("out.arrows")));
    let mut next = 0i64;
    for &id in &ids {
        assert!(id <= next, "row {next} lost");
        next = next.max(id + 1);
    }
    assert_eq!(next, expected.len() as i64);
}

#[test]
fn dictionary_batches_near_the_arena_size_flow_through_pull_and_push() {
    let (sender, server_host, receiver) = (
        Dir::new("flight-dict-sender"),
        Dir::new("flight-dict-server"),
        Dir::new("flight-dict-recv"),
    );
    // 280 KB of Int64 keys a batch, in rings of a 512 KiB arena: a batch
    // still held by the encoder leaves no room for the next.
    let values = Arc::new(StringArray::from(vec!["a", "b", "c", "d", "e", "f", "g"]));
    let schema = Arc::new(Schema::new(vec![Field::new(
        "sym",
        DataType::Dictionary(Box::new(DataType::Int64), Box::new(DataType::Utf8)),
        false,
    )]));
    let input: Vec<RecordBatch> = (0..12)
        .map(|b| {
            let keys = Int64Array::from_iter_values((0..35_000).map(|i| (i + b) % 7));
            let dict = arrow_array::DictionaryArray::new(keys, values.clone());
            RecordBatch::try_new(schema.clone(), vec![Arc::new(dict)]).unwrap()
        })
        .collect();
    std::fs::write(sender.path("in.arrows"), ipc_stream(&input)).unwrap();
    let small = ["--arena", "512KiB"];
    for (d, ring) in [(&sender, "src"), (&server_host, "mid"), (&receiver, "dst")] {
        let mut args = vec!["create", ring];
        args.extend_from_slice(&small);
        d.run(&args).assert_ok();
    }
    let server = Server::start(&server_host, "127.0.0.1:0", &[]);
    let consume = spawn(
        &receiver,
        &["consume", "dst", "-o", &receiver.s("out.arrows")],
    );
    let pull = spawn(
        &receiver,
        &["flight", "pull", &server.url, "mid", "--into", "dst"],
    );
    let push = spawn(
        &sender,
        &["flight", "push", "src", &server.url, "--into", "mid"],
    );
    let produce = spawn(
        &sender,
        &[
            "produce",
            "src",
            "-i",
            &sender.s("in.arrows"),
            "--timeout",
            "30s",
        ],
    );
    for (what, child) in [
        ("produce", produce),
        ("push", push),
        ("pull", pull),
        ("consume", consume),
    ] {
        let (code, err) = finish(child, Duration::from_secs(90));
        assert_eq!(code, Some(0), "{what}: {err}");
    }
    assert_eq!(read_stream(&receiver.path("out.arrows")), input);
}

#[test]
fn a_server_stopped_with_a_pusher_away_ends_that_stream_as_dead() {
    let (sender, server_host) = (
        Dir::new("flight-park-sender"),
        Dir::new("flight-park-server"),
    );
    let mut server = Server::start(&server_host, "127.0.0.1:0", &[]);
    let produce = open_producer(&sender, "src", &counted(5, 100));
    let push = spawn(
        &sender,
        &["flight", "push", "src", &server.url, "--into", "mid"],
    );
    wait_until("the pushed batches", Duration::from_secs(30), || {
        write_seq(&server_host, "mid") >= 6
    });
    let consume = spawn(
        &server_host,
        &["consume", "mid", "-o", &server_host.s("out.arrows")],
    );
    // The pusher vanishes: its session waits for it (30 s by default)...
    drop(push);
    std::thread::sleep(Duration::from_millis(500));
    // ...until the server stops: the stream ends as a dead producer's, not
    // as a whole one.
    let pid = server.child.id().to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    let status = server.child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    let (code, err) = finish(consume, Duration::from_secs(30));
    assert_eq!(code, Some(3), "consume sees a dead producer: {err}");
    assert_eq!(
        ids_of(&read_stream(&server_host.path("out.arrows"))),
        (0..500).collect::<Vec<i64>>()
    );
    drop(produce);
}

/// Messages the subscriber `sub` of `ring` has released (0 while the ring
/// or the name does not exist).
fn read_seq(d: &Dir, ring: &str, sub: &str) -> u64 {
    let r = d.run(&["info", ring, "--json"]);
    if r.code != Some(0) {
        return 0;
    }
    let info: serde_json::Value = serde_json::from_slice(&r.stdout).unwrap();
    info["subscribers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == sub)
        .map_or(0, |s| s["read_seq"].as_u64().unwrap())
}

fn signal(kid: &Kid, sig: &str) {
    let pid = kid.0.as_ref().unwrap().id().to_string();
    std::process::Command::new("kill")
        .args([&format!("-{sig}"), &pid])
        .status()
        .unwrap();
}

/// Makes `ring` in `d` and starts `consume RING --as watcher` into
/// `watched.arrows` there: a reader subscribed before any stream; returns
/// once `info` lists it.
fn watch(d: &Dir, ring: &str) -> Kid {
    assert_eq!(d.run(&["create", ring]).code, Some(0));
    let watcher = spawn(
        d,
        &[
            "consume",
            ring,
            "--as",
            "watcher",
            "-o",
            &d.s("watched.arrows"),
        ],
    );
    wait_until("the watcher", Duration::from_secs(10), || {
        d.run(&["info", ring])
            .stdout
            .windows(7)
            .any(|w| w == b"watcher")
    });
    watcher
}

/// `--timeout`: `pull` and `push` give up with exit 5 when no batch moved
/// for that long (nothing listening, under --retry; a remote ring with no
/// producer; a local ring whose producer sends nothing more), saying what
/// they waited for; what was not acknowledged stays where it was.
#[test]
fn pull_and_push_give_up_after_timeout_keeping_what_was_not_acknowledged() {
    let (sender, server_host, receiver) = (
        Dir::new("flight-timeout-sender"),
        Dir::new("flight-timeout-server"),
        Dir::new("flight-timeout-recv"),
    );
    let nowhere = "grpc://127.0.0.1:9";
    let started = Instant::now();
    let pull = spawn(
        &receiver,
        &["flight", "pull", nowhere, "r", "--retry", "--timeout", "1s"],
    );
    let (code, err) = finish(pull, Duration::from_secs(20));
    assert_eq!(code, Some(5), "{err}");
    assert!(
        err.contains(&format!(
            "could not read ring 'r' at {nowhere} (cannot connect"
        )),
        "{err}"
    );
    assert!(err.contains("within 1s"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10));

    let server = Server::start(&server_host, "127.0.0.1:0", &["--resume-grace", "1s"]);
    assert_eq!(server_host.run(&["create", "quiet"]).code, Some(0));
    let pull = spawn(
        &receiver,
        &["flight", "pull", &server.url, "quiet", "--timeout", "1s"],
    );
    let (code, err) = finish(pull, Duration::from_secs(20));
    assert_eq!(code, Some(5), "{err}");
    assert!(
        err.contains(&format!(
            "ring 'quiet' at {} sent no batch within 1s",
            server.url
        )),
        "{err}"
    );

    let produce = open_producer(&sender, "src", &counted(3, 100));
    wait_until("the local batches", Duration::from_secs(30), || {
        write_seq(&sender, "src") >= 4
    });
    let push = spawn(
        &sender,
        &[
            "flight",
            "push",
            "src",
            nowhere,
            "--retry",
            "--timeout",
            "1s",
        ],
    );
    let (code, err) = finish(push, Duration::from_secs(20));
    assert_eq!(code, Some(5), "{err}");
    assert!(
        err.contains(&format!(
            "the server at {nowhere} took no batch for ring 'src' within 1s"
        )),
        "{err}"
    );
    // The schema message only: no batch was acknowledged, none released.
    assert_eq!(read_seq(&sender, "src", "default"), 1);

    // Against the server: the three batches go, then nothing more comes.
    // The push gives up mid-call, which the server must not take for the
    // stream's end: after the grace its stream ends as a dead producer's.
    let watcher = watch(&server_host, "mid");
    let push = spawn(
        &sender,
        &[
            "flight",
            "push",
            "src",
            &server.url,
            "--into",
            "mid",
            "--timeout",
            "1s",
        ],
    );
    let (code, err) = finish(push, Duration::from_secs(20));
    assert_eq!(code, Some(5), "{err}");
    assert!(err.contains("ring 'src' sent no batch within 1s"), "{err}");
    assert!(err.contains("pushed 300 rows in 3 batches"), "{err}");
    assert_eq!(
        read_seq(&sender, "src", "default"),
        4,
        "every batch acknowledged and released"
    );
    assert!(write_seq(&server_host, "mid") >= 4);
    let (code, err) = finish(watcher, Duration::from_secs(30));
    assert_eq!(
        code,
        Some(3),
        "a push that gave up is not a clean end: {err}"
    );
    assert_eq!(
        ids_of(&read_stream(&server_host.path("watched.arrows"))),
        (0..300).collect::<Vec<i64>>()
    );
    drop(produce);
}

/// SIGTERM: `pull` says how far it got and dies by the signal, so the
/// local stream ends as a dead producer's (its consumer exits 3); `push`
/// ends the remote stream as a dead producer's first, then dies by the
/// signal. Every row sent before arrives.
#[test]
fn sigterm_ends_pull_and_push_with_a_summary_and_dead_streams() {
    use std::os::unix::process::ExitStatusExt;
    let (sender, server_host, receiver) = (
        Dir::new("flight-term-sender"),
        Dir::new("flight-term-server"),
        Dir::new("flight-term-recv"),
    );
    let server = Server::start(&server_host, "127.0.0.1:0", &[]);
    // A second reader of the remote ring, there from the start.
    let watcher = watch(&server_host, "mid");
    let produce = open_producer(&sender, "src", &counted(10, 100));
    let push = spawn(
        &sender,
        &["flight", "push", "src", &server.url, "--into", "mid"],
    );
    let pull = spawn(
        &receiver,
        &[
            "flight",
            "pull",
            &server.url,
            "mid",
            "--into",
            "dst",
            "--retry",
        ],
    );
    let consume = spawn(
        &receiver,
        &["consume", "dst", "-o", &receiver.s("out.arrows")],
    );
    wait_until("rows at the receiver", Duration::from_secs(30), || {
        write_seq(&receiver, "dst") >= 11
    });
    let finish_signalled = |kid: Kid| {
        let child = kid.0.as_ref().unwrap().id();
        let mut kid = kid;
        let mut c = kid.0.take().unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Some(s) = c.try_wait().unwrap() {
                break s;
            }
            assert!(Instant::now() < deadline, "process {child} did not stop");
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut err = String::new();
        std::io::Read::read_to_string(c.stderr.as_mut().unwrap(), &mut err).unwrap();
        (status.signal(), err)
    };
    signal(&pull, "TERM");
    let (sig, err) = finish_signalled(pull);
    assert_eq!(sig, Some(15), "{err}");
    assert!(err.contains("pulled 1,000 rows in 10 batches"), "{err}");
    assert!(err.contains("stopped by SIGTERM"), "{err}");
    let (code, err) = finish(consume, Duration::from_secs(30));
    assert_eq!(
        code,
        Some(3),
        "the local stream ends as a dead producer's: {err}"
    );
    assert_eq!(
        ids_of(&read_stream(&receiver.path("out.arrows"))),
        (0..1000).collect::<Vec<i64>>()
    );

    signal(&push, "TERM");
    let (sig, err) = finish_signalled(push);
    assert_eq!(sig, Some(15), "{err}");
    assert!(err.contains("pushed 1,000 rows in 10 batches"), "{err}");
    assert!(err.contains("stopped by SIGTERM"), "{err}");
    // The remote stream ended as a dead producer's at once: the watcher
    // has every row, then exits 3.
    let (code, err) = finish(watcher, Duration::from_secs(30));
    assert_eq!(code, Some(3), "{err}");
    assert_eq!(
        ids_of(&read_stream(&server_host.path("watched.arrows"))),
        (0..1000).collect::<Vec<i64>>()
    );
    drop(produce);
}
