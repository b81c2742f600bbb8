//! `GENERIC`, as the distributed-signing profile of the Remote Signing API defines it (draft,
//! ethereum/remote-signing-api PR #29): the caller sends an SSZ object root and a consensus
//! domain, both already computed, and the signing root is `hash_tree_root(SigningData)`, that is
//! `sha256(object_root || domain)`. Nothing in it names a network or a message: whether a domain
//! may be signed this way at all is the API's decision (`crate::api::sign`), which this module
//! informs by naming the domain types the specs define ([`GenericRequest::defined_domain`]).

use serde::Deserialize;

use super::containers::Root;
use super::domain;
use super::request::parse;
use super::{ConsensusError, SigningRoot};

/// The body: the type, an optional supplied root (read by the first pass), and the data. The
/// profile's schema allows no other field.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Body {
    #[serde(rename = "type")]
    _kind: String,
    #[serde(default, rename = "signingRoot")]
    _signing_root_camel: Option<Root>,
    #[serde(default, rename = "signing_root")]
    _signing_root: Option<Root>,
    signing_data: SigningData,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SigningData {
    object_root: Root,
    domain: Root,
}

/// A parsed `GENERIC` request.
#[derive(Debug, Clone)]
pub struct GenericRequest {
    object_root: [u8; 32],
    domain: [u8; 32],
    supplied_root: Option<SigningRoot>,
}

impl GenericRequest {
    /// Parse a `GENERIC` body whose first pass found `supplied_root`.
    pub(super) fn from_json(
        body: &[u8],
        supplied_root: Option<SigningRoot>,
    ) -> Result<GenericRequest, ConsensusError> {
        let b: Body = parse(body)?;
        Ok(GenericRequest {
            object_root: b.signing_data.object_root.0,
            domain: b.signing_data.domain.0,
            supplied_root,
        })
    }

    /// `hash_tree_root(SigningData{object_root, domain})`.
    pub fn signing_root(&self) -> SigningRoot {
        domain::signing_root(self.object_root, self.domain)
    }

    /// The `signing_root` / `signingRoot` the client sent, if any.
    pub fn supplied_signing_root(&self) -> Option<SigningRoot> {
        self.supplied_root
    }

    /// The domain type: the domain's first 4 bytes.
    pub fn domain_type(&self) -> [u8; 4] {
        let [a, b, c, d, ..] = self.domain;
        [a, b, c, d]
    }

    /// The name of the domain type when the consensus specs, the builder specs or a typed
    /// request of this API define it; `None` for any other.
    pub fn defined_domain(&self) -> Option<&'static str> {
        domain::defined_name(self.domain_type())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    fn body(object_root: &str, domain: &str) -> Vec<u8> {
        format!(
            r#"{{"type":"GENERIC","signing_data":{{"object_root":"0x{object_root}","domain":"0x{domain}"}}}}"#
        )
        .into_bytes()
    }

    #[test]
    fn the_root_is_sha256_of_object_root_and_domain() {
        // The profile's test vector: both zero.
        let zero = "00".repeat(32);
        let g = GenericRequest::from_json(&body(&zero, &zero), None).unwrap();
        assert_eq!(
            g.signing_root().to_string(),
            "0xf5a5fd42d16a20302798ef6ed309979b43003d2320d9f0e8ea9831a92759fb4b"
        );
        let (object, dom) = ("ab".repeat(32), format!("10{}", "cd".repeat(31)));
        let g = GenericRequest::from_json(&body(&object, &dom), None).unwrap();
        let mut h = Sha256::new();
        h.update(hex::decode(&object).unwrap());
        h.update(hex::decode(&dom).unwrap());
        assert_eq!(g.signing_root().0, <[u8; 32]>::from(h.finalize()));
        assert_eq!(g.defined_domain(), None);
    }

    #[test]
    fn defined_domain_types_are_named() {
        let rest = "00".repeat(28);
        for (kind, name) in [
            ("00000000", Some("DOMAIN_BEACON_PROPOSER")),
            ("01000000", Some("DOMAIN_BEACON_ATTESTER")),
            ("0a000000", Some("DOMAIN_BLS_TO_EXECUTION_CHANGE")),
            ("0d000000", Some("DOMAIN_PROPOSER_PREFERENCES")),
            ("00000001", Some("DOMAIN_APPLICATION_BUILDER")),
            ("0b000001", Some("DOMAIN_BUILDER_REQUEST_AUTH")),
            ("0e000000", None),
            ("10000000", None),
            ("01000001", None),
        ] {
            let g =
                GenericRequest::from_json(&body(&"11".repeat(32), &format!("{kind}{rest}")), None)
                    .unwrap();
            assert_eq!(g.defined_domain(), name, "{kind}");
        }
    }

    #[test]
    fn malformed_bodies_are_refused() {
        let good = "00".repeat(32);
        for bad in [
            r#"{"type":"GENERIC"}"#.to_owned(),
            r#"{"type":"GENERIC","signing_data":{"object_root":"0x00"}}"#.to_owned(),
            format!(
                r#"{{"type":"GENERIC","signing_data":{{"object_root":"0x{good}","domain":"0x{good}","extra":1}}}}"#
            ),
            format!(
                r#"{{"type":"GENERIC","fork_info":{{}},"signing_data":{{"object_root":"0x{good}","domain":"0x{good}"}}}}"#
            ),
            format!(
                r#"{{"type":"GENERIC","signing_data":{{"object_root":"{good}","domain":"0x{good}"}}}}"#
            ),
        ] {
            let e = GenericRequest::from_json(bad.as_bytes(), None).unwrap_err();
            assert!(matches!(e, ConsensusError::Malformed(_)), "{bad}: {e}");
        }
    }
}
