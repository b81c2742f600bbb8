//! The signing policy: which client (a mutual-TLS certificate or a named bearer token) may ask
//! for which keys and message types (`GENERIC` among them, on the distributed endpoints), which keys may sign a `VOLUNTARY_EXIT` (none unless the
//! policy says so: an exit cannot be undone), and which fee recipients a
//! `VALIDATOR_REGISTRATION` may name. Built from `crate::config::PolicySettings`; the signing
//! handler consults it before slashing protection, the proof cache or the queue, so a refused
//! request is neither recorded nor signed. A refusal is a 403 naming its rule.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::auth::ApiToken;
use super::tls::{AllowList, ClientIdentity};
use crate::api::metrics::{Metrics, POLICY_RULES};
use crate::config::{Config, KeySetSpec, PolicySettings, TypesSpec};
use crate::consensus::{MessageType, RequestKind};
use crate::error::{Result, SignerError};
use crate::keys::PublicKeyBytes;

/// Largest file of public keys read for a key set (a million keys is ~100 MB of hex; this is
/// far above any real validator set and keeps a wrong path from filling memory).
const MAX_KEY_FILE_BYTES: u64 = 128 * 1024 * 1024;

/// The rule that refused a request (the `rule` of the 403 body and of the metric).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// The request names no client of the policy, or two different ones.
    Client,
    /// The client may not use this key.
    Key,
    /// The client may not request this message type.
    Type,
    /// Voluntary exits are not enabled for this key.
    Exit,
    /// The registration's fee recipient is not on the key's allow-list.
    FeeRecipient,
}

impl Rule {
    /// Every rule, in the order of [`POLICY_RULES`].
    pub const ALL: [Rule; 5] = [
        Rule::Client,
        Rule::Key,
        Rule::Type,
        Rule::Exit,
        Rule::FeeRecipient,
    ];

    fn index(self) -> usize {
        self as usize
    }

    /// Its label.
    pub fn label(self) -> &'static str {
        POLICY_RULES[self.index()]
    }
}

/// A refusal by the policy: 403 with `{"code": 403, "rule": …, "message": …}`.
#[derive(Debug)]
pub struct Refusal {
    /// The rule.
    pub rule: Rule,
    /// What was refused and why, naming the client, key, type or fee recipient.
    pub message: String,
}

impl Refusal {
    fn new(rule: Rule, message: String) -> Refusal {
        Refusal { rule, message }
    }

    /// Count it and log it, as the error of one key of a batch (403 with the message).
    pub(crate) fn counted(self, metrics: &Metrics) -> crate::api::ApiError {
        metrics.refused_by_policy[self.rule.index()]
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::warn!(rule = self.rule.label(), reason = %self.message, "refused by the signing policy");
        crate::api::ApiError {
            status: StatusCode::FORBIDDEN,
            message: format!("{} (rule {})", self.message, self.rule.label()),
        }
    }

    /// Count it, log it and answer it.
    pub fn answer(self, metrics: &Metrics) -> Response {
        metrics.refused_by_policy[self.rule.index()]
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::warn!(rule = self.rule.label(), reason = %self.message, "refused by the signing policy");
        self.into_response()
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let body = serde_json::json!({
            "code": StatusCode::FORBIDDEN.as_u16(),
            "rule": self.rule.label(),
            "message": format!(
                "refused by the signing policy (rule {}): {}; nothing was signed",
                self.rule.label(),
                self.message
            ),
        });
        (StatusCode::FORBIDDEN, axum::Json(body)).into_response()
    }
}

/// A set of keys: all, or these.
#[derive(Debug, Clone, PartialEq, Eq)]
enum KeySet {
    All,
    Only(HashSet<PublicKeyBytes>),
}

impl KeySet {
    fn contains(&self, key: &PublicKeyBytes) -> bool {
        match self {
            KeySet::All => true,
            KeySet::Only(keys) => keys.contains(key),
        }
    }

