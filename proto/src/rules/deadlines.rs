//! Claim deadlines (rules version 3): how long after an order left its node
//! a dispute of each kind may still be opened.
//!
//! The deadline runs from a ledger fact, never from the opener's incident
//! time (which is the opener's word): the order's first `Delivered` fact,
//! or while it has none its first `Shipped` fact. An order that never
//! reached the carrier has no deadline running. Each kind's window is
//! recorded by genesis or by a `SetRulesVersion` (field 140, 0 for a kind:
//! its default below), so the deadlines in force at an entry are part of
//! the replayed state like the fence (docs/ledger-format.md §4.19).

use serde::{Deserialize, Serialize};

use super::code::Incident;
use super::state::{ClusterConfig, EventKind, Order};
use crate::pb;

const DAY_MS: u64 = 24 * 3_600_000;

/// The longest claim deadline genesis or `SetRulesVersion` may record: 10 years.
pub const MAX_CLAIM_DEADLINE_MS: u64 = 3650 * DAY_MS;

/// Each kind's claim deadline as recorded (0: the kind's default).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClaimDeadlines {
    pub lost_ms: u64,
    pub damaged_ms: u64,
    pub late_ms: u64,
    pub duplicate_processing_ms: u64,
    pub price_mismatch_ms: u64,
}

impl ClaimDeadlines {
    /// The defaults of rules version 3: lost 60 days, damaged 30, late 30,
    /// duplicate processing 90, price mismatch 90.
    pub const DEFAULTS: ClaimDeadlines = ClaimDeadlines {
        lost_ms: 60 * DAY_MS,
        damaged_ms: 30 * DAY_MS,
        late_ms: 30 * DAY_MS,
        duplicate_processing_ms: 90 * DAY_MS,
        price_mismatch_ms: 90 * DAY_MS,
    };

    pub fn from_pb(p: Option<&pb::ClaimDeadlines>) -> ClaimDeadlines {
        p.map(|p| ClaimDeadlines {
            lost_ms: p.lost_ms,
            damaged_ms: p.damaged_ms,
            late_ms: p.late_ms,
            duplicate_processing_ms: p.duplicate_processing_ms,
            price_mismatch_ms: p.price_mismatch_ms,
        })
        .unwrap_or_default()
    }

    pub fn to_pb(&self) -> pb::ClaimDeadlines {
        pb::ClaimDeadlines {
            lost_ms: self.lost_ms,
            damaged_ms: self.damaged_ms,
            late_ms: self.late_ms,
            duplicate_processing_ms: self.duplicate_processing_ms,
            price_mismatch_ms: self.price_mismatch_ms,
        }
    }

    /// The recorded value for `kind` (0: not recorded).
    pub fn recorded(&self, kind: Incident) -> u64 {
        match kind {
            Incident::Lost => self.lost_ms,
            Incident::Damaged => self.damaged_ms,
            Incident::Late => self.late_ms,
            Incident::DuplicateProcessing => self.duplicate_processing_ms,
            Incident::PriceMismatch => self.price_mismatch_ms,
        }
    }

    /// The deadline in force for `kind`: the recorded one, else the default.
    pub fn window(&self, kind: Incident) -> u64 {
        match self.recorded(kind) {
            0 => Self::DEFAULTS.recorded(kind),
            ms => ms,
        }
    }

    /// Every kind's deadline in force.
    pub fn effective(&self) -> ClaimDeadlines {
        ClaimDeadlines {
            lost_ms: self.window(Incident::Lost),
            damaged_ms: self.window(Incident::Damaged),
            late_ms: self.window(Incident::Late),
            duplicate_processing_ms: self.window(Incident::DuplicateProcessing),
            price_mismatch_ms: self.window(Incident::PriceMismatch),
        }
    }

    /// Whether anything is recorded (a version below 3 may record nothing).
    pub fn is_set(&self) -> bool {
        *self != ClaimDeadlines::default()
    }

    /// The largest recorded value (checked against [`MAX_CLAIM_DEADLINE_MS`]).
    pub fn max(&self) -> u64 {
        Incident::ALL
            .iter()
            .map(|k| self.recorded(*k))
            .max()
            .unwrap_or(0)
    }
}

