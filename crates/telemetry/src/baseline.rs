//! A learned baseline of one signal (a route's rate, error ratio or p99 latency): additive
//! Holt-Winters smoothing of its level, trend and, if asked, a season of slots (the hour
//! of the day, say), with a robust scale (the smoothed absolute residual), plus a slow
//! reference level that a slow leak pulls the fast level away from.
//!
//! Everything is updated once per tick, off the hot path, in constant memory. A value
//! judged anomalous is learned with a small weight only, so an incident cannot teach
//! the baseline that it is normal.

/// A seasonal pattern: `slots` slots of `slot_ticks` ticks each, repeating.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Season {
    pub slot_ticks: u32,
    pub slots: u32,
}

/// How fast a baseline learns (weights per tick).
#[derive(Debug, Clone, PartialEq)]
pub struct BaselineConfig {
    /// Level smoothing.
    pub alpha: f64,
    /// Trend smoothing (for forecasts).
    pub beta: f64,
    /// Seasonal smoothing, per tick spent in a slot.
    pub gamma: f64,
    /// Smoothing of the absolute residual (the scale).
    pub scale_alpha: f64,
    /// Smoothing of the medium level and of the slow reference it is compared with
    /// (drift detection).
    pub medium_alpha: f64,
    pub slow_alpha: f64,
    /// Trend damping per step ahead in forecasts.
    pub damping: f64,
    pub season: Option<Season>,
}

impl Default for BaselineConfig {
    fn default() -> Self {
        BaselineConfig {
            alpha: 0.05,
            beta: 0.01,
            gamma: 0.01,
            scale_alpha: 0.03,
            medium_alpha: 0.01,
            slow_alpha: 0.001,
            damping: 0.98,
            season: None,
        }
    }
}

/// One signal's baseline.
#[derive(Debug, Clone)]
pub struct Baseline {
    level: f64,
    trend: f64,
    /// Smoothed absolute residual.
    deviation: f64,
    /// A level steadier than `level` (a drift's measure), and the slow reference.
    medium: f64,
    slow: f64,
    seasonal: Vec<f64>,
    seen: u64,
}

impl Baseline {
    pub fn new(cfg: &BaselineConfig) -> Self {
        Baseline {
            level: 0.0,
            trend: 0.0,
            deviation: 0.0,
            medium: 0.0,
            slow: 0.0,
            seasonal: vec![0.0; cfg.season.map_or(0, |s| s.slots as usize)],
            seen: 0,
        }
    }

    /// Ticks learned so far.
    pub fn seen(&self) -> u64 {
        self.seen
    }

    fn slot(cfg: &BaselineConfig, tick: u64) -> Option<usize> {
        let s = cfg.season?;
        Some(((tick / s.slot_ticks.max(1) as u64) % s.slots.max(1) as u64) as usize)
    }

    fn seasonal_at(&self, cfg: &BaselineConfig, tick: u64) -> f64 {
        Self::slot(cfg, tick).map_or(0.0, |i| self.seasonal[i])
    }

    /// The value expected at `tick`.
    pub fn expected(&self, cfg: &BaselineConfig, tick: u64) -> f64 {
        (self.level + self.seasonal_at(cfg, tick)).max(0.0)
    }

    /// The typical size of a residual (about one standard deviation for normal noise).
    pub fn scale(&self) -> f64 {
        1.25 * self.deviation
    }

    /// The medium level (season removed) and the slow reference level.
    pub fn levels(&self) -> (f64, f64) {
        (self.medium, self.slow)
    }

    /// The value forecast `ahead` ticks after `tick`: level, damped trend and season.
    pub fn forecast(&self, cfg: &BaselineConfig, tick: u64, ahead: u64) -> f64 {
        let mut trend = 0.0;
        let mut phi = 1.0;
        for _ in 0..ahead {
            phi *= cfg.damping;
            trend += phi * self.trend;
        }
        (self.level + trend + self.seasonal_at(cfg, tick + ahead)).max(0.0)
    }

