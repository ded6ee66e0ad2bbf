//! The acceptance rules' vocabulary: what a rule can do with a line, and what the deadline
//! policy can do with an order in review. The decide stage applies them; config names them.

/// What a rule does with a line it matches, and what the deadline does with an order in review.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleAction {
    Accept,
    Refuse,
    /// Leave it to a person: the whole order waits in the review queue, no OR21.
    Review,
}

impl RuleAction {
    pub fn as_str(self) -> &'static str {
        match self {
            RuleAction::Accept => "accept",
            RuleAction::Refuse => "refuse",
            RuleAction::Review => "review",
        }
    }
}