/// One claim deadline as typed, `KIND=DURATION` (e.g. `damaged=14d`; the
/// kinds as [`Incident`] names them, the duration as
/// [`crate::duration::parse_duration`] reads it): `arbor cluster set-rules
/// --claim-deadline` and `arbor-node --claim-deadline` / `claim-deadlines`.
pub fn parse_claim_deadline(s: &str) -> Result<(Incident, u64), String> {
    let (kind, d) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not KIND=DURATION (e.g. damaged=14d)"))?;
    let Some(kind) = Incident::parse(kind) else {
        let kinds: Vec<&str> = Incident::ALL.iter().map(|k| k.as_str()).collect();
        return Err(format!(
            "{kind:?} is not a dispute kind: one of {}",
            kinds.join(", ")
        ));
    };
    let ms = u64::try_from(crate::duration::parse_duration(d)?.as_millis()).unwrap_or(u64::MAX);
    if ms == 0 {
        return Err(format!("{s:?}: a claim deadline is longer than 0"));
    }
    if ms > MAX_CLAIM_DEADLINE_MS {
        return Err(format!("{s:?}: a claim deadline is at most 3650 days"));
    }
    Ok((kind, ms))
}

impl ClaimDeadlines {
    /// The deadlines the given `KIND=DURATION` values record (kinds not
    /// named: 0, the default); a kind named twice is an error.
    pub fn parse_all<S: AsRef<str>>(values: &[S]) -> Result<ClaimDeadlines, String> {
        let mut d = ClaimDeadlines::default();
        for v in values {
            let (kind, ms) = parse_claim_deadline(v.as_ref())?;
            let slot = match kind {
                Incident::Lost => &mut d.lost_ms,
                Incident::Damaged => &mut d.damaged_ms,
                Incident::Late => &mut d.late_ms,
                Incident::DuplicateProcessing => &mut d.duplicate_processing_ms,
                Incident::PriceMismatch => &mut d.price_mismatch_ms,
            };
            if *slot != 0 {
                return Err(format!("the claim deadline of {kind} is given twice"));
            }
            *slot = ms;
        }
        Ok(d)
    }
}

/// Where an order's claim deadline runs from: its first delivery, or while
/// it has none its first hand-off to the carrier, as (entry, time, what).
pub fn claim_anchor(order: &Order) -> Option<(u64, u64, &'static str)> {
    let first = |delivered: bool| {
        order.events.iter().find(|e| match e.kind {
            EventKind::Delivered { .. } | EventKind::DeliveryProven { .. } => delivered,
            EventKind::Shipped { .. } | EventKind::Tendered { .. } => !delivered,
            _ => false,
        })
    };
    first(true)
        .map(|e| (e.seq, e.time_ms, "delivery"))
        .or_else(|| first(false).map(|e| (e.seq, e.time_ms, "hand-off to the carrier")))
}

impl ClusterConfig {
    /// The rules configuration as the status RPC serves it.
    pub fn rules_pb(&self) -> pb::RulesConfig {
        pb::RulesConfig {
            rules_version: self.rules(),
            rules_seq: self.rules_seq,
            fence_ms: self.fence(),
            lease_grace_ms: self.lease_grace_ms,
            claim_deadlines: Some(self.claim_deadlines.effective().to_pb()),
            fence_ms_recorded: self.fence_ms,
            claim_deadlines_recorded: Some(self.claim_deadlines.to_pb()),
        }
    }

    /// The configuration a status reply names (for a client's pre-check):
    /// the recorded values, with `cluster_id` and the operator count unknown.
    pub fn from_rules_pb(cluster_id: &str, r: &pb::RulesConfig) -> ClusterConfig {
        ClusterConfig {
            cluster_id: cluster_id.to_string(),
            lease_grace_ms: r.lease_grace_ms,
            active_operators: 0,
            rules_version: r.rules_version,
            rules_seq: r.rules_seq,
            fence_ms: r.fence_ms_recorded,
            claim_deadlines: ClaimDeadlines::from_pb(r.claim_deadlines_recorded.as_ref()),
        }
    }
}
