//! sbcd library (work in progress).
