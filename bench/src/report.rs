//! Scenario results and the two ways they are shown: a table on stdout and
//! docs/BENCHMARKS.md.

use std::fmt::Write as _;

use crate::stats;

/// What a number measures, for formatting and for how a ratio reads.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Unit {
    Ms,
    KiB,
    PerSec,
    Count,
}

#[derive(Clone, Copy, Debug)]
pub struct Value {
    pub value: f64,
    pub unit: Unit,
}

impl Value {
    pub fn ms(value: f64) -> Self {
        Value { value, unit: Unit::Ms }
    }
    pub fn kib(value: f64) -> Self {
        Value { value, unit: Unit::KiB }
    }
    pub fn per_sec(value: f64) -> Self {
        Value { value, unit: Unit::PerSec }
    }
    pub fn count(value: f64) -> Self {
        Value { value, unit: Unit::Count }
    }
}

impl std::fmt::Display for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.unit {
            Unit::Ms => write!(f, "{:.3} ms", self.value),
            Unit::KiB if self.value < 100.0 => write!(f, "{:.2} KiB", self.value),
            Unit::KiB => write!(f, "{:.0} KiB", self.value),
            Unit::PerSec => write!(f, "{:.0}/s", self.value),
            Unit::Count => {
                if self.value.fract() == 0.0 {
                    write!(f, "{:.0}", self.value)
                } else {
                    write!(f, "{:.2}", self.value)
                }
            }
        }
    }
}

/// The goal of issue #6's table for a row, checked against this run's numbers.
#[derive(Clone, Copy, Debug)]
pub enum Goal {
    /// result / baseline ≥ x (throughputs).
    RatioAtLeast(f64),
    /// result / baseline ≤ x (wall times).
    RatioAtMost(f64),
    /// result ≤ baseline + x, in the result's unit (latency overheads).
    PlusAtMost(f64),
    /// result ≤ x, in the result's unit.
    AtMost(f64),
}

impl Goal {
    fn text(&self, unit: Unit) -> String {
        let suffix = match unit {
            Unit::Ms => " ms",
            Unit::KiB => " KiB",
            Unit::PerSec => "/s",
            Unit::Count => "",
        };
        match *self {
            Goal::RatioAtLeast(x) => format!("≥ {x}×"),
            Goal::RatioAtMost(x) => format!("≤ {x}×"),
            Goal::PlusAtMost(x) => format!("≤ baseline + {x}{suffix}"),
            Goal::AtMost(x) => format!("≤ {x}{suffix}"),
        }
    }

    /// Judged on the medians of the per-pair ratios and differences.
    fn met_paired(&self, pairs: &Pairs, result: Value) -> bool {
        match *self {
            Goal::RatioAtLeast(x) => pairs.median_ratio() >= x,
            Goal::RatioAtMost(x) => pairs.median_ratio() <= x,
            Goal::PlusAtMost(x) => pairs.median_difference() <= x,
            Goal::AtMost(x) => result.value <= x,
        }
    }

    /// None when the row lacks what the goal compares with.
    fn met(&self, baseline: Option<Value>, result: Value) -> Option<bool> {
        match *self {
            Goal::RatioAtLeast(x) => baseline.filter(|b| b.value > 0.0).map(|b| result.value / b.value >= x),
            Goal::RatioAtMost(x) => baseline.filter(|b| b.value > 0.0).map(|b| result.value / b.value <= x),
            Goal::PlusAtMost(x) => baseline.map(|b| result.value <= b.value + x),
            Goal::AtMost(x) => Some(result.value <= x),
        }
    }
}

/// Per-pair figures of an interleaved (ABAB) measurement: the ratio and the difference of
/// each pair's subject block to its baseline block. Goals are judged on their medians.
#[derive(Clone, Debug, Default)]
pub struct Pairs {
    pub ratios: Vec<f64>,
    pub differences: Vec<f64>,
}

/// Pairs whose ratios spread wider than this (max / min) mark the row "noisy": the machine
/// changed speed between blocks more than the difference being measured.
pub const NOISY_SPREAD: f64 = 1.5;

impl Pairs {
    pub fn median_ratio(&self) -> f64 {
        stats::median(&self.ratios)
    }

    pub fn median_difference(&self) -> f64 {
        stats::median(&self.differences)
    }

    pub fn spread(&self) -> f64 {
        let (min, max) = stats::range(&self.ratios);
        if min > 0.0 { max / min } else { f64::INFINITY }
    }

    pub fn noisy(&self) -> bool {
        self.spread() > NOISY_SPREAD
    }
}

