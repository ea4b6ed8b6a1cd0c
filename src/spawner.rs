//! A thread of its own that starts codex processes.
//!
//! `clone(CLONE_VFORK)` suspends the calling thread until the child has
//! `exec`ed, which on a busy 2-core machine takes about as long as the whole
//! rest of a turn's setup (0.5-0.7 ms here, as for `posix_spawn`). Done on the
//! runtime's thread, that wait would hold up every other turn: the next
//! turn's home and config, and the events of the running ones. Here the
//! runtime prepares turn after turn while this thread waits for each `exec`.
//!
//! Its answers are grouped: while more spawns are queued it answers after
//! every [`REPLIES_PER_WAKE`] of them, and at once when none is left. Each
//! answer wakes the runtime's thread, which on a virtual machine costs tens
//! of microseconds (a hand-off between cores is some 40 µs each way here);
//! a lone turn is answered as soon as its codex has `exec`ed, as before
//! (bench/notes.md, ninth round).
//!
//! The thread lives as long as the [`Spawner`] (which the turns share), and so
//! outlives every child it starts: codex's parent-death signal fires when the
//! *thread* that cloned it exits, not the process. It blocks every signal,
//! so none is handled on it (process-directed signals go to other threads).

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::{mpsc, Arc};

use tokio::sync::oneshot;

use crate::spawn::{self, Program, Spawned};

/// At most this many started codex processes wait for their answer while
/// more spawns are queued. Measured at K=64, N=200 (paired runs): 4 saved
/// 7-10% of the daemon's CPU with no later first events; 8 and 16 saved as
/// much or more, but a burst of turns got its first events 3-4 ms later and
/// finished up to 8% later, since a started codex goes unread until its
/// turn has the answer.
const REPLIES_PER_WAKE: usize = 4;

/// The spawner thread panicked (a bug): no codex can start. The daemon
/// stops (see `daemon`); carried inside the `io::Error` a spawn fails with.
#[derive(Debug, thiserror::Error)]
#[error("the codex spawner thread failed")]
pub struct SpawnerGone;

/// An answer not yet sent.
type Reply = (oneshot::Sender<io::Result<Spawned>>, io::Result<Spawned>);

/// One request to the spawner thread.
struct Job {
    program: Program,
    /// The cgroup directory to start codex in; shared with the turn, so it
    /// stays open even if the turn is dropped while the job waits.
    cgroup: Option<Arc<OwnedFd>>,
    reply: oneshot::Sender<io::Result<Spawned>>,
}

/// The handle to the spawner thread.
#[derive(Debug)]
pub struct Spawner {
    /// `None` if the thread could not be started: then codex is started on
    /// the calling thread (slower, as correct).
    jobs: Option<mpsc::Sender<Job>>,
}

impl Spawner {
    /// Starts the thread. If it panics (a bug), `on_panic` gets why: no turn
    /// can start any more, so the daemon must stop its turns (the thread
    /// stays up until then, refusing every spawn).
    pub fn start(on_panic: impl FnOnce(String) + Send + 'static) -> Spawner {
        let (jobs, queue) = mpsc::channel::<Job>();
        let started = std::thread::Builder::new()
            .name("codex-spawner".into())
            .stack_size(256 * 1024)
            .spawn(move || {
                let mut answers: Vec<Reply> = Vec::with_capacity(REPLIES_PER_WAKE);
                let served = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    serve(&queue, &mut answers)
                }));
                let Err(payload) = served else { return };
                // The daemon hears of it before any turn does. Then the
                // children started so far are answered as usual and every
                // later job refused, until the last Spawner goes: this
                // thread's exit would kill every codex it started (their
                // parent-death signal is tied to it) before their turns
                // could stop them in order.
                on_panic(crate::daemon::panic_message(&*payload).to_owned());
                answer(&mut answers);
                for job in queue.iter() {
                    let _ = job.reply.send(Err(io::Error::other(SpawnerGone)));
                }
            });
        match started {
            Ok(_) => Spawner { jobs: Some(jobs) },
            Err(e) => {
                tracing::warn!(error = %e, "cannot start the spawner thread; starting codex on the runtime's thread");
                Spawner { jobs: None }
            }
        }
    }

    /// Starts `program` (see [`spawn::spawn`]) on the spawner thread.
    pub async fn spawn(
        &self,
        mut program: Program,
        cgroup: Option<Arc<OwnedFd>>,
    ) -> io::Result<Spawned> {
        let Some(jobs) = &self.jobs else {
            return spawn::spawn(&mut program, cgroup.as_deref().map(AsRawFd::as_raw_fd));
        };
        let (reply, answer) = oneshot::channel();
        let job = Job {
            program,
            cgroup,
            reply,
        };
        let gone = || io::Error::other(SpawnerGone);
        jobs.send(job).map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }
}

