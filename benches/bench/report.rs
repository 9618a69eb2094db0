//! Figures beside their targets: a Markdown table (stdout and `results.md`) and `results.json`.

use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;
use serde_json::Value;

use crate::procfs::Machine;

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Bound {
    AtMost,
    AtLeast,
}

#[derive(Debug, Clone, Serialize)]
pub struct Target {
    pub bound: Bound,
    pub value: f64,
}

/// One measured figure.
#[derive(Debug, Clone, Serialize)]
pub struct Figure {
    pub section: String,
    pub name: String,
    pub value: f64,
    pub unit: String,
    pub target: Option<Target>,
    /// None for figures reported without a target.
    pub pass: Option<bool>,
    /// A correctness check (a count of problems that must be 0): failing it fails the bench.
    pub correctness: bool,
}

impl Figure {
    fn value_text(&self) -> String {
        fmt_num(self.value, &self.unit)
    }

    fn target_text(&self) -> String {
        match &self.target {
            None => "—".into(),
            Some(t) => format!(
                "{} {}",
                if t.bound == Bound::AtMost {
                    "≤"
                } else {
                    "≥"
                },
                fmt_num(t.value, &self.unit)
            ),
        }
    }
}

fn fmt_num(v: f64, unit: &str) -> String {
    // Whole numbers and large values need no decimals.
    let n = if (v.fract() == 0.0 && v.abs() < 1e12) || v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    };
    if unit.is_empty() {
        n
    } else {
        format!("{n} {unit}")
    }
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub mode: String,
    pub machine: Machine,
    pub command: String,
    /// The operator binary measured and how it is linked (the image ships the static musl build).
    pub binary: String,
    pub started_at: String,
    pub duration_seconds: f64,
    /// 1-minute load average at the start and the end (other work on the machine distorts the figures).
    pub load_start: f64,
    pub load_end: f64,
    pub figures: Vec<Figure>,
    /// Context for the figures (requests by verb, RSS per soak cycle, ...).
    pub details: serde_json::Map<String, Value>,
    /// Observations worth reading next to the table.
    pub notes: Vec<String>,
}

impl Report {
    pub fn new(mode: &str, command: &str, binary: &std::path::Path) -> Report {
        let linkage = crate::procfs::linkage(binary).unwrap_or_else(|e| {
            eprintln!("bench: {e}");
            "unknown"
        });
        let shipped = if linkage == "static" {
            "as shipped in the image"
        } else {
            "NOT the shipped binary: the image ships the static musl build"
        };
        Report {
            mode: mode.into(),
            machine: Machine::describe(),
            command: command.into(),
            binary: format!("{} ({linkage}; {shipped})", binary.display()),
            started_at: jiff::Timestamp::now()
                .round(jiff::Unit::Second)
                .map(|t| t.to_string())
                .unwrap_or_default(),
            duration_seconds: 0.0,
            load_start: crate::procfs::load_average(),
            load_end: f64::NAN,
            figures: Vec::new(),
            details: serde_json::Map::new(),
            notes: Vec::new(),
        }
    }

    /// A figure with no target (context).
    pub fn info(&mut self, section: &str, name: &str, value: f64, unit: &str) {
        self.push(section, name, value, unit, None);
    }

    /// A figure that must be at most `max`.
    pub fn at_most(&mut self, section: &str, name: &str, value: f64, unit: &str, max: f64) {
        self.push(
            section,
            name,
            value,
            unit,
            Some(Target {
                bound: Bound::AtMost,
                value: max,
            }),
        );
    }

    /// A figure that must be at least `min`.
    pub fn at_least(&mut self, section: &str, name: &str, value: f64, unit: &str, min: f64) {
        self.push(
            section,
            name,
            value,
            unit,
            Some(Target {
                bound: Bound::AtLeast,
                value: min,
            }),
        );
    }

    /// A correctness check: `problems` must be empty, else the bench fails; the first few go to the notes.
    pub fn check(&mut self, section: &str, name: &str, problems: &[String]) {
        self.push(
            section,
            name,
            problems.len() as f64,
            "",
            Some(Target {
                bound: Bound::AtMost,
                value: 0.0,
            }),
        );
        if let Some(f) = self.figures.last_mut() {
            f.correctness = true;
        }
        if !problems.is_empty() {
            let shown: Vec<&str> = problems.iter().take(5).map(String::as_str).collect();
            self.note(format!(
                "{section} / {name}: {} problem(s), e.g. {}",
                problems.len(),
                shown.join("; ")
            ));
        }
    }

    fn push(&mut self, section: &str, name: &str, value: f64, unit: &str, target: Option<Target>) {
        let pass = target.as_ref().map(|t| {
            value.is_finite()
                && match t.bound {
                    Bound::AtMost => value <= t.value,
                    Bound::AtLeast => value >= t.value,
                }
        });
        self.figures.push(Figure {
            section: section.into(),
            name: name.into(),
            value,
            unit: unit.into(),
            target,
            pass,
            correctness: false,
        });
    }

    pub fn detail(&mut self, key: &str, value: impl Serialize) {
        self.details.insert(
            key.into(),
            serde_json::to_value(value).unwrap_or(Value::Null),
        );
    }

    pub fn note(&mut self, text: impl Into<String>) {
        self.notes.push(text.into());
    }

    /// Figures that are not finite numbers (a measurement that did not happen).
    pub fn invalid(&self) -> Vec<&Figure> {
        self.figures
            .iter()
            .filter(|f| !f.value.is_finite())
            .collect()
    }

    pub fn misses(&self) -> Vec<&Figure> {
        self.figures
            .iter()
            .filter(|f| f.pass == Some(false))
            .collect()
    }

    /// Failed correctness checks.
    pub fn incorrect(&self) -> Vec<&Figure> {
        self.figures
            .iter()
            .filter(|f| f.correctness && f.pass == Some(false))
            .collect()
    }

    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "## capi-vip-allocator benchmark ({})\n", self.mode);
        let _ = writeln!(s, "Machine: {}  ", self.machine.line());
        let _ = writeln!(s, "Command: `{}`  ", self.command);
        let _ = writeln!(s, "Operator binary: {}  ", self.binary);
        let _ = writeln!(
            s,
            "Started {}, took {:.0} s; load average {:.2} at the start, {:.2} at the end \
             (other work on the machine distorts the figures)\n",
            self.started_at, self.duration_seconds, self.load_start, self.load_end
        );
        let _ = writeln!(s, "| Section | Figure | Value | Target | Result |");
        let _ = writeln!(s, "|---|---|---:|---:|---|");
        for f in &self.figures {
            let result = match (f.pass, f.correctness) {
                (Some(true), _) => "PASS",
                (Some(false), false) => "MISS",
                (Some(false), true) => "FAIL",
                (None, _) => "",
            };
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} |",
                f.section,
                f.name,
                f.value_text(),
                f.target_text(),
                result
            );
        }
        if !self.notes.is_empty() {
            let _ = writeln!(s, "\nNotes:");
            for n in &self.notes {
                let _ = writeln!(s, "- {n}");
            }
        }
        s
    }

    /// Writes `results.md` and `results.json` into `dir`.
    pub fn write(&self, dir: &Path) -> Result<(), String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let md = dir.join("results.md");
        std::fs::write(&md, self.markdown()).map_err(|e| format!("{}: {e}", md.display()))?;
        let json = dir.join("results.json");
        let text = serde_json::to_string_pretty(self).map_err(|e| format!("results.json: {e}"))?;
        std::fs::write(&json, text + "\n").map_err(|e| format!("{}: {e}", json.display()))?;
        Ok(())
    }
}
