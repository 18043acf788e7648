//! Claim deadlines (rules version 3): a dispute opened after its kind's
//! deadline is rejected `claim_deadline_passed`, naming the deadline and
//! the fact it runs from (`rules/deadlines.rs`).

use super::super::deadlines::claim_anchor;
use super::super::{Code, Incident, StateView};
use super::{rej, OnOrder, Reject};

impl<V: StateView> OnOrder<'_, V> {
    pub(super) fn within_claim_deadline(&self, kind: Incident) -> Result<(), Reject> {
        let Some((seq, from_ms, what)) = claim_anchor(&self.order) else {
            // Never handed to a carrier: no deadline runs yet.
            return Ok(());
        };
        let window = self
            .view
            .config()
            .map(|c| c.claim_deadlines.window(kind))
            .unwrap_or_default();
        let deadline = from_ms.saturating_add(window);
        if self.now > deadline {
            return rej(
                Code::ClaimDeadlinePassed,
                format!(
                    "the claim deadline for {kind} disputes on order {} passed at {deadline}: {window} ms after its {what} (entry {seq}); this entry is at {}",
                    self.order.order_id, self.now
                ),
            );
        }
        Ok(())
    }
}
