//! Fuzzes the sign-request parser, the signing-root computation and the validity window under
//! every preset: no input may panic, and a parsed request's accessors, root and window must be
//! computable.
#![no_main]

use std::time::Duration;

use hsm_signer::consensus::{
    validity, ManualSlotClock, Network, Preset, SignRequest, SlotTiming,
};
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
        let clock = ManualSlotClock::new(SlotTiming::from_secs(1_606_824_023, 12));
        for spe in [32, 8, 0, u64::MAX] {
            let window = request.validity_window(spe);
            for now in [Duration::ZERO, Duration::from_secs(1_700_000_000), Duration::MAX] {
                clock.set_current_time(now);
                let _ = validity::check(request.message_type(), window, &clock);
            }
        }
        for name in ["mainnet", "hoodi"] {
            let mut network = Network::preset(name).expect("built-in network");
            network.preset = preset;
            network.slots_per_epoch = preset.slots_per_epoch();
            let _ = request.check_network(&network);
            let _ = request.signing_root(&network);
            let _ = request.verified_signing_root(&network);
            network.slots_per_epoch = 0;
            let _ = request.signing_root(&network);
        }
    }
});