    fn build(spec: &KeySetSpec, base: &Path, what: &str) -> Result<KeySet> {
        let entries = match spec {
            KeySetSpec::Word(w) if w == "all" => return Ok(KeySet::All),
            KeySetSpec::Word(w) => {
                return Err(SignerError::Config(format!(
                    "{what}: {w:?} is neither \"all\" nor a list of keys"
                )))
            }
            KeySetSpec::List(entries) => entries,
        };
        let mut keys = HashSet::new();
        for entry in entries {
            match entry.strip_prefix("file:") {
                Some(file) => read_key_file(&base.join(file), what, &mut keys)?,
                None => {
                    keys.insert(parse_key(entry).ok_or_else(|| {
                        SignerError::Config(format!(
                            "{what}: {:?} is not a 0x-prefixed 48-byte public key or \
                             file:<path>",
                            short(entry)
                        ))
                    })?);
                }
            }
        }
        Ok(KeySet::Only(keys))
    }

    fn keys(&self) -> impl Iterator<Item = &PublicKeyBytes> {
        match self {
            KeySet::All => None,
            KeySet::Only(k) => Some(k.iter()),
        }
        .into_iter()
        .flatten()
    }
}

fn parse_key(s: &str) -> Option<PublicKeyBytes> {
    s.trim().strip_prefix("0x").and_then(PublicKeyBytes::parse)
}

/// At most a few dozen characters of operator input in an error.
fn short(s: &str) -> String {
    s.chars().take(40).collect()
}

fn read_key_file(path: &Path, what: &str, into: &mut HashSet<PublicKeyBytes>) -> Result<()> {
    let meta = std::fs::metadata(path).map_err(SignerError::io(path))?;
    if meta.len() > MAX_KEY_FILE_BYTES {
        return Err(SignerError::Config(format!(
            "{what}: key file {} is larger than {MAX_KEY_FILE_BYTES} bytes",
            path.display()
        )));
    }
    let text = std::fs::read_to_string(path).map_err(SignerError::io(path))?;
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        into.insert(parse_key(line).ok_or_else(|| {
            SignerError::Config(format!(
                "{what}: {}:{}: {:?} is not a 0x-prefixed 48-byte public key",
                path.display(),
                n + 1,
                short(line)
            ))
        })?);
    }
    Ok(())
}

fn parse_address(s: &str, what: &str) -> Result<[u8; 20]> {
    let mut out = [0u8; 20];
    s.trim()
        .strip_prefix("0x")
        .and_then(|h| hex::decode_to_slice(h, &mut out).ok())
        .ok_or_else(|| {
            SignerError::Config(format!(
                "{what}: {:?} is not a 0x-prefixed 20-byte address",
                short(s)
            ))
        })?;
    Ok(out)
}

fn addresses(list: &[String], what: &str) -> Result<HashSet<[u8; 20]>> {
    list.iter().map(|a| parse_address(a, what)).collect()
}

/// One client of the policy.
#[derive(Debug)]
pub struct ClientPolicy {
    /// Its name.
    pub name: String,
    tls: AllowList,
    token: Option<ApiToken>,
    keys: KeySet,
    /// Bit `i`: `MessageType::ALL[i]` allowed; bit `MessageType::ALL.len()`: `GENERIC`.
    types: u32,
}

impl ClientPolicy {
    /// Whether it may use `key`.
    pub(crate) fn may_use(&self, key: &PublicKeyBytes) -> bool {
        self.keys.contains(key)
    }

    fn may_request(&self, kind: RequestKind) -> bool {
        self.types & type_bit(kind) != 0
    }
}

fn type_bit(kind: RequestKind) -> u32 {
    let index = match kind {
        RequestKind::Typed(t) => MessageType::ALL.iter().position(|x| *x == t),
        RequestKind::Generic => Some(MessageType::ALL.len()),
    };
    index.map_or(0, |i| 1 << i)
}

/// Every kind a client may be allowed: the message types, and `GENERIC` (which only the
/// distributed endpoints accept).
fn all_kinds() -> impl Iterator<Item = RequestKind> {
    MessageType::ALL
        .into_iter()
        .map(RequestKind::Typed)
        .chain([RequestKind::Generic])
}

fn types(spec: &TypesSpec, what: &str) -> Result<u32> {
    match spec {
        TypesSpec::Word(w) if w == "all" => Ok(all_kinds().map(type_bit).sum()),
        TypesSpec::Word(w) => Err(SignerError::Config(format!(
            "{what}: {:?} is neither \"all\" nor a list of message types",
            short(w)
        ))),
        TypesSpec::List(names) => names.iter().try_fold(0, |acc, n| {
            let kind = RequestKind::from_wire(n).ok_or_else(|| {
                let known: Vec<_> = all_kinds().map(RequestKind::as_str).collect();
                SignerError::Config(format!(
                    "{what}: unknown message type {:?}; known: {}",
                    short(n),
                    known.join(", ")
                ))
            })?;
            Ok(acc | type_bit(kind))
        }),
    }
}

