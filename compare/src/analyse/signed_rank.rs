//! The Wilcoxon signed-rank interval: the Hodges–Lehmann estimate of a
//! centre of symmetry and its exact distribution-free confidence interval,
//! from the Walsh averages.
//!
//! [`super::stats::paired_ratio_ci`] applies it to the logs of paired ratios.
//! Why this and not the sign test, and what it costs, is in the module doc
//! of [`super::stats`]; this module is the arithmetic.
//!
//! With `n` values `d₁ … dₙ`, the Walsh averages are the `M = n(n+1)/2`
//! means `(dᵢ + dⱼ)/2` for `i ≤ j`. Sorted, `A(1) ≤ … ≤ A(M)`:
//!
//! - the estimate is their median (Hodges–Lehmann);
//! - `[A(k), A(M+1-k)]` covers the centre of symmetry with probability
//!   `1 - 2·P(W⁺ ≤ k-1)`, where `W⁺` is the signed-rank statistic under the
//!   null: the sum of the ranks `1..=n`, each taken with probability ½.
//!
//! We take the largest `k` whose coverage reaches the target, as the sign
//! test does with order statistics. `P(W⁺ ≤ w)` is computed exactly (a
//! recurrence over `n`) up to [`EXACT_MAX_N`] values and by the normal
//! approximation with a continuity correction past it; the test
//! `normal_approximation_agrees_with_the_exact_law` checks the two agree
//! where they meet.
//!
//! What it assumes: the `dᵢ` are independent and symmetric about one centre
//! (continuous, so ties have probability 0). For the null "no difference"
//! between two labels whose runs are exchangeable within a pair, the log
//! ratio is symmetric about 0 whatever the noise, so the test of 1 is exact
//! without any further assumption. Under "candidate = c × reference" with
//! both runs' noise from one distribution, the log ratio is symmetric about
//! `ln c`, and the interval is exact for `c` too. Where neither holds (the
//! two sides of a ratio are different figures), the centre it estimates is
//! the pseudo-median, not the median; [`super::stats::paired_median_ratio_ci`]
//! keeps the sign-test interval for those ratios.

use super::stats::Interval;

/// Up to this many values `P(W⁺ ≤ w)` is exact; past it, the normal
/// approximation (whose error at 50 is below a tenth of a rank, see the
/// tests). The exact recurrence costs `n · n(n+1)/2` additions: 64k at 50.
pub const EXACT_MAX_N: usize = 50;

/// The chosen Walsh averages for `n` values: `[A(lower), A(M+1-lower)]`,
/// 1-based, with the exact (or, past [`EXACT_MAX_N`], approximate) coverage.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WalshRank {
    /// `k`: the rank of the lower end among the `M` Walsh averages.
    pub lower: usize,
    /// `1 - 2·P(W⁺ ≤ k-1)`.
    pub coverage: f64,
}

/// The largest `k` with coverage `1 - 2·P(W⁺ ≤ k-1) ≥ target`; `k = 1`
/// (`[min, max]` of the values) at its own, lower coverage when no `k`
/// reaches the target. `None` for fewer than 2 values.
///
/// At n = 5, `k = 1` covers `1 - 2/32 = 93.75%`, the same interval and
/// level as the sign test: with 5 pairs the magnitudes cannot help yet.
pub fn walsh_rank(n: usize, target: f64) -> Option<WalshRank> {
    if n < 2 {
        return None;
    }
    let cdf = SignedRankLaw::new(n);
    let coverage = |k: usize| 1.0 - 2.0 * cdf.at_most(k - 1);
    let total = n * (n + 1) / 2;
    let mut best = WalshRank {
        lower: 1,
        coverage: coverage(1),
    };
    for k in 2..=total / 2 {
        let c = coverage(k);
        if c < target {
            break;
        }
        best = WalshRank { lower: k, coverage: c };
    }
    Some(best)
}

