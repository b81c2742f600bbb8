//! Fuzzes the sign-request parser and the signing-root computation: no input may panic, and a
//! parsed request's accessors and root must be computable, under every preset.
#![no_main]

use hsm_signer::consensus::{Network, Preset, SignRequest};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for preset in Preset::ALL {
        let Ok(request) = SignRequest::from_json(data, preset) else {
            continue;
        };
        let _ = request.message_type().as_str();
        let _ = request.supplied_signing_root();
        let _ = request.slashing_data();
        let _ = request.genesis_validators_root();
        let _ = request.duty_slot(32);
        let _ = request.duty_slot(u64::MAX);
        for name in ["mainnet", "hoodi"] {
            let mut network = Network::preset(name).expect("built-in network");
            network.preset = preset;
            network.slots_per_epoch = preset.slots_per_epoch();
            let _ = request.signing_root(&network);
            let _ = request.verified_signing_root(&network);
            network.slots_per_epoch = 0;
            let _ = request.signing_root(&network);
        }
    }
});
