//! MaxMind DB files (`.mmdb`): recognising one, and reading every network in it.
//!
//! GeoLite2 databases and compatible ones (DB-IP's Lite databases) share one binary
//! format: a search tree over address bits whose leaves point at records in a data
//! section, followed by a metadata section. Rule inputs never look addresses up in the
//! file itself; they walk every network in it once, at load, and store the result in
//! their own tables, so a lookup costs the same whatever format the data came in.
//!
//! This module knows the file format, not what the records mean. The caller names the
//! field it wants and the type that field decodes to: the IP-to-ASN tables
//! ([`super::asn`]) read `autonomous_system_number` as a `u32`; a country database
//! (GeoLite2-Country, the same format) would read `country.iso_code` as a `String` with
//! the same walk.
//!
//! - [`is_mmdb`]: the metadata marker `\xAB\xCD\xEFMaxMind.com` within the last 128 KiB
//!   (the format's limit for the metadata section) makes bytes a MaxMind DB.
//! - [`is_tar`]: MaxMind distributes its databases as `.tar.gz` archives
//!   (`GeoLite2-ASN_<date>.tar.gz`); [`TAR_MESSAGE`] asks for the `.mmdb` inside.
//! - [`MaxMindDb::open`] reads a database held in memory (a MaxMind DB needs random
//!   access, so it is held whole), and [`MaxMindDb::for_each_network`] walks it.
//!
//! A MaxMind DB cannot hold overlapping networks: its writer has already split a wide
//! allocation around the narrower ones inside it, so the walk yields disjoint networks.

use std::collections::HashMap;
use std::fmt;

use ipnet::IpNet;
use maxminddb::{PathElement, Reader, WithinOptions};
use serde::de::DeserializeOwned;

/// The marker in front of a MaxMind DB's metadata section.
pub const MARKER: &[u8] = b"\xab\xcd\xefMaxMind.com";

/// The metadata section, marker included, is at most this long (MaxMind DB spec), so the
/// marker sits within this many bytes of the end of the file.
pub const METADATA_MAX: usize = 128 * 1024;

/// The error for a tar archive, the way MaxMind distributes its databases.
pub const TAR_MESSAGE: &str = "a tar archive, not a database: extract the .mmdb file from it \
                               (tar -xzf) and name that file";

/// Whether `bytes` is a MaxMind DB: the metadata marker within the last 128 KiB.
pub fn is_mmdb(bytes: &[u8]) -> bool {
    let tail = bytes
        .get(bytes.len().saturating_sub(METADATA_MAX)..)
        .unwrap_or(bytes);
    tail.windows(MARKER.len()).any(|w| w == MARKER)
}

/// Whether `bytes` is a tar archive (POSIX `ustar` magic at offset 257).
pub fn is_tar(bytes: &[u8]) -> bool {
    bytes.get(257..262) == Some(b"ustar".as_slice())
}

/// A MaxMind DB held in memory, opened for walking its networks.
pub struct MaxMindDb<'a> {
    /// The parsed metadata and search tree over `bytes`.
    reader: Reader<&'a [u8]>,
}

impl<'a> MaxMindDb<'a> {
    /// Opens the database whose whole content is `bytes`.
    ///
    /// # Errors
    ///
    /// [`MmdbError`] when the metadata is missing or invalid (a truncated or corrupt file).
    pub fn open(bytes: &'a [u8]) -> Result<MaxMindDb<'a>, MmdbError> {
        let reader = Reader::from_source(bytes).map_err(|e| MmdbError::new(&e))?;
        Ok(MaxMindDb { reader })
    }

    /// The `database_type` of the metadata, such as `GeoLite2-ASN`.
    pub fn database_type(&self) -> &str {
        &self.reader.metadata().database_type
    }

    /// Walks every network that has a record and calls `visit` with the network and the
    /// value of `field` in its record, decoded as a `T`.
    ///
    /// `field` is a path of map keys into the record: `["autonomous_system_number"]`,
    /// `["country", "iso_code"]`. A record without it is skipped (counted in
    /// [`Walked::networks`] only). Records are shared by many networks; each is decoded
    /// once. In an IPv6 database the networks of its IPv4 subtree (stored under `::/96`)
    /// come out as IPv4 networks, each once: the subtree's aliases (`::ffff:0:0/96`,
    /// `2002::/16`) are skipped.
    ///
    /// # Errors
    ///
    /// [`MmdbError`] for a corrupt search tree, a `field` that does not decode as a `T`
    /// (`record of 192.0.2.0/24: autonomous_system_number: ...`), or an error `visit`
    /// returns (`network 192.0.2.0/24: ...`). The walk stops at the first error.
    pub fn for_each_network<T, E>(
        &self,
        field: &[&str],
        mut visit: impl FnMut(IpNet, T) -> Result<(), E>,
    ) -> Result<Walked, MmdbError>
    where
        T: DeserializeOwned + Clone,
        E: fmt::Display,
    {
        let invalid = |e: &dyn fmt::Display| MmdbError::new(e);
        let path: Vec<PathElement<'_>> = field.iter().map(|key| PathElement::Key(key)).collect();
        let label = field.join(".");
        // Default options: skip the IPv4 aliases (::ffff:0:0/96, 2002::/16) of an IPv6
        // database's IPv4 subtree, and networks without data.
        let networks = self
            .reader
            .networks(WithinOptions::default())
            .map_err(|e| invalid(&e))?;
        // Records are shared by many networks; decode each one once.
        let mut decoded: HashMap<usize, Option<T>> = HashMap::new();
        let mut walked = Walked::default();
        for item in networks {
            let found = item.map_err(|e| invalid(&e))?;
            let net = found.network().map_err(|e| invalid(&e))?;
            let value = match found.offset() {
                Some(offset) => match decoded.get(&offset) {
                    Some(value) => value.clone(),
                    None => {
                        let value = found
                            .decode_path::<T>(&path)
                            .map_err(|e| invalid(&format_args!("record of {net}: {label}: {e}")))?;
                        decoded.insert(offset, value.clone());
                        value
                    }
                },
                None => None,
            };
            walked.networks = walked.networks.saturating_add(1);
            let Some(value) = value else { continue };
            walked.with_field = walked.with_field.saturating_add(1);
            let net = IpNet::new(net.network(), net.prefix())
                .map_err(|e| invalid(&format_args!("network {net}: {e}")))?;
            visit(net, value).map_err(|e| invalid(&format_args!("network {net}: {e}")))?;
        }
        Ok(walked)
    }
}

impl fmt::Debug for MaxMindDb<'_> {
    // The reader's own Debug prints the whole file; show the metadata's type only.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MaxMindDb")
            .field("database_type", &self.database_type())
            .finish()
    }
}

/// What [`MaxMindDb::for_each_network`] went through.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Walked {
    /// Networks with a record, whether or not the record had the field.
    pub networks: usize,
    /// Networks whose record had the field: those passed to `visit`.
    pub with_field: usize,
}

/// A MaxMind DB that cannot be read: displayed as `invalid MaxMind DB: <reason>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MmdbError(String);

impl MmdbError {
    /// An error for `reason`.
    fn new(reason: &dyn fmt::Display) -> Self {
        Self(reason.to_string())
    }
}

impl fmt::Display for MmdbError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid MaxMind DB: {}", self.0)
    }
}

impl std::error::Error for MmdbError {}
