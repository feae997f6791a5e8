"""A/B experiments between model versions, the recommendation log, feedback, reports."""
