//! Simulated comparisons for the tests that check the statistical claims
//! (A/A rates, power, the stopping rule): a seeded generator, so every
//! figure quoted in a module doc is reproduced exactly by its test.

/// SplitMix64: a tiny seeded generator, so every simulated trial is the
/// same on every machine and the rates quoted in the module docs can be
/// reproduced exactly.
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Uniform in [1 - spread, 1 + spread].
    pub fn factor(&mut self, spread: f64) -> f64 {
        1.0 + spread * (2.0 * self.unit() - 1.0)
    }
    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.unit(); // (0, 1]: ln is finite
        let u2 = self.unit();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
}

/// The machine model of the simulations: in each repetition a candidate run
/// and a reference run share a drift factor uniform in ±25%, and each run
/// has its own log-normal noise of SD `sigma` on top; the candidate costs
/// `true_ratio` times the reference.
#[derive(Debug, Clone, Copy)]
pub struct Machine {
    pub sigma: f64,
    pub true_ratio: f64,
}

impl Machine {
    /// One repetition's pair: (candidate, reference).
    pub fn pair(&self, rng: &mut SplitMix64) -> (f64, f64) {
        let drift = rng.factor(0.25);
        let cand = 100.0 * self.true_ratio * drift * (self.sigma * rng.normal()).exp();
        let refr = 100.0 * drift * (self.sigma * rng.normal()).exp();
        (cand, refr)
    }

    /// The ratios of `n` repetitions.
    pub fn ratios(&self, rng: &mut SplitMix64, n: usize) -> Vec<f64> {
        (0..n)
            .map(|_| {
                let (c, r) = self.pair(rng);
                c / r
            })
            .collect()
    }
}
