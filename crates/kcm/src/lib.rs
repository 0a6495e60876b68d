//! kcm runtime (in progress).