/// One line of a scenario's table.
pub struct Row {
    pub metric: String,
    /// The same quantity measured for the baseline in the same run; None when the
    /// scenario has no baseline for it (yet).
    pub baseline: Option<Value>,
    pub result: Value,
    /// Said in the baseline column when there is no baseline.
    pub no_baseline: &'static str,
    /// The issue's goal for this figure, if it has one.
    pub goal: Option<Goal>,
    /// Set for interleaved measurements: the ratio column and the goal use the per-pair
    /// figures' medians instead of `result / baseline`.
    pub pairs: Option<Pairs>,
}

impl Row {
    pub fn compared(metric: impl Into<String>, baseline: Value, result: Value) -> Self {
        Row { metric: metric.into(), baseline: Some(baseline), result, no_baseline: "", goal: None, pairs: None }
    }

    /// An interleaved measurement: one (baseline, subject) figure per pair of blocks. The
    /// row shows the medians of both sides and the median of the per-pair ratios, with
    /// their range; a spread above [`NOISY_SPREAD`] marks it noisy.
    pub fn paired(metric: impl Into<String>, unit: Unit, figures: &[(f64, f64)]) -> Self {
        let baselines: Vec<f64> = figures.iter().map(|f| f.0).collect();
        let subjects: Vec<f64> = figures.iter().map(|f| f.1).collect();
        let pairs = Pairs {
            ratios: figures.iter().filter(|f| f.0 > 0.0).map(|f| f.1 / f.0).collect(),
            differences: figures.iter().map(|f| f.1 - f.0).collect(),
        };
        Row {
            metric: metric.into(),
            baseline: Some(Value { value: stats::median(&baselines), unit }),
            result: Value { value: stats::median(&subjects), unit },
            no_baseline: "",
            goal: None,
            pairs: Some(pairs),
        }
    }

    pub fn alone(metric: impl Into<String>, result: Value, why: &'static str) -> Self {
        Row { metric: metric.into(), baseline: None, result, no_baseline: why, goal: None, pairs: None }
    }

    pub fn goal(mut self, goal: Goal) -> Self {
        self.goal = Some(goal);
        self
    }

    fn goal_text(&self) -> String {
        self.goal.map_or_else(String::new, |g| g.text(self.result.unit))
    }

    fn met_text(&self) -> &'static str {
        let verdict = self.goal.map(|g| match &self.pairs {
            Some(pairs) => Some(g.met_paired(pairs, self.result)),
            None => g.met(self.baseline, self.result),
        });
        let noisy = self.pairs.as_ref().is_some_and(Pairs::noisy);
        match (verdict, noisy) {
            (None, _) => "",
            (Some(Some(true)), false) => "yes",
            (Some(Some(true)), true) => "yes (noisy)",
            (Some(Some(false)), false) => "**no**",
            (Some(Some(false)), true) => "**no** (noisy)",
            (Some(None), _) => "?",
        }
    }

    fn baseline_text(&self) -> String {
        self.baseline.map_or_else(|| self.no_baseline.to_string(), |b| b.to_string())
    }

    /// "×2.41 (+1.234 ms)" for times; "×2.41" otherwise.
    fn ratio_text(&self) -> String {
        if let Some(pairs) = &self.pairs {
            let (min, max) = stats::range(&pairs.ratios);
            let n = pairs.ratios.len();
            let noisy = if pairs.noisy() { ", noisy" } else { "" };
            return match self.result.unit {
                Unit::Ms => format!(
                    "×{:.2} ({:+.3} ms; pairs ×{min:.2}–×{max:.2}, n = {n}{noisy})",
                    pairs.median_ratio(),
                    pairs.median_difference()
                ),
                _ => format!("×{:.2} (pairs ×{min:.2}–×{max:.2}, n = {n}{noisy})", pairs.median_ratio()),
            };
        }
        let Some(baseline) = self.baseline else { return "—".into() };
        if baseline.value == 0.0 {
            return "—".into();
        }
        let ratio = self.result.value / baseline.value;
        match self.result.unit {
            Unit::Ms => format!("×{ratio:.2} ({:+.3} ms)", self.result.value - baseline.value),
            _ => format!("×{ratio:.2}"),
        }
    }
}

/// What one scenario found.
pub struct Report {
    pub name: &'static str,
    /// The row(s) of issue #6's table this scenario measures, e.g. "#1".
    pub issue: &'static str,
    pub title: &'static str,
    /// Parameters as run (sample counts, rates, sizes).
    pub params: Vec<(String, String)>,
    /// How the baseline was measured.
    pub baseline: String,
    pub rows: Vec<Row>,
    pub notes: Vec<String>,
    pub seconds: f64,
}