/// Who is asking, as far as the policy is concerned.
#[derive(Debug, Clone)]
pub enum Caller {
    /// The policy names no client: everyone may ask for every key and type.
    Anyone,
    /// This client.
    Client(Arc<ClientPolicy>),
}

impl Caller {
    /// Whether it may use `key` (the refusal names the client and the key).
    pub(crate) fn check_key(&self, key: &PublicKeyBytes) -> std::result::Result<(), Refusal> {
        match self {
            Caller::Client(c) if !c.may_use(key) => Err(Refusal::new(
                Rule::Key,
                format!("client {:?} may not use key {key}", c.name),
            )),
            _ => Ok(()),
        }
    }

    /// Whether it may see `key` in the public key list.
    pub(crate) fn may_use(&self, key: &PublicKeyBytes) -> bool {
        match self {
            Caller::Anyone => true,
            Caller::Client(c) => c.may_use(key),
        }
    }
}

/// What the bearer token of a request was.
#[derive(Debug, Clone)]
pub enum Presented {
    /// None.
    Nothing,
    /// The signer's API token (the admin token): not a signing client of a policy with clients.
    ApiToken,
    /// A client's token.
    Client(Arc<ClientPolicy>),
}

/// The signing policy, resolved.
#[derive(Debug)]
pub struct Policy {
    clients: Vec<Arc<ClientPolicy>>,
    exits: KeySet,
    fee_default: Option<HashSet<[u8; 20]>>,
    fee_by_key: HashMap<PublicKeyBytes, Arc<HashSet<[u8; 20]>>>,
}

impl Default for Policy {
    /// No policy file: no per-client restriction, any fee recipient, no voluntary exit.
    fn default() -> Policy {
        Policy {
            clients: Vec::new(),
            exits: KeySet::Only(HashSet::new()),
            fee_default: None,
            fee_by_key: HashMap::new(),
        }
    }
}

