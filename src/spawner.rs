//! A thread of its own that starts codex processes.
//!
//! `clone(CLONE_VFORK)` suspends the calling thread until the child has
//! `exec`ed, which on a busy 2-core machine takes about as long as the whole
//! rest of a turn's setup (0.5-0.7 ms here, as for `posix_spawn`). Done on the
//! runtime's thread, that wait would hold up every other turn: the next
//! turn's home and config, and the events of the running ones. Here the
//! runtime prepares turn after turn while this thread waits for each `exec`.
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
    /// Starts the thread.
    pub fn start() -> Spawner {
        let (jobs, queue) = mpsc::channel::<Job>();
        let started = std::thread::Builder::new()
            .name("codex-spawner".into())
            .stack_size(256 * 1024)
            .spawn(move || serve(queue));
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
        program: Program,
        cgroup: Option<Arc<OwnedFd>>,
    ) -> io::Result<Spawned> {
        let Some(jobs) = &self.jobs else {
            return spawn::spawn(&program, cgroup.as_deref().map(AsRawFd::as_raw_fd));
        };
        let (reply, answer) = oneshot::channel();
        let job = Job {
            program,
            cgroup,
            reply,
        };
        let gone = || io::Error::other("the codex spawner thread is gone");
        jobs.send(job).map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }
}

fn serve(queue: mpsc::Receiver<Job>) {
    // SAFETY: sigset_t is plain data; blocking signals in this thread only.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, std::ptr::null_mut());
    }
    // Ends when the last Spawner is dropped.
    while let Ok(job) = queue.recv() {
        let cgroup = job.cgroup.as_deref().map(AsRawFd::as_raw_fd);
        let result = spawn::spawn(&job.program, cgroup);
        if let Err(Ok(orphan)) = job.reply.send(result) {
            // The turn went away while we were starting its codex: nobody
            // would ever stop or reap it.
            orphan.kill_and_reap();
        }
    }
}
