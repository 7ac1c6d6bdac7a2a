//! Helper processes: the test binary re-executed in a role, and the files
//! of the rings the tests make.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use laminar_ring::shm::{DEFAULT_DIR, MAX_LANES, lane_name};

/// This test binary, to run only its `helper` test in `role` on `ring`
/// (stdout discarded, stderr shown).
pub fn helper_command(role: &str, ring: &str) -> Command {
    let mut cmd = Command::new(std::env::current_exe().expect("test binary path"));
    cmd.args([
        "helper",
        "--exact",
        "--nocapture",
        "--test-threads",
        "1",
        "-q",
    ])
    .env("LAMINAR_HELPER", role)
    .env("LAMINAR_RING", ring)
    .stdout(Stdio::null())
    .stderr(Stdio::inherit());
    cmd
}

/// Starts this test binary as a helper process in `role`, with `env`.
pub fn spawn_helper(role: &str, ring: &str, env: &[(&str, String)]) -> Child {
    let mut cmd = helper_command(role, ring);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn().expect("spawn helper process")
}

/// Waits for a child's exit code; kills it and fails the test if it
/// overruns `limit`.
pub fn wait_exit(child: &mut Child, limit: Duration) -> i32 {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status.code().unwrap_or(-1);
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("helper did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// An environment variable as a number, 0 when unset or not a number.
pub fn env_u64(key: &str) -> u64 {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// A stream name unique to this process and test, in the default
/// directory; every lane of it is unlinked when made and on drop.
pub struct Stream {
    pub name: String,
    pub dir: PathBuf,
}

impl Stream {
    pub fn new(prefix: &str, test: &str) -> Self {
        let s = Self {
            name: format!("{prefix}-{}-{test}", std::process::id()),
            dir: PathBuf::from(DEFAULT_DIR),
        };
        s.remove();
        s
    }

    pub fn remove(&self) {
        for lane in 0..MAX_LANES {
            let _ = std::fs::remove_file(self.dir.join(lane_name(&self.name, lane)));
        }
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.remove();
    }
}