impl Policy {
    /// Check and resolve `config.policy`: read `file:` key lists, load (or create) client
    /// token files, and refuse what can never work or is ambiguous: an unknown message type, a
    /// malformed key or address, a client nothing identifies, two clients with one name, token or
    /// certificate entry, a client token equal to `api_token`, a certificate entry that mutual
    /// TLS does not let in. Keys the policy names that are not loaded are not an error: the key
    /// set changes while the signer runs (Keymanager imports, reloads).
    pub fn build(config: &Config, api_token: Option<&ApiToken>) -> Result<Policy> {
        let settings: &PolicySettings = &config.policy;
        let base = settings.base();
        let file = settings
            .source
            .as_ref()
            .map_or("signing policy".to_owned(), |p| {
                format!("signing policy {}", p.display())
            });
        let exits = KeySet::build(&settings.exit_keys, base, &format!("{file}: exit_keys"))?;
        let fee_default = settings
            .fee_recipients
            .as_deref()
            .map(|list| addresses(list, &format!("{file}: fee_recipients")))
            .transpose()?;
        let mut fee_by_key = HashMap::new();
        for (i, rule) in settings.key_fee_recipients.iter().enumerate() {
            let what = format!("{file}: key_fee_recipients[{i}]");
            let keys = match KeySet::build(&rule.keys, base, &what)? {
                KeySet::All => {
                    return Err(SignerError::Config(format!(
                        "{what}: keys = \"all\": use fee_recipients for every key"
                    )))
                }
                KeySet::Only(k) => k,
            };
            let allowed = Arc::new(addresses(&rule.allowed, &what)?);
            for key in keys {
                if fee_by_key.insert(key, allowed.clone()).is_some() {
                    return Err(SignerError::Config(format!(
                        "{what}: key {key} is in another key_fee_recipients entry too"
                    )));
                }
            }
        }
        let allowed_tls = AllowList::parse(&config.tls.allowed_clients)?;
        let mut clients: Vec<Arc<ClientPolicy>> = Vec::new();
        for c in &settings.clients {
            let what = format!("{file}: client {:?}", short(&c.name));
            if c.name.trim().is_empty() {
                return Err(SignerError::Config(format!("{file}: a client has no name")));
            }
            if clients.iter().any(|o| o.name == c.name) {
                return Err(SignerError::Config(format!("{what} is defined twice")));
            }
            if c.tls.is_empty() && c.token_file.is_none() {
                return Err(SignerError::Config(format!(
                    "{what}: nothing identifies it: give tls (certificate names) or token_file"
                )));
            }
            if !c.tls.is_empty() && config.tls.client_ca_file.is_none() {
                return Err(SignerError::Config(format!(
                    "{what}: tls needs mutual TLS ([tls] client_ca_file and allowed_clients)"
                )));
            }
            let tls = AllowList::parse(&c.tls)?;
            for entry in &c.tls {
                let one = AllowList::parse(std::slice::from_ref(entry))?;
                if !allowed_tls.contains_all(&one) {
                    return Err(SignerError::Config(format!(
                        "{what}: certificate {:?} is not in tls.allowed_clients, so it could \
                         never connect",
                        short(entry)
                    )));
                }
                if let Some(other) = clients.iter().find(|o| o.tls.contains_all(&one)) {
                    return Err(SignerError::Config(format!(
                        "{what}: certificate {:?} identifies client {:?} too",
                        short(entry),
                        other.name
                    )));
                }
            }
            let token = match &c.token_file {
                Some(f) => {
                    let (token, origin) = ApiToken::load_or_create(&base.join(f))?;
                    if origin == super::auth::TokenOrigin::Created {
                        tracing::info!(client = %c.name, file = %token.path().display(), "client token created");
                    }
                    if let Some(other) = clients
                        .iter()
                        .find(|o| o.token.as_ref().is_some_and(|t| t.same_secret_as(&token)))
                    {
                        return Err(SignerError::Config(format!(
                            "{what}: its token is client {:?}'s token too",
                            other.name
                        )));
                    }
                    if api_token.is_some_and(|t| t.same_secret_as(&token)) {
                        return Err(SignerError::Config(format!(
                            "{what}: its token is the API (admin) token; give it its own"
                        )));
                    }
                    Some(token)
                }
                None => None,
            };
            clients.push(Arc::new(ClientPolicy {
                name: c.name.clone(),
                tls,
                token,
                keys: KeySet::build(&c.keys, base, &format!("{what}: keys"))?,
                types: types(&c.types, &format!("{what}: types"))?,
            }));
        }
        Ok(Policy {
            clients,
            exits,
            fee_default,
            fee_by_key,
        })
    }

    /// Whether the policy names clients (then only they may sign).
    pub fn has_clients(&self) -> bool {
        !self.clients.is_empty()
    }

    /// Whether some client is identified by a bearer token.
    pub(crate) fn has_client_tokens(&self) -> bool {
        self.clients.iter().any(|c| c.token.is_some())
    }

    /// The client whose token `presented` is. Every client's token is compared, each in
    /// constant time, so the answer's timing says nothing about which one matched.
    pub(crate) fn token_client(&self, presented: &[u8]) -> Option<Arc<ClientPolicy>> {
        let mut found = None;
        for c in &self.clients {
            if c.token.as_ref().is_some_and(|t| t.matches(presented)) {
                found = Some(c.clone());
            }
        }
        found
    }

    /// Who is asking, from the bearer token and the client certificate. With no client in the
    /// policy, anyone; otherwise exactly one client must be named, by one or both.
    pub fn caller(
        &self,
        token: &Presented,
        cert: Option<&ClientIdentity>,
    ) -> std::result::Result<Caller, Refusal> {
        if self.clients.is_empty() {
            return Ok(Caller::Anyone);
        }
        let by_cert: Vec<&Arc<ClientPolicy>> = match cert {
            Some(id) => self.clients.iter().filter(|c| c.tls.allows(id)).collect(),
            None => Vec::new(),
        };
        if by_cert.len() > 1 {
            let names: Vec<&str> = by_cert.iter().map(|c| c.name.as_str()).collect();
            return Err(Refusal::new(
                Rule::Client,
                format!("the client certificate names several clients: {names:?}"),
            ));
        }
        match (token, by_cert.first()) {
            (Presented::Client(t), Some(c)) if !Arc::ptr_eq(t, c) => Err(Refusal::new(
                Rule::Client,
                format!(
                    "the bearer token is client {:?}'s, the certificate client {:?}'s",
                    t.name, c.name
                ),
            )),
            (Presented::Client(t), _) => Ok(Caller::Client(t.clone())),
            (_, Some(c)) => Ok(Caller::Client((*c).clone())),
            (Presented::ApiToken, None) => Err(Refusal::new(
                Rule::Client,
                "the API token is not a signing client of the policy; give the validator client \
                 a [[client]] of its own"
                    .into(),
            )),
            (Presented::Nothing, None) => Err(Refusal::new(
                Rule::Client,
                "the request names no client of the policy (no client token, no client \
                 certificate it lists)"
                    .into(),
            )),
        }
    }

