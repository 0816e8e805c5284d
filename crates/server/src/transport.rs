//! (placeholder; being implemented)
