//! Metrolog server library.
