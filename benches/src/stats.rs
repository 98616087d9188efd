//! Summaries of repeated measurements: the median of the rounds and their spread.

use std::fmt;

/// The values one quantity took over several rounds.
#[derive(Clone, Debug, Default)]
pub struct Rounds(Vec<f64>);

impl Rounds {
    /// Records one round's value.
    pub fn push(&mut self, value: f64) {
        self.0.push(value);
    }

    fn sorted(&self) -> Vec<f64> {
        let mut values = self.0.clone();
        values.sort_by(f64::total_cmp);
        values
    }

    /// The median (the mean of the two middle values for an even count); 0 when empty.
    pub fn median(&self) -> f64 {
        let values = self.sorted();
        match values.len() {
            0 => 0.0,
            n if n % 2 == 1 => values[n / 2],
            n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
        }
    }

    /// Half the distance between the extremes, as a fraction of the median: "± x%".
    pub fn spread(&self) -> f64 {
        let values = self.sorted();
        match (values.first(), values.last()) {
            (Some(low), Some(high)) if self.median() > 0.0 => (high - low) / 2.0 / self.median(),
            _ => 0.0,
        }
    }

    /// The largest value; 0 when empty.
    pub fn max(&self) -> f64 {
        self.sorted().last().copied().unwrap_or_default()
    }

    /// The first round's value; 0 when empty.
    pub fn first(&self) -> f64 {
        self.0.first().copied().unwrap_or_default()
    }

    /// The last round's value; 0 when empty.
    pub fn last(&self) -> f64 {
        self.0.last().copied().unwrap_or_default()
    }
}

/// "median ±spread%" with `decimals` decimals.
pub struct MedianSpread<'a>(pub &'a Rounds, pub usize);

impl fmt::Display for MedianSpread<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let MedianSpread(rounds, decimals) = self;
        write!(
            f,
            "{:.*} ±{:.0}%",
            *decimals,
            rounds.median(),
            rounds.spread() * 100.0
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_spread_of_an_odd_and_an_even_count() {
        let mut rounds = Rounds::default();
        for value in [10.0, 30.0, 20.0] {
            rounds.push(value);
        }
        assert_eq!(rounds.median(), 20.0);
        assert_eq!(rounds.spread(), 0.5);
        rounds.push(40.0);
        assert_eq!(rounds.median(), 25.0);
        assert_eq!(rounds.max(), 40.0);
        assert_eq!((rounds.first(), rounds.last()), (10.0, 40.0));
    }
}