    /// Whether `caller` may have `key` sign a message of `kind` (with `fee_recipient`, for a
    /// registration): the type rule, then the exit rule, then the fee recipient rule.
    pub(crate) fn check_message(
        &self,
        caller: &Caller,
        key: &PublicKeyBytes,
        kind: RequestKind,
        fee_recipient: Option<[u8; 20]>,
    ) -> std::result::Result<(), Refusal> {
        if let Caller::Client(c) = caller {
            if !c.may_request(kind) {
                return Err(Refusal::new(
                    Rule::Type,
                    format!("client {:?} may not request {kind}", c.name),
                ));
            }
        }
        if kind == RequestKind::Typed(MessageType::VoluntaryExit) && !self.exits.contains(key) {
            return Err(Refusal::new(
                Rule::Exit,
                format!(
                    "voluntary exits are not enabled for key {key} (exit_keys); an exit cannot \
                     be undone"
                ),
            ));
        }
        if let Some(recipient) = fee_recipient {
            let allowed = self
                .fee_by_key
                .get(key)
                .map(|a| a.as_ref())
                .or(self.fee_default.as_ref());
            if allowed.is_some_and(|a| !a.contains(&recipient)) {
                return Err(Refusal::new(
                    Rule::FeeRecipient,
                    format!(
                        "fee recipient 0x{} is not on the allow-list of key {key}",
                        hex::encode(recipient)
                    ),
                ));
            }
        }
        Ok(())
    }

    /// How many keys the policy names that `loaded` does not hold (for a warning at start).
    pub(crate) fn keys_not_loaded(&self, loaded: &HashSet<PublicKeyBytes>) -> usize {
        let mut named: HashSet<&PublicKeyBytes> = self.exits.keys().collect();
        named.extend(self.fee_by_key.keys());
        for c in &self.clients {
            named.extend(c.keys.keys());
        }
        named.iter().filter(|k| !loaded.contains(k)).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_label_as_the_metric_does() {
        for (rule, label) in Rule::ALL.iter().zip(POLICY_RULES) {
            assert_eq!(rule.label(), label);
        }
    }

    #[test]
    fn key_sets_read_keys_files_and_refuse_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let a = format!("0x{}", "aa".repeat(48));
        let b = format!("0x{}", "bb".repeat(48));
        std::fs::write(
            dir.path().join("keys.txt"),
            format!("# pool b\n{b}  # one\n\n"),
        )
        .unwrap();
        let set = KeySet::build(
            &KeySetSpec::List(vec![a.clone(), "file:keys.txt".into()]),
            dir.path(),
            "t",
        )
        .unwrap();
        assert!(set.contains(&parse_key(&a).unwrap()) && set.contains(&parse_key(&b).unwrap()));
        assert!(!set.contains(&PublicKeyBytes([0xcc; 48])));
        assert_eq!(
            KeySet::build(&KeySetSpec::Word("all".into()), dir.path(), "t").unwrap(),
            KeySet::All
        );
        for bad in [
            KeySetSpec::Word("everything".into()),
            KeySetSpec::List(vec!["aa".repeat(48)]),
            KeySetSpec::List(vec!["0x1234".into()]),
            KeySetSpec::List(vec!["file:missing.txt".into()]),
        ] {
            assert!(KeySet::build(&bad, dir.path(), "t").is_err(), "{bad:?}");
        }
        std::fs::write(dir.path().join("bad.txt"), format!("{a}\nnot-a-key\n")).unwrap();
        let err = KeySet::build(
            &KeySetSpec::List(vec!["file:bad.txt".into()]),
            dir.path(),
            "t",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("bad.txt:2"), "{err}");
    }

