//! What the probe found: one row per token, each the service's answer
//! compared with a correct verifier's, printed as a table for people or as
//! JSON for scripts.
//!
//! A 2xx answer means the service accepted the token, 401 or 403 that it
//! refused it (RFC 6750 §3.1's `invalid_token` and `insufficient_scope`).
//! Anything else (a redirect, a 400, a 5xx, no answer) is neither, and fails
//! the row: a verifier that crashes on a forged token is not refusing it.

use serde_json::{Value, json};

/// What a correct verifier does with a token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expected {
    /// The valid token: a 2xx answer.
    Accepted,
    /// Every defective token: 401 or 403.
    Refused,
}

impl Expected {
    fn as_str(self) -> &'static str {
        match self {
            Self::Accepted => "accepted",
            Self::Refused => "refused",
        }
    }
}

/// What the service did with a token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// It answered with this HTTP status.
    Status(u16),
    /// It did not answer (the reason, in a few words).
    Error(String),
}

/// One token sent and its verdict.
#[derive(Clone, Debug)]
pub struct Row {
    /// The defect's name; `none` for the valid token.
    pub defect: String,
    /// What a correct verifier does.
    pub expected: Expected,
    /// What the service did.
    pub outcome: Outcome,
    /// What accepting it says of the verifier (the catalogue's `weakness`).
    pub weakness: Option<String>,
}

impl Row {
    /// Whether the service did what a correct verifier does.
    pub fn passed(&self) -> bool {
        matches!(
            (self.expected, &self.outcome),
            (Expected::Accepted, Outcome::Status(200..=299))
                | (Expected::Refused, Outcome::Status(401 | 403))
        )
    }

    /// Why a failed row failed, in words; `None` for a pass.
    pub fn note(&self) -> Option<String> {
        if self.passed() {
            return None;
        }
        Some(match &self.outcome {
            Outcome::Status(200..=299) => match &self.weakness {
                Some(weakness) => {
                    format!("accepted: a correct verifier refuses this token; {weakness}")
                }
                None => "accepted: a correct verifier refuses this token".to_owned(),
            },
            Outcome::Status(401 | 403) => {
                "refused: a correct verifier accepts this token".to_owned()
            }
            Outcome::Status(status @ 500..=599) => {
                format!("server error {status}: neither accepted (2xx) nor refused (401/403)")
            }
            Outcome::Status(status) => {
                format!("{status} is neither accepted (2xx) nor refused (401/403)")
            }
            Outcome::Error(err) => format!("no answer: {err}"),
        })
    }

    fn status_text(&self) -> String {
        match &self.outcome {
            Outcome::Status(status) => status.to_string(),
            Outcome::Error(_) => "error".to_owned(),
        }
    }
}

/// Every row of a run.
#[derive(Clone, Debug)]
pub struct Report {
    rows: Vec<Row>,
    notes: Vec<String>,
}

impl Report {
    /// The rows, in the order they were sent.
    pub fn new(rows: Vec<Row>) -> Self {
        Self {
            rows,
            notes: Vec::new(),
        }
    }

    /// The same report with `notes`: what the person running the probe
    /// should know about how it ran (printed on stderr, not in the results).
    pub fn with_notes(self, notes: Vec<String>) -> Self {
        Self { notes, ..self }
    }

    /// The notes.
    pub fn notes(&self) -> &[String] {
        &self.notes
    }

    /// The rows.
    pub fn rows(&self) -> &[Row] {
        &self.rows
    }

    /// How many rows passed.
    pub fn passed(&self) -> usize {
        self.rows.iter().filter(|r| r.passed()).count()
    }

    /// How many rows failed.
    pub fn failed(&self) -> usize {
        self.rows.len() - self.passed()
    }