/// The Hodges–Lehmann estimate of the finite values' centre with its
/// signed-rank interval at the first coverage of at least `target`
/// ([`walsh_rank`]). `None` for fewer than 2 finite values.
pub fn hodges_lehmann_ci(xs: &[f64], target: f64) -> Option<Interval> {
    let finite: Vec<f64> = xs.iter().copied().filter(|x| x.is_finite()).collect();
    let rank = walsh_rank(finite.len(), target)?;
    let walsh = walsh_averages(&finite);
    let m = walsh.len();
    Some(Interval {
        lo: walsh[rank.lower - 1],
        mid: (walsh[(m - 1) / 2] + walsh[m / 2]) / 2.0,
        hi: walsh[m - rank.lower],
        level: rank.coverage,
        n: finite.len(),
    })
}

/// Every `(xᵢ + xⱼ)/2` with `i ≤ j`, sorted.
pub fn walsh_averages(xs: &[f64]) -> Vec<f64> {
    let mut w = Vec::with_capacity(xs.len() * (xs.len() + 1) / 2);
    for (i, a) in xs.iter().enumerate() {
        for b in &xs[i..] {
            w.push((a + b) / 2.0);
        }
    }
    w.sort_by(f64::total_cmp);
    w
}

/// The null law of `W⁺` for `n` values: exact up to [`EXACT_MAX_N`], the
/// normal approximation past it.
enum SignedRankLaw {
    /// `cdf[w] = P(W⁺ ≤ w)`, `w = 0..=n(n+1)/2`.
    Exact {
        cdf: Vec<f64>,
    },
    Normal {
        mean: f64,
        sd: f64,
    },
}

impl SignedRankLaw {
    fn new(n: usize) -> SignedRankLaw {
        let total = n * (n + 1) / 2;
        if n > EXACT_MAX_N {
            let var = (n * (n + 1) * (2 * n + 1)) as f64 / 24.0;
            return SignedRankLaw::Normal {
                mean: total as f64 / 2.0,
                sd: var.sqrt(),
            };
        }
        // pmf of the sum over ranks 1..=i, each in with probability ½:
        // adding rank i mixes the law with itself shifted by i.
        let mut pmf = vec![0.0; total + 1];
        pmf[0] = 1.0;
        for i in 1..=n {
            let top = i * (i + 1) / 2;
            for w in (0..=top).rev() {
                let shifted = if w >= i { pmf[w - i] } else { 0.0 };
                pmf[w] = 0.5 * (pmf[w] + shifted);
            }
        }
        let mut acc = 0.0_f64;
        let cdf = pmf
            .into_iter()
            .map(|p| {
                acc += p;
                acc.min(1.0)
            })
            .collect();
        SignedRankLaw::Exact { cdf }
    }

    /// `P(W⁺ ≤ w)`.
    fn at_most(&self, w: usize) -> f64 {
        match self {
            SignedRankLaw::Exact { cdf } => cdf[w.min(cdf.len() - 1)],
            SignedRankLaw::Normal { mean, sd } => standard_normal_cdf((w as f64 + 0.5 - mean) / sd),
        }
    }
}

