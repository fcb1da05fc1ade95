//! `--forward` for the tagging run: the inputs, one after the other, to a TCP downstream
//! (syslog-ng's `program()` destination feeds iis-tagger's stdin this way, and a network
//! source of its own takes the records back).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Mutex, watch};

use iis_tagger::driver::{Framing, Settings};
use iis_tagger::reload::Current;
use iis_tagger::serve::budget::{Budget, per_connection};
use iis_tagger::serve::conn::{self, Limits, Shared};
use iis_tagger::serve::metrics::Metrics;
use iis_tagger::serve::output::{Output, Target};

use super::runtime;
use crate::cli::common::{Failure, Input};
use crate::cli::live::Totals;

/// After a signal, how long to wait for the output to be written before giving up.
const SHUTDOWN: Duration = Duration::from_secs(30);

/// Tags `inputs` into the downstream `addr`, following reloads of `rules`; adds the
/// counters to `total` (in the rule order of the set in use at the end).
pub fn run(rules: Arc<Current>, inputs: Vec<Input>, addr: &str, total: &mut Totals) -> Result<(), Failure> {
    iis_tagger::serve::tls::check_addr(addr).map_err(Failure::setup)?;
    let runtime = runtime()?;
    let metrics = Arc::new(Metrics::new(rules.clone()));
    let result = runtime.block_on(async {
        let target = Target::forward(addr.to_string(), None, metrics.clone());
        let output = Arc::new(Mutex::new(Output::new(target, Framing::Lines, metrics.clone())));
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let max_line_bytes = rules.get().config().max_line_bytes;
        let shared = Shared {
            rules,
            output,
            metrics: metrics.clone(),
            limits: Limits { idle: None, partial_line: None, handshake: Duration::from_secs(10) },
            // One input to its own output: a last line as it came, whole lines on a signal.
            settings: Settings::default(),
            shutdown: shutdown_rx,
            // One input at a time: room for it, always.
            budget: Arc::new(
                Budget::new(per_connection(max_line_bytes), max_line_bytes, Duration::ZERO)
                    .map_err(|_| Failure::setup("memory budget"))?,
            ),
        };
        let signalled = crate::cli::signal::termination().map_err(Failure::setup)?;
        let work = async {
            for input in inputs {
                let file = tokio::fs::File::from_std(input.file);
                conn::handle(file, &shared).await;
                if *shared.shutdown.borrow() {
                    break;
                }
            }
        };
        tokio::pin!(work);
        tokio::select! {
            () = &mut work => {}
            () = signalled => {
                let _ = shutdown_tx.send(true);
                tokio::time::timeout(SHUTDOWN, &mut work)
                    .await
                    .map_err(|_| Failure::io("shutdown: the output could not be written in 30 s"))?;
            }
        }
        tokio::time::timeout(SHUTDOWN, async { shared.output.lock().await.close().await })
            .await
            .map_err(|_| Failure::io("closing the forward connection timed out"))
    });
    let (stats, set) = metrics.stats_and_set();
    total.add(&stats, &set);
    runtime.shutdown_timeout(Duration::from_millis(100));
    result
}
