//! How long an automatic ban lasts: the first ban of a key lasts `duration`, each later
//! one `factor` times the one before, up to `max_duration`; a key whose last ban is
//! older than `forget_after` starts again at `duration` (design.md, `[[auto_ban]]`).

/// The escalation of one `[[auto_ban]]` rule, in whole seconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Escalation {
    /// The first ban, seconds (≥ 1).
    pub first: u32,
    /// Each later ban lasts this many times the previous one (≥ 1.0).
    pub factor: f64,
    /// The longest a ban may last, seconds (≥ `first`).
    pub max: u32,
    /// An offence older than this many seconds no longer escalates.
    pub forget_after: u32,
}

/// What a rule remembers of a key it banned before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Offences {
    /// Bans set on the key so far (since it was last forgotten).
    pub bans: u32,
    /// When the last of them was set, Unix seconds.
    pub last: u32,
}

impl Escalation {
    /// The length of the ban to set at `now` on a key with `before` (its earlier
    /// offences, if any), and the offences to remember for it afterwards.
    pub fn next(&self, before: Option<Offences>, now: u32) -> (u32, Offences) {
        let earlier = before
            .filter(|o| now.saturating_sub(o.last) <= self.forget_after)
            .map_or(0, |o| o.bans);
        let seconds = self.duration(earlier);
        let after = Offences {
            bans: earlier.saturating_add(1),
            last: now,
        };
        (seconds, after)
    }

    /// The length of a ban after `earlier` bans of the same key: `first × factor^earlier`,
    /// at most `max`, whole seconds rounded down, never less than `first`.
    pub fn duration(&self, earlier: u32) -> u32 {
        let factor = if self.factor.is_finite() {
            self.factor.max(1.0)
        } else {
            1.0
        };
        let max = self.max.max(self.first);
        let exponent = i32::try_from(earlier).unwrap_or(i32::MAX);
        let seconds = f64::from(self.first) * factor.powi(exponent);
        if seconds.is_finite() && seconds < f64::from(max) {
            // In range: between `first` and `max`, so the cast cannot truncate.
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let whole = seconds.floor() as u32;
            whole.clamp(self.first, max)
        } else {
            max
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ESCALATION: Escalation = Escalation {
        first: 600,
        factor: 2.0,
        max: 86_400,
        forget_after: 86_400,
    };

    #[test]
    fn each_repeat_ban_lasts_factor_times_the_previous_up_to_the_maximum() {
        let lengths: Vec<u32> = (0..10).map(|n| ESCALATION.duration(n)).collect();
        assert_eq!(
            lengths,
            [600, 1200, 2400, 4800, 9600, 19_200, 38_400, 76_800, 86_400, 86_400]
        );
        assert_eq!(ESCALATION.duration(u32::MAX), 86_400);
    }

    #[test]
    fn odd_factors_stay_in_range() {
        let flat = Escalation {
            factor: 1.0,
            ..ESCALATION
        };
        assert_eq!(flat.duration(50), 600);
        let weird = Escalation {
            factor: f64::NAN,
            ..ESCALATION
        };
        assert_eq!(weird.duration(3), 600);
        let shrinking = Escalation {
            factor: 0.5,
            ..ESCALATION
        };
        assert_eq!(shrinking.duration(3), 600);
        let fractional = Escalation {
            factor: 1.5,
            ..ESCALATION
        };
        assert_eq!(fractional.duration(1), 900);
        let inverted = Escalation {
            max: 10,
            ..ESCALATION
        };
        assert_eq!(inverted.duration(0), 600);
    }

    #[test]
    fn offences_older_than_forget_after_start_over() {
        let t0 = 1_800_000_000;
        let (first, after_first) = ESCALATION.next(None, t0);
        assert_eq!((first, after_first), (600, Offences { bans: 1, last: t0 }));
        let (second, after_second) = ESCALATION.next(Some(after_first), t0 + 3600);
        assert_eq!(second, 1200);
        assert_eq!(after_second.bans, 2);
        // Exactly forget_after later still counts; one second more starts over.
        assert_eq!(
            ESCALATION.next(Some(after_second), t0 + 3600 + 86_400).0,
            2400
        );
        let (fresh, after_fresh) = ESCALATION.next(Some(after_second), t0 + 3600 + 86_401);
        assert_eq!((fresh, after_fresh.bans), (600, 1));
    }
}