fn serve(queue: &mpsc::Receiver<Job>, answers: &mut Vec<Reply>) {
    // SAFETY: sigset_t is plain data; blocking signals in this thread only.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, std::ptr::null_mut());
    }
    // Ends when the last Spawner is dropped.
    let mut next = queue.recv().ok();
    while let Some(mut job) = next {
        crate::fault::point_if("spawner-second", || {
            use std::sync::atomic::{AtomicUsize, Ordering};
            static SPAWNS: AtomicUsize = AtomicUsize::new(0);
            SPAWNS.fetch_add(1, Ordering::Relaxed) == 1
        });
        let cgroup = job.cgroup.as_deref().map(AsRawFd::as_raw_fd);
        answers.push((job.reply, spawn::spawn(&mut job.program, cgroup)));
        next = match queue.try_recv() {
            Ok(job) => {
                if answers.len() >= REPLIES_PER_WAKE {
                    answer(answers);
                }
                Some(job)
            }
            // Nothing more queued (or every Spawner is gone): answer now.
            Err(_) => {
                answer(answers);
                queue.recv().ok()
            }
        };
    }
}

/// Sends every answer held, in the order the jobs came.
fn answer(answers: &mut Vec<Reply>) {
    for (reply, result) in answers.drain(..) {
        if let Err(Ok(orphan)) = reply.send(result) {
            // The turn went away while we were starting its codex: nobody
            // would ever stop or reap it.
            orphan.kill_and_reap();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn program(path: &str, args: &[&str]) -> Program {
        Program::new(Path::new(path), args.iter().map(Into::into), []).expect("no NUL bytes")
    }

    #[tokio::test]
    async fn every_queued_spawn_is_answered_with_its_own_child_whatever_the_grouping() {
        let spawner = Arc::new(Spawner::start(|why| panic!("the spawner panicked: {why}")));
        // More than a group, queued together (each task sends its job and
        // waits), failures among them.
        let fails = |i: usize| i % 5 == 4;
        let jobs: Vec<_> = (0..3 * REPLIES_PER_WAKE + 1)
            .map(|i| {
                let spawner = spawner.clone();
                let program = if fails(i) {
                    program("/nonexistent/codex", &[])
                } else {
                    program("/bin/sh", &["-c", &format!("exit {i}")])
                };
                tokio::spawn(async move { spawner.spawn(program, None).await })
            })
            .collect();
        for (i, job) in jobs.into_iter().enumerate() {
            let answer = tokio::time::timeout(std::time::Duration::from_secs(30), job)
                .await
                .unwrap_or_else(|_| panic!("job {i} is answered"))
                .expect("the task ran");
            if fails(i) {
                let err = answer.expect_err("no such program");
                assert_eq!(err.kind(), io::ErrorKind::NotFound, "job {i}");
            } else {
                let child = answer.unwrap_or_else(|e| panic!("job {i}: {e}"));
                let status = spawn::reap(&child.pidfd, spawn::Wait::Block)
                    .expect("reaped")
                    .expect("exited");
                assert_eq!(status.code(), Some(i as i32), "job {i} ran its own program");
            }
        }
    }
}