    #[test]
    fn message_types_parse_by_wire_name() {
        let bits = types(
            &TypesSpec::List(vec!["BLOCK_V2".into(), "ATTESTATION".into()]),
            "t",
        )
        .unwrap();
        assert_eq!(
            bits,
            type_bit(MessageType::BlockV2.into()) | type_bit(MessageType::Attestation.into())
        );
        assert!(types(&TypesSpec::List(vec!["block_v2".into()]), "t").is_err());
        assert!(types(&TypesSpec::Word("some".into()), "t").is_err());
        // "all" is every message type and GENERIC.
        assert_eq!(
            types(&TypesSpec::default(), "t").unwrap().count_ones() as usize,
            MessageType::ALL.len() + 1
        );
        assert_eq!(
            types(&TypesSpec::List(vec!["GENERIC".into()]), "t").unwrap(),
            type_bit(RequestKind::Generic)
        );
    }

    fn client(name: &str, tls: &[&str], token: Option<ApiToken>) -> Arc<ClientPolicy> {
        Arc::new(ClientPolicy {
            name: name.into(),
            tls: AllowList::parse(&tls.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap(),
            token,
            keys: KeySet::All,
            types: types(&TypesSpec::default(), "t").unwrap(),
        })
    }

    fn cert(names: &[&str]) -> ClientIdentity {
        ClientIdentity {
            sha256: [7; 32],
            common_names: names.iter().map(|s| s.to_string()).collect(),
            dns_names: Vec::new(),
        }
    }

    #[test]
    fn a_caller_is_exactly_one_client_named_by_token_certificate_or_both() {
        let dir = tempfile::tempdir().unwrap();
        let (token, _) = ApiToken::load_or_create(&dir.path().join("t")).unwrap();
        let secret = std::fs::read_to_string(dir.path().join("t")).unwrap();
        let a = client("a", &["vc-a"], Some(token));
        let b = client("b", &["vc-b"], None);
        let policy = Policy {
            clients: vec![a.clone(), b.clone()],
            ..Policy::default()
        };
        let name = |r: std::result::Result<Caller, Refusal>| match r {
            Ok(Caller::Client(c)) => Ok(c.name.clone()),
            Ok(Caller::Anyone) => Ok("anyone".into()),
            Err(refusal) => {
                assert_eq!(refusal.rule, Rule::Client);
                Err(refusal.message)
            }
        };
        let by_token = policy.token_client(secret.trim().as_bytes()).unwrap();
        assert_eq!(by_token.name, "a");
        assert!(policy.token_client(b"api-token-00").is_none());
        let token = Presented::Client(by_token);
        let cases: Vec<(
            &Presented,
            Option<ClientIdentity>,
            std::result::Result<&str, &str>,
        )> = vec![
            (&token, None, Ok("a")),
            (&Presented::Nothing, Some(cert(&["vc-b"])), Ok("b")),
            (&token, Some(cert(&["vc-a"])), Ok("a")),
            (
                &token,
                Some(cert(&["vc-b"])),
                Err("the bearer token is client \"a\"'s"),
            ),
            (
                &Presented::Nothing,
                Some(cert(&["vc-a", "vc-b"])),
                Err("names several clients"),
            ),
            (
                &Presented::ApiToken,
                None,
                Err("the API token is not a signing client"),
            ),
            (
                &Presented::Nothing,
                Some(cert(&["vc-c"])),
                Err("names no client"),
            ),
            (&Presented::Nothing, None, Err("names no client")),
        ];
        for (presented, id, expected) in cases {
            let got = name(policy.caller(presented, id.as_ref()));
            match (&got, expected) {
                (Ok(n), Ok(e)) => assert_eq!(n, e),
                (Err(m), Err(e)) => assert!(m.contains(e), "{m}"),
                _ => panic!("{presented:?} {id:?}: {got:?}, expected {expected:?}"),
            }
        }
        // Without clients, anyone.
        assert!(matches!(
            Policy::default().caller(&Presented::Nothing, None),
            Ok(Caller::Anyone)
        ));
    }

    #[test]
    fn default_policy_refuses_exits_only() {
        let p = Policy::default();
        let key = PublicKeyBytes([1; 48]);
        for kind in all_kinds() {
            let r = p.check_message(&Caller::Anyone, &key, kind, Some([9; 20]));
            assert_eq!(
                r.as_ref().err().map(|r| r.rule),
                (kind == RequestKind::Typed(MessageType::VoluntaryExit)).then_some(Rule::Exit),
                "{kind}"
            );
        }
    }
}
