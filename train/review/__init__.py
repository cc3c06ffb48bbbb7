"""Report-guided review: where a trained model and the reports disagree (`rsuper audit`), case pages a person can
read, and the active-learning round that turns the ranking into masks to draw (docs/review.md)."""
