//! The node-wide cap under a flood across many policies: real kernel traffic.