impl Report {
    pub fn new(name: &'static str, issue: &'static str, title: &'static str) -> Self {
        Report {
            name,
            issue,
            title,
            params: Vec::new(),
            baseline: String::new(),
            rows: Vec::new(),
            notes: Vec::new(),
            seconds: 0.0,
        }
    }

    pub fn param(&mut self, key: &str, value: impl ToString) {
        self.params.push((key.to_string(), value.to_string()));
    }
}

/// A scenario either reports or fails (the run goes on with the next one).
pub enum Outcome {
    Done(Report),
    Failed { name: &'static str, error: String },
}

/// The header of the Markdown file.
pub struct RunInfo {
    pub date: String,
    pub machine: String,
    pub load_start: String,
    pub load_end: String,
    /// [`crate::harness::MachineState`] at the start and the end of the run.
    pub state_start: String,
    pub state_end: String,
    pub commit: String,
    pub command: String,
    pub mode: &'static str,
    pub postgres: String,
    pub hub: String,
    pub notes: Vec<String>,
}

/// The stdout table: one line per metric.
pub fn table(outcomes: &[Outcome]) -> String {
    const COLUMNS: usize = 7;
    let mut lines: Vec<[String; COLUMNS]> = vec![[
        "scenario".to_string(),
        "metric".into(),
        "baseline".into(),
        "result".into(),
        "ratio".into(),
        "goal".into(),
        "met?".into(),
    ]];
    for outcome in outcomes {
        match outcome {
            Outcome::Done(report) => {
                for row in &report.rows {
                    lines.push([
                        report.name.to_string(),
                        row.metric.clone(),
                        row.baseline_text(),
                        row.result.to_string(),
                        row.ratio_text(),
                        row.goal_text(),
                        row.met_text().replace('*', ""),
                    ]);
                }
            }
            Outcome::Failed { name, error } => lines.push([
                name.to_string(),
                "FAILED".into(),
                String::new(),
                first_line(error),
                String::new(),
                String::new(),
                String::new(),
            ]),
        }
    }
    let widths: Vec<usize> =
        (0..COLUMNS).map(|c| lines.iter().map(|l| l[c].chars().count()).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for (i, line) in lines.iter().enumerate() {
        let cells: Vec<String> = line
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell}{}", " ".repeat(w - cell.chars().count())))
            .collect();
        let _ = writeln!(out, "{}", cells.join("  ").trim_end());
        if i == 0 {
            let _ = writeln!(out, "{}", widths.iter().map(|w| "-".repeat(*w)).collect::<Vec<_>>().join("  "));
        }
    }
    out
}

/// Hand-written analysis kept across reruns: the text between these markers in the
/// existing file is carried into the new one.
pub const ANALYSIS_START: &str = "<!-- analysis:start (hand-written; kept when scripts/bench rewrites this file) -->";
pub const ANALYSIS_END: &str = "<!-- analysis:end -->";

/// The hand-written analysis section of an earlier report, markers included.
pub fn kept_analysis(previous: &str) -> Option<String> {
    let start = previous.find(ANALYSIS_START)?;
    let end = previous[start..].find(ANALYSIS_END)? + start + ANALYSIS_END.len();
    Some(previous[start..end].to_string())
}

fn first_line(text: &str) -> String {
    text.lines().next().unwrap_or("").to_string()
}

fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

/// docs/BENCHMARKS.md; `analysis` is the hand-written section kept from the previous file.
pub fn markdown(info: &RunInfo, outcomes: &[Outcome], analysis: Option<&str>) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "# Benchmarks\n");
    let _ = writeln!(
        md,
        "Written by `scripts/bench` (the `bench/` crate, `synchub-bench`); rerun it rather than editing this file \
         (only the analysis section between its markers is hand-written, and kept on rerun). Every number is \
         compared with a baseline measured in the same run on the same machine, because the machine is shared and \
         noisy: read the ratios, not the absolute times. Latencies are HDR histograms (µs resolution, 3 significant \
         digits). The goals are issue #6's and #16's; \"met?\" checks them against this run's numbers and is not a \
         CI assertion. Interleaved rows (ratio column \"pairs ×min–×max, n = …\") ran subject and baseline in \
         alternating short blocks (A B A B …) and are judged on the median of the per-pair ratios (or \
         differences); \"noisy\" marks rows whose pairs disagree by more than ×{}.\n",
        NOISY_SPREAD
    );
    let _ = writeln!(
        md,
        "Run: `scripts/bench` (all scenarios, full samples, rewrites this file); `scripts/bench --quick` (smoke \
         check, under 2 minutes, writes `BENCHMARKS.partial.md` in the target dir); `--only NAME[,NAME]`, \
         `--list`, `--note TEXT`, `--idle-sockets N,N`, `--pg-stat-statements` (diagnostic: the hub's SQL \
         statements per write). Honours `CARGO_TARGET_DIR`.\n"
    );
    let _ = writeln!(md, "| | |\n|---|---|");
    let _ = writeln!(md, "| date | {} |", info.date);
    let _ = writeln!(md, "| mode | {} |", info.mode);
    let _ = writeln!(md, "| machine | {} |", cell(&info.machine));
    let _ = writeln!(md, "| load average (1/5/15 min) | start {}, end {} |", info.load_start, info.load_end);
    let _ = writeln!(
        md,
        "| machine state (load, 4 KiB write + fdatasync next to PostgreSQL's data) | start {}, end {} |",
        info.state_start, info.state_end
    );
    let _ = writeln!(md, "| commit | {} |", cell(&info.commit));
    let _ = writeln!(md, "| command | `{}` |", cell(&info.command));
    let _ = writeln!(md, "| PostgreSQL | {} |", cell(&info.postgres));
    let _ = writeln!(md, "| hub | {} |", cell(&info.hub));
    let _ = writeln!(md);
    let _ = writeln!(md, "## Summary\n");
    let _ = writeln!(
        md,
        "| issue | scenario | metric | baseline | result | ratio (result / baseline) | goal | met? |\n\
         |---|---|---|---|---|---|---|---|"
    );
    for outcome in outcomes {
        match outcome {
            Outcome::Done(report) => {
                for row in &report.rows {
                    let _ = writeln!(
                        md,
                        "| {} | [{1}](#{1}) | {2} | {3} | {4} | {5} | {6} | {7} |",
                        report.issue,
                        report.name,
                        cell(&row.metric),
                        cell(&row.baseline_text()),
                        row.result,
                        row.ratio_text(),
                        cell(&row.goal_text()),
                        row.met_text()
                    );
                }
            }
            Outcome::Failed { name, error } => {
                let _ = writeln!(md, "| | {name} | **failed** | | {} | | | |", cell(&first_line(error)));
            }
        }
    }
    let _ = writeln!(md);
    if let Some(analysis) = analysis {
        let _ = writeln!(md, "{analysis}\n");
    }
    for outcome in outcomes {
        match outcome {
            Outcome::Done(report) => {
                let _ = writeln!(md, "## {}\n", report.name);
                // "#N" is a row of issue #6's table; "issue #N" names another issue.
                let source = match report.issue.strip_prefix("issue ") {
                    Some(issue) => format!("Issue {issue}."),
                    None => format!("Issue #6 row {}.", report.issue.trim_start_matches('#')),
                };
                let _ = writeln!(md, "{source} {}\n", report.title);
                if !report.params.is_empty() {
                    let params: Vec<String> = report.params.iter().map(|(k, v)| format!("{k} = {v}")).collect();
                    let _ = writeln!(md, "Parameters: {}; took {:.1} s.\n", params.join(", "), report.seconds);
                }
                if !report.baseline.is_empty() {
                    let _ = writeln!(md, "Baseline: {}\n", report.baseline);
                }
                let _ = writeln!(md, "| metric | baseline | result | ratio | goal | met? |\n|---|---|---|---|---|---|");
                for row in &report.rows {
                    let _ = writeln!(
                        md,
                        "| {} | {} | {} | {} | {} | {} |",
                        cell(&row.metric),
                        cell(&row.baseline_text()),
                        row.result,
                        row.ratio_text(),
                        cell(&row.goal_text()),
                        row.met_text()
                    );
                }
                let _ = writeln!(md);
                for note in &report.notes {
                    let _ = writeln!(md, "- {note}");
                }
                if !report.notes.is_empty() {
                    let _ = writeln!(md);
                }
            }
            Outcome::Failed { name, error } => {
                let _ = writeln!(md, "## {name}\n\n**Failed:**\n\n```\n{error}\n```\n");
            }
        }
    }
    if !info.notes.is_empty() {
        let _ = writeln!(md, "## Notes\n");
        for note in &info.notes {
            let _ = writeln!(md, "- {note}");
        }
    }
    md
}