/// `Φ(z)` from `erfc` (Numerical Recipes' `erfcc`, relative error below
/// 1.2e-7 everywhere): far finer than the rank steps it decides.
fn standard_normal_cdf(z: f64) -> f64 {
    let x = -z / std::f64::consts::SQRT_2;
    let t = 1.0 / (1.0 + 0.5 * x.abs());
    let poly = -x * x - 1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98 + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let erfc = t * poly.exp();
    0.5 * if x >= 0.0 { erfc } else { 2.0 - erfc }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// P(W⁺ ≤ w) by listing all 2ⁿ sign patterns.
    fn brute_cdf(n: usize, w: usize) -> f64 {
        let hits = (0u32..1 << n)
            .filter(|mask| (1..=n).filter(|r| mask & (1 << (r - 1)) != 0).sum::<usize>() <= w)
            .count();
        hits as f64 / (1u64 << n) as f64
    }

    #[test]
    fn exact_law_matches_enumeration() {
        for n in 1..=12 {
            let law = SignedRankLaw::new(n);
            for w in 0..=n * (n + 1) / 2 {
                assert!((law.at_most(w) - brute_cdf(n, w)).abs() < 1e-12, "n = {n}, w = {w}");
            }
        }
    }

    #[test]
    fn critical_values_match_the_published_table() {
        // Two-sided 5% lower critical values of W⁺ (reject when W⁺ ≤ T), as
        // tabled in e.g. Hollander & Wolfe: T = k - 1.
        let table = [
            (6, 0),
            (7, 2),
            (8, 3),
            (9, 5),
            (10, 8),
            (11, 10),
            (12, 13),
            (13, 17),
            (14, 21),
            (15, 25),
            (16, 29),
            (17, 34),
            (18, 40),
            (19, 46),
            (20, 52),
            (25, 89),
        ];
        for (n, t) in table {
            let rank = walsh_rank(n, 0.95).unwrap();
            assert_eq!(rank.lower - 1, t, "n = {n}");
            assert!(rank.coverage >= 0.95, "n = {n}");
        }
        // The table in `stats`'s module doc (run with --nocapture).
        for n in 5..=20 {
            let (r95, r99) = (walsh_rank(n, 0.95).unwrap(), walsh_rank(n, 0.99).unwrap());
            println!(
                "| {n} | {} | A({}), A({}) | {:.2}% | A({}), A({}) | {:.2}% |",
                n * (n + 1) / 2,
                r95.lower,
                n * (n + 1) / 2 + 1 - r95.lower,
                100.0 * r95.coverage,
                r99.lower,
                n * (n + 1) / 2 + 1 - r99.lower,
                100.0 * r99.coverage
            );
        }
        // n = 5: nothing reaches 95%, so [min, max] at 1 - 2/32.
        assert_eq!(
            walsh_rank(5, 0.95),
            Some(WalshRank {
                lower: 1,
                coverage: 0.9375
            })
        );
        assert_eq!(walsh_rank(2, 0.95).unwrap().coverage, 0.5);
        assert_eq!(walsh_rank(1, 0.95), None);
    }

    #[test]
    fn normal_approximation_agrees_with_the_exact_law() {
        // At the seam the exact and approximate laws pick the same rank for
        // the levels used here, and their tails differ by little.
        for n in [30, 40, EXACT_MAX_N] {
            let exact = SignedRankLaw::new(n);
            let sd = ((n * (n + 1) * (2 * n + 1)) as f64 / 24.0).sqrt();
            let normal = SignedRankLaw::Normal {
                mean: (n * (n + 1) / 2) as f64 / 2.0,
                sd,
            };
            for w in 0..=n * (n + 1) / 4 {
                let (e, a) = (exact.at_most(w), normal.at_most(w));
                assert!((e - a).abs() < 0.004, "n = {n}, w = {w}: {e} vs {a}");
            }
        }
        let past = walsh_rank(EXACT_MAX_N + 1, 0.95).unwrap();
        assert!(past.coverage > 0.945 && past.coverage < 0.96, "{past:?}");
        assert!((standard_normal_cdf(1.959_964) - 0.975).abs() < 1e-6);
        assert!((standard_normal_cdf(-1.0) - 0.158_655_25).abs() < 1e-6);
    }

    #[test]
    fn hodges_lehmann_on_a_small_example() {
        // Walsh averages of 1, 2, 4: 1, 1.5, 2, 2.5, 3, 4; median 2.25.
        let iv = hodges_lehmann_ci(&[4.0, 1.0, 2.0], 0.95).unwrap();
        assert_eq!((iv.lo, iv.mid, iv.hi, iv.level, iv.n), (1.0, 2.25, 4.0, 0.75, 3));
        assert_eq!(walsh_averages(&[1.0, 2.0, 4.0]), vec![1.0, 1.5, 2.0, 2.5, 3.0, 4.0]);
        // Non-finite values are dropped before counting.
        let iv = hodges_lehmann_ci(&[1.0, f64::NAN, 2.0], 0.95).unwrap();
        assert_eq!(iv.n, 2);
        assert_eq!(hodges_lehmann_ci(&[1.0, f64::INFINITY], 0.95), None);
        // One wild value moves the estimate by little.
        let calm = hodges_lehmann_ci(&[0.1, -0.05, 0.02, 0.04, -0.01, 0.03, 0.0], 0.95).unwrap();
        let wild = hodges_lehmann_ci(&[0.1, -0.05, 0.02, 0.04, -0.01, 0.03, 9.0], 0.95).unwrap();
        assert!((wild.mid - calm.mid).abs() < 0.03, "{calm:?} {wild:?}");
    }
}