    /// Learns `x` seen at `tick`, with `weight` (1: normal; near 0: an anomaly, barely
    /// learned); the slow reference learns too unless `hold` (while a drift is judged).
    /// While young, it learns as a running mean, so it is usable quickly.
    pub fn learn(&mut self, cfg: &BaselineConfig, tick: u64, x: f64, weight: f64, hold: bool) {
        if !x.is_finite() {
            return;
        }
        self.seen += 1;
        if self.seen == 1 {
            self.level = x;
            self.medium = x;
            self.slow = x;
            return;
        }
        let young = 1.0 / self.seen as f64;
        let w = weight.clamp(0.0, 1.0);
        let a = cfg.alpha.max(young) * w;
        let season = self.seasonal_at(cfg, tick);
        let residual = x - self.level - season;
        self.deviation += cfg.scale_alpha.max(young) * w * (residual.abs() - self.deviation);
        let before = self.level;
        self.level += a * (x - season - self.level);
        self.trend += cfg.beta * w * ((self.level - before) - self.trend);
        self.medium += cfg.medium_alpha.max(young) * w * (self.level - self.medium);
        if !hold {
            self.slow += cfg.slow_alpha.max(young) * w * (self.medium - self.slow);
        }
        if let Some(i) = Self::slot(cfg, tick) {
            let s = &mut self.seasonal[i];
            *s += cfg.gamma * w * ((x - self.level) - *s);
        }
    }

    /// Takes `x` as the new normal (after a lasting change): level and reference jump to
    /// it, the scale is kept.
    pub fn reset_to(&mut self, cfg: &BaselineConfig, tick: u64, x: f64) {
        let season = self.seasonal_at(cfg, tick);
        self.level = x - season;
        self.medium = self.level;
        self.slow = self.level;
        self.trend = 0.0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn learns_a_level_and_its_noise() {
        let cfg = BaselineConfig::default();
        let mut b = Baseline::new(&cfg);
        let mut rng = fastrand::Rng::with_seed(7);
        for t in 0..2000 {
            b.learn(&cfg, t, 100.0 + (rng.f64() - 0.5) * 20.0, 1.0, false);
        }
        assert!((b.expected(&cfg, 2000) - 100.0).abs() < 3.0, "{b:?}");
        // Uniform noise of width 20: mean absolute deviation 5, scale about 6.
        assert!((4.0..9.0).contains(&b.scale()), "{b:?}");
    }

    #[test]
    fn an_anomaly_learned_with_little_weight_moves_it_little() {
        let cfg = BaselineConfig::default();
        let mut b = Baseline::new(&cfg);
        for t in 0..500 {
            b.learn(&cfg, t, 10.0, 1.0, false);
        }
        for t in 500..530 {
            b.learn(&cfg, t, 100.0, 0.02, false);
        }
        assert!(b.expected(&cfg, 530) < 15.0, "{b:?}");
    }

    #[test]
    fn learns_a_season_and_forecasts_it() {
        let cfg = BaselineConfig {
            gamma: 0.2,
            season: Some(Season {
                slot_ticks: 10,
                slots: 6,
            }),
            ..BaselineConfig::default()
        };
        let mut b = Baseline::new(&cfg);
        // A square wave: 50 in the first half of each 60-tick cycle, 150 in the second.
        let value = |t: u64| if (t % 60) < 30 { 50.0 } else { 150.0 };
        for t in 0..6000 {
            b.learn(&cfg, t, value(t), 1.0, false);
        }
        for t in [6005, 6035] {
            let e = b.expected(&cfg, t);
            assert!((e - value(t)).abs() < 15.0, "at {t}: {e} {b:?}");
        }
        let f = b.forecast(&cfg, 6000, 40);
        assert!((f - 150.0).abs() < 15.0, "forecast {f}");
    }

    #[test]
    fn a_trend_is_forecast() {
        let cfg = BaselineConfig {
            beta: 0.1,
            ..BaselineConfig::default()
        };
        let mut b = Baseline::new(&cfg);
        for t in 0..1000 {
            b.learn(&cfg, t, t as f64, 1.0, false);
        }
        assert!(b.forecast(&cfg, 1000, 10) > b.expected(&cfg, 1000) + 5.0);
    }
}
