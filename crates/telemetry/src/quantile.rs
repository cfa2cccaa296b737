//! Quantiles from a latency histogram's bucket counts, interpolated linearly within the
//! bucket that holds the rank (as Prometheus' `histogram_quantile` does).

/// The `q` quantile (0..1) of `counts`, where `counts[i]` holds the values up to
/// `bounds[i]` (and above `bounds[i-1]`), and a last extra count holds those above all
/// bounds (reported as the last bound). None when there is no value.
pub fn quantile(bounds: &[f64], counts: &[u64], q: f64) -> Option<f64> {
    let total: u64 = counts.iter().sum();
    if total == 0 || bounds.is_empty() {
        return None;
    }
    let rank = q.clamp(0.0, 1.0) * total as f64;
    let mut below = 0u64;
    for (i, &n) in counts.iter().enumerate() {
        if n > 0 && (below + n) as f64 >= rank {
            let Some(&upper) = bounds.get(i) else {
                return bounds.last().copied();
            };
            let lower = if i == 0 { 0.0 } else { bounds[i - 1] };
            let within = (rank - below as f64) / n as f64;
            return Some(lower + (upper - lower) * within.clamp(0.0, 1.0));
        }
        below += n;
    }
    bounds.last().copied()
}

#[cfg(test)]
mod tests {
    use super::quantile;

    #[test]
    fn interpolates_within_the_bucket() {
        let bounds = [1.0, 2.0, 4.0];
        // 10 values up to 1, 10 in (1, 2], none above.
        let counts = [10, 10, 0, 0];
        assert_eq!(quantile(&bounds, &counts, 0.5), Some(1.0));
        assert_eq!(quantile(&bounds, &counts, 0.75), Some(1.5));
        assert_eq!(quantile(&bounds, &counts, 1.0), Some(2.0));
        assert_eq!(quantile(&bounds, &[0, 0, 0, 5], 0.99), Some(4.0));
        assert_eq!(quantile(&bounds, &[0, 0, 0, 0], 0.5), None);
    }
}
