//! Runtime bans: targets (addresses, networks, AS numbers) denied until an expiry,
//! outside the reloadable rule set so that a reload never drops one.
//!
//! This module owns what a ban is ([`Target`], [`Ban`]) and the store that answers "is
//! this source banned, by what, until when" in a time independent of the number of bans
//! ([`BanStore`]), the state file that carries them over a restart ([`state`]), and how
//! long an automatic ban of a repeat offender lasts ([`Escalation`]), and the
//! `[[auto_ban]]` rules that count denies per key and say when to ban ([`AutoBanRule`]).
//! Who
//! sets bans (the admin API, `[[auto_ban]]`, the fleet) and how the request path reads
//! them concurrently are the callers'.

mod auto_ban;
mod escalation;
mod settings;
pub mod state;
mod store;
mod target;

pub use auto_ban::{AutoBanRule, AutoBanSettings, BanKey, Trigger};
pub use escalation::{Escalation, Offences};
pub use settings::BanSettings;
pub use store::{AddError, Added, Ban, BanStore, Hit};
pub use target::{Target, TargetError};

#[cfg(test)]
mod tests;
