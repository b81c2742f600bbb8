//! Fuzzes the sign-request parser and the signing-root computation: no input may panic, and a
//! parsed request's accessors and root must be computable.
#![no_main]

use hsm_signer::consensus::{Network, SignRequest};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(request) = SignRequest::from_json(data) else {
        return;
    };
    let _ = request.message_type().as_str();
    let _ = request.supplied_signing_root();
    let _ = request.slashing_data();
    let _ = request.genesis_validators_root();
    let _ = request.duty_slot(32);
    let _ = request.duty_slot(u64::MAX);
    for network in ["mainnet", "hoodi"].into_iter().filter_map(Network::preset) {
        let _ = request.signing_root(&network);
        let _ = request.verified_signing_root(&network);
    }
    let mut odd = Network::preset("mainnet").expect("built-in network");
    odd.slots_per_epoch = 0;
    let _ = request.signing_root(&odd);
});
