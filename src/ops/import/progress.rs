//! The import's progress bar on stderr: rows/s and the time left, from the file size while
//! the file is read, then from the rows while they are merged. Hidden when stderr is not a
//! terminal (indicatif's stderr target draws nothing then) or with `--quiet`.

use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

pub struct Progress {
    bar: ProgressBar,
    started: Instant,
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
}

impl Progress {
    pub fn new(quiet: bool, file_bytes: u64) -> Self {
        let bar = if quiet {
            ProgressBar::hidden()
        } else {
            ProgressBar::with_draw_target(Some(file_bytes), ProgressDrawTarget::stderr())
        };
        bar.set_style(style(
            "reading  [{bar:30}] {percent:>3}% {msg}, {elapsed} elapsed, ~{eta} left",
        ));
        bar.enable_steady_tick(Duration::from_millis(200));
        Progress {
            bar,
            started: Instant::now(),
        }
    }

    /// `bytes` of the file read so far, `rows` of them checked and staged.
    pub fn read(&self, bytes: u64, rows: u64) {
        let secs = self.started.elapsed().as_secs_f64().max(0.001);
        self.bar.set_position(bytes);
        self.bar
            .set_message(format!("{rows} rows, {:.0} rows/s", rows as f64 / secs));
    }

    /// The merge of `rows` staged rows into levels and ledger begins.
    pub fn merging(&self, rows: u64) {
        self.bar.set_style(style(
            "merging  [{bar:30}] {pos}/{len} rows, {per_sec}, {elapsed} elapsed, ~{eta} left",
        ));
        self.bar.set_message("");
        self.bar.set_length(rows);
        self.bar.set_position(0);
        self.bar.reset_eta();
    }

    pub fn merged(&self, rows: u64) {
        self.bar.inc(rows);
    }

    /// After the commit: Redis is filled with the SKUs' levels.
    pub fn filling(&self, skus: u64) {
        self.bar.set_style(style(
            "caching  [{bar:30}] {pos}/{len} SKUs, {per_sec}, ~{eta} left",
        ));
        self.bar.set_length(skus);
        self.bar.set_position(0);
        self.bar.reset_eta();
    }

    pub fn filled(&self, skus: u64) {
        self.bar.inc(skus);
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
