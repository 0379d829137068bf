//! Metrolog agent library (placeholder until the agent lands).
