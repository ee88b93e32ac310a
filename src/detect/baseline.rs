//! A consumer's baselines: bias-corrected exponentially weighted means of per-interval rates.
//!
//! Stored as `f32` (a million active consumers hold four means each), computed in `f64`.
//! Each update rounds to 24 bits, so a mean can stop following a change smaller than about
//! 2^-24 / (1 - decay) of its value: 5 × 10^-6 with the default 60 s interval and 1 h
//! half-life, far below any detector factor (and below the 3 decimals evidence shows).

/// Request, token and spend rates per second: a short window's, or a baseline.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(super) struct Rates {
    pub requests: f64,
    pub tokens: f64,
    pub micro_usd: f64,
}

/// An exponentially weighted mean with bias correction: until it has seen many intervals it
/// is the weighted mean of those it has seen, never pulled toward an initial zero.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Ewma {
    value: f32,
    weight: f32,
}

impl Ewma {
    pub fn push(&mut self, x: f64, decay: f64) {
        self.value = (decay * f64::from(self.value) + (1.0 - decay) * x) as f32;
        self.weight = (decay * f64::from(self.weight) + (1.0 - decay)) as f32;
    }

    pub fn push_zeros(&mut self, n: u64, decay: f64) {
        let f = decay.powf(n as f64);
        self.value = (f64::from(self.value) * f) as f32;
        self.weight = (f64::from(self.weight) * f + (1.0 - f)) as f32;
    }

    pub fn get(&self) -> Option<f64> {
        (self.weight > 0.0).then(|| f64::from(self.value) / f64::from(self.weight))
    }
}

/// Request, token and spend rates as three [`Ewma`]s that share one weight: they are always
/// pushed together with the same decay, so their weights are bit-for-bit equal anyway
/// (16 bytes instead of 24).
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Baselines {
    requests: f32,
    tokens: f32,
    micro_usd: f32,
    weight: f32,
}

impl Baselines {
    pub fn push(&mut self, x: Rates, decay: f64) {
        let mix = |value: f32, x: f64| (decay * f64::from(value) + (1.0 - decay) * x) as f32;
        self.requests = mix(self.requests, x.requests);
        self.tokens = mix(self.tokens, x.tokens);
        self.micro_usd = mix(self.micro_usd, x.micro_usd);
        self.weight = (decay * f64::from(self.weight) + (1.0 - decay)) as f32;
    }

    /// The means, once anything was pushed.
    pub fn get(&self) -> Option<Rates> {
        let weight = f64::from(self.weight);
        (weight > 0.0).then(|| Rates {
            requests: f64::from(self.requests) / weight,
            tokens: f64::from(self.tokens) / weight,
            micro_usd: f64::from(self.micro_usd) / weight,
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

    /// Against the same arithmetic kept in `f64`: within the documented resolution.
    #[test]
    fn single_precision_tracks_double_precision_closely() {
        let decay = 0.5f64.powf(60.0 / 3600.0);
        let (mut narrow, mut wide) = (Ewma::default(), (0.0f64, 0.0f64));
        let bound = 2f64.powi(-24) / (1.0 - decay);
        for i in 0..20_000u32 {
            let x = 1e6 * (1.0 + f64::from(i % 97) / 97.0) + f64::from(i);
            narrow.push(x, decay);
            wide = (
                decay * wide.0 + (1.0 - decay) * x,
                decay * wide.1 + (1.0 - decay),
            );
            if i % 1000 == 999 {
                narrow.push_zeros(5, decay);
                let f = decay.powi(5);
                wide = (wide.0 * f, wide.1 * f + (1.0 - f));
            }
            let (got, want) = (narrow.get().unwrap(), wide.0 / wide.1);
            assert!(((got - want) / want).abs() < bound, "{i}: {got} vs {want}");
        }
    }
}
