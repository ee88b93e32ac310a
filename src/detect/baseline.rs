//! A consumer's baselines: bias-corrected exponentially weighted means of per-interval rates.

use super::state::Rates;

/// An exponentially weighted mean with bias correction: until it has seen many intervals it
/// is the weighted mean of those it has seen, never pulled toward an initial zero.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Ewma {
    value: f64,
    weight: f64,
}

impl Ewma {
    pub fn push(&mut self, x: f64, decay: f64) {
        self.value = decay * self.value + (1.0 - decay) * x;
        self.weight = decay * self.weight + (1.0 - decay);
    }

    pub fn push_zeros(&mut self, n: u64, decay: f64) {
        let f = decay.powf(n as f64);
        self.value *= f;
        self.weight = self.weight * f + (1.0 - f);
    }

    pub fn get(&self) -> Option<f64> {
        (self.weight > 0.0).then(|| self.value / self.weight)
    }
}

/// Request, token and spend rates as three [`Ewma`]s that share one weight: they are always
/// pushed together with the same decay, so their weights are bit-for-bit equal anyway
/// (32 bytes instead of 48).
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Baselines {
    requests: f64,
    tokens: f64,
    micro_usd: f64,
    weight: f64,
}

impl Baselines {
    pub fn push(&mut self, x: Rates, decay: f64) {
        let mix = |value: f64, x: f64| decay * value + (1.0 - decay) * x;
        self.requests = mix(self.requests, x.requests);
        self.tokens = mix(self.tokens, x.tokens);
        self.micro_usd = mix(self.micro_usd, x.micro_usd);
        self.weight = decay * self.weight + (1.0 - decay);
    }

    /// The means, once anything was pushed.
    pub fn get(&self) -> Option<Rates> {
        (self.weight > 0.0).then(|| Rates {
            requests: self.requests / self.weight,
            tokens: self.tokens / self.weight,
            micro_usd: self.micro_usd / self.weight,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_weight_gives_what_three_ewmas_give() {
        let (mut shared, mut three) = (Baselines::default(), [Ewma::default(); 3]);
        assert!(shared.get().is_none() && three[0].get().is_none());
        let decay = 0.5f64.powf(60.0 / 3600.0);
        for i in 0..500u32 {
            let x = [
                f64::from(i % 7),
                f64::from(i) * 1e3 + 0.1,
                1e9 / f64::from(i + 1),
            ];
            let rates = Rates {
                requests: x[0],
                tokens: x[1],
                micro_usd: x[2],
            };
            shared.push(rates, decay);
            three.iter_mut().zip(x).for_each(|(e, x)| e.push(x, decay));
            let got = shared.get().unwrap();
            let want = three.map(|e| e.get().unwrap());
            assert_eq!([got.requests, got.tokens, got.micro_usd], want);
        }
    }
}