    /// A table with a header line, one line per row (a failed one says why)
    /// and a closing `N passed, M failed`.
    pub fn table(&self) -> String {
        let width = self
            .rows
            .iter()
            .map(|r| r.defect.len())
            .chain(["defect".len()])
            .max()
            .unwrap_or(0);
        let mut out = format!(
            "{:width$}  {:8}  {:6}  verdict\n",
            "defect", "expected", "status"
        );
        for row in &self.rows {
            let verdict = if row.passed() { "pass" } else { "FAIL" };
            let line = format!(
                "{:width$}  {:8}  {:6}  {verdict}",
                row.defect,
                row.expected.as_str(),
                row.status_text(),
            );
            match row.note() {
                Some(note) => out.push_str(&format!("{line}  ({note})\n")),
                None => out.push_str(&format!("{}\n", line.trim_end())),
            }
        }
        out.push_str(&format!(
            "{} passed, {} failed",
            self.passed(),
            self.failed()
        ));
        out
    }

    /// `{"results": [{"defect", "expected", "status", "verdict"}], "passed",
    /// "failed"}`: `status` is the HTTP status, or `null` with an `error`
    /// when the service did not answer; `verdict` is `pass` or `FAIL`, and a
    /// failed row has a `note`.
    pub fn json(&self) -> String {
        let results: Vec<Value> = self
            .rows
            .iter()
            .map(|row| {
                let mut result = json!({
                    "defect": row.defect,
                    "expected": row.expected.as_str(),
                    "status": match &row.outcome {
                        Outcome::Status(status) => json!(status),
                        Outcome::Error(_) => Value::Null,
                    },
                    "verdict": if row.passed() { "pass" } else { "FAIL" },
                });
                if let Outcome::Error(err) = &row.outcome {
                    result["error"] = json!(err);
                }
                if let Some(note) = row.note() {
                    result["note"] = json!(note);
                }
                result
            })
            .collect();
        json!({
            "results": results,
            "passed": self.passed(),
            "failed": self.failed(),
        })
        .to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(defect: &str, expected: Expected, outcome: Outcome) -> Row {
        Row {
            defect: defect.to_owned(),
            expected,
            outcome,
            weakness: (defect == "bad-signature").then(|| "CWE-347".to_owned()),
        }
    }

    #[test]
    fn only_2xx_accepts_and_only_401_or_403_refuses() {
        for (status, accepted, refused) in [
            (200, true, false),
            (204, true, false),
            (401, false, true),
            (403, false, true),
            (302, false, false),
            (400, false, false),
            (404, false, false),
            (500, false, false),
        ] {
            let ok = row("none", Expected::Accepted, Outcome::Status(status));
            let bad = row("expired", Expected::Refused, Outcome::Status(status));
            assert_eq!(ok.passed(), accepted, "{status}");
            assert_eq!(bad.passed(), refused, "{status}");
        }
        let down = row(
            "none",
            Expected::Accepted,
            Outcome::Error("cannot connect".into()),
        );
        assert!(!down.passed());
        assert_eq!(down.note().unwrap(), "no answer: cannot connect");
    }

    #[test]
    fn the_table_names_each_failure_and_counts() {
        let report = Report::new(vec![
            row("none", Expected::Accepted, Outcome::Status(200)),
            row("bad-signature", Expected::Refused, Outcome::Status(200)),
            row("alg-none", Expected::Refused, Outcome::Status(500)),
            row("expired", Expected::Refused, Outcome::Status(401)),
        ]);
        let table = report.table();
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines[0], "defect         expected  status  verdict");
        assert_eq!(lines[1], "none           accepted  200     pass");
        assert_eq!(
            lines[2],
            "bad-signature  refused   200     FAIL  (accepted: a correct verifier refuses this token; CWE-347)"
        );
        assert!(lines[3].contains("FAIL  (server error 500"));
        assert_eq!(lines[4], "expired        refused   401     pass");
        assert_eq!(lines[5], "2 passed, 2 failed");
        let json: Value = serde_json::from_str(&report.json()).unwrap();
        assert_eq!(json["passed"], 2);
        assert_eq!(json["failed"], 2);
        assert_eq!(json["results"][1]["verdict"], "FAIL");
        assert_eq!(json["results"][3]["status"], 401);
    }
}
