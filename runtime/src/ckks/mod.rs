//! hecc's own RNS-CKKS implementation.
