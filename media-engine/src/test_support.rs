//! Helpers of the crate's unit tests.

/// A small deterministic PRNG (xorshift64: shifts 13, 7, 17) for the bounded mutation
/// tests, so that a failure reproduces from its seed.
pub(crate) struct XorShift(pub u64);

impl XorShift {
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}
