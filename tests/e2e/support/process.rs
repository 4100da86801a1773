//! Child processes under a deadline. Output goes to files in the test's folder (a pipe that
//! nobody drains would stall a chatty child), and a failure's panic message carries the tail
//! of the child's stderr, since that is all a CI log will show. A child still running when its
//! handle drops (a test panicked) is killed, so no test leaves processes behind.

use std::fmt::Write as _;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

/// How often a wait looks at the child again.
const POLL: Duration = Duration::from_millis(20);

/// Lines of stderr a failure report shows.
const TAIL_LINES: usize = 60;

/// A running child process.
pub struct Proc {
    name: String,
    child: Child,
    stdout: PathBuf,
    stderr: PathBuf,
    started: Instant,
}

/// A child that has exited, with what it printed.
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Proc {
    /// Starts `cmd`, its output going to `<log_dir>/<name>.<n>.{stdout,stderr}`.
    pub fn spawn(name: &str, mut cmd: Command, log_dir: &Path) -> Proc {
        static SEQ: AtomicUsize = AtomicUsize::new(0);
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let stdout = log_dir.join(format!("{name}.{n}.stdout"));
        let stderr = log_dir.join(format!("{name}.{n}.stderr"));
        let open = |p: &Path| {
            File::create(p).unwrap_or_else(|e| panic!("cannot create {}: {e}", p.display()))
        };
        cmd.stdin(Stdio::null())
            .stdout(open(&stdout))
            .stderr(open(&stderr));
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({cmd:?}): {e}"));
        Proc {
            name: name.to_string(),
            child,
            stdout,
            stderr,
            started: Instant::now(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The exit status if the child has exited, without waiting.
    pub fn poll(&mut self) -> Option<ExitStatus> {
        self.child
            .try_wait()
            .unwrap_or_else(|e| panic!("cannot wait for {}: {e}", self.name))
    }

    /// Waits up to `timeout` for the child to exit; `None` if it is still running then.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.poll() {
                return Some(status);
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            thread::sleep(POLL.min(deadline - now));
        }
    }

    /// Kills the child with SIGKILL (no chance to clean up, as in a crash) and reaps it.
    pub fn kill(&mut self) -> ExitStatus {
        if let Some(status) = self.poll() {
            return status;
        }
        // An error here means it exited between the poll and the kill; `wait` tells.
        let _ = self.child.kill();
        self.child
            .wait()
            .unwrap_or_else(|e| panic!("cannot reap {}: {e}", self.name))
    }

    /// Waits until something accepts connections on 127.0.0.1:`port`; panics with the
    /// child's output if it exits first or after 60 seconds.
    pub fn wait_listening(&mut self, port: u16) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = self.poll() {
                panic!(
                    "{} exited ({status}) before listening.\n{}",
                    self.name,
                    self.report()
                );
            }
            assert!(
                Instant::now() < deadline,
                "{} is not listening on {port} after 60s",
                self.name
            );
            thread::sleep(POLL);
        }
    }

    /// Asks the child to stop with SIGTERM (a clean shutdown), without waiting.
    pub fn terminate(&mut self) {
        if self.poll().is_some() {
            return;
        }
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap_or_else(|e| panic!("cannot run kill for {}: {e}", self.name));
        assert!(
            status.success() || self.poll().is_some(),
            "kill -TERM {} failed",
            self.name
        );
    }

    /// Waits up to `timeout` for the child to exit and returns what it printed; kills it and
    /// panics if it is still running at the deadline.
    pub fn finish(mut self, timeout: Duration) -> Finished {
        match self.wait_timeout(timeout) {
            Some(status) => Finished {
                status,
                stdout: read(&self.stdout),
                stderr: read(&self.stderr),
            },
            None => {
                self.kill();
                panic!(
                    "{} did not finish within {timeout:?}; killed it.\n{}",
                    self.name,
                    self.report()
                );
            }
        }
    }

    /// As [`Proc::finish`], and panics unless the child exited with status 0.
    pub fn expect_success(self, timeout: Duration) -> Finished {
        let name = self.name.clone();
        let report_paths = (self.stdout.clone(), self.stderr.clone());
        let done = self.finish(timeout);
        if !done.status.success() {
            panic!(
                "{name} failed ({}).\n{}",
                done.status,
                describe(&name, &report_paths.0, &report_paths.1)
            );
        }
        done
    }

    /// What the child printed so far, for a failure message.
    pub fn report(&self) -> String {
        let mut s = describe(&self.name, &self.stdout, &self.stderr);
        let _ = write!(
            s,
            "(pid {}, running for {:?})",
            self.pid(),
            self.started.elapsed()
        );
        s
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn read(path: &Path) -> String {
    std::fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

/// The tail of the child's stdout and stderr.
fn describe(name: &str, stdout: &Path, stderr: &Path) -> String {
    let mut s = String::new();
    for (label, path) in [("stdout", stdout), ("stderr", stderr)] {
        let text = read(path);
        let lines: Vec<&str> = text.lines().collect();
        let skip = lines.len().saturating_sub(TAIL_LINES);
        let _ = writeln!(
            s,
            "--- {name} {label} ({}, last {} of {} lines) ---",
            path.display(),
            lines.len() - skip,
            lines.len()
        );
        for line in &lines[skip..] {
            let _ = writeln!(s, "{line}");
        }
    }
    s
}
