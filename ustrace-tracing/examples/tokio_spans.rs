//! A tokio program instrumented with `tracing` (and one `log` record), traced by
//! ustrace with one line of set-up: `ustrace_tracing::init`.
//!
//! `tokio_spans [TASKS]` runs TASKS tasks (default 4) on a multi-threaded runtime;
//! each runs in a `job` span holding a `step` span per await point, so its spans
//! are entered and exited on whatever worker thread resumes it. Each job follows
//! from one `batch` span (`Span::follows_from`) and records its `outcome` when it
//! is done (`Span::record`).
//!
//! ```text
//! ustrace create demo && ustrace enable-event '*' && ustrace start
//! cargo run -p ustrace-tracing --example tokio_spans
//! ustrace stop && ustrace view
//! ```

use std::time::Duration;
use tracing::{Instrument, debug, info, info_span, warn};

#[derive(Debug)]
struct Job {
    id: u32,
    tags: [&'static str; 2],
}

async fn step(task: u32, n: u32) {
    tokio::time::sleep(Duration::from_millis(1)).await;
    info!(task, n, "step done");
}

async fn job(task: u32) {
    let job = Job {
        id: task,
        tags: ["a", "b"],
    };
    debug!(
        ?job,
        id = job.id,
        tag = job.tags[0],
        ratio = 0.5,
        urgent = task.is_multiple_of(2),
        "job starts"
    );
    for n in 0..3 {
        step(task, n).instrument(info_span!("step", n)).await;
        tokio::task::yield_now().await;
    }
    if task == 0 {
        warn!(task, "the first task warns once");
    }
    // A value the span declared empty, recorded once the job is done.
    tracing::Span::current().record("outcome", "done");
}

fn main() {
    if let Err(e) = ustrace_tracing::init("tokio-spans") {
        eprintln!("tokio_spans: {e}");
        std::process::exit(1);
    }
    let tasks: u32 = match std::env::args().nth(1).map(|a| a.parse()) {
        None => 4,
        Some(Ok(n)) => n,
        Some(Err(e)) => {
            eprintln!("tokio_spans: TASKS: {e}");
            std::process::exit(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .expect("a tokio runtime");
    // Every job follows from the batch that started it (not its parent: each job
    // is a root span of its own).
    let batch = info_span!("batch", tasks);
    runtime.block_on(async {
        let handles: Vec<_> = (0..tasks)
            .map(|task| {
                let span = info_span!("job", task, outcome = tracing::field::Empty);
                span.follows_from(&batch);
                tokio::spawn(job(task).instrument(span))
            })
            .collect();
        for handle in handles {
            handle.await.expect("a task that does not panic");
        }
    });
    log::info!("all {tasks} tasks done");
}
